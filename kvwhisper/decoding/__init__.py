"""Decoding one 30-second window: options, the KV-cached loop, logits processors and token choosers.

Names follow openai-whisper's `whisper.decoding` (`DecodingOptions`, `DecodingResult`, `DecodingTask`,
`decode`, `detect_language`, the logit filters, token decoders and rankers); its hook-based `Inference` /
`PyTorchInference` have no counterpart: the decode loop owns an explicit KV cache (`DecoderRunner`).
"""

from ..tokenizer import Tokenizer, get_tokenizer
from .choosers import (
    BeamSearchChooser,
    BeamSearchDecoder,
    GreedyChooser,
    GreedyDecoder,
    MaximumLikelihoodRanker,
    SequenceRanker,
    TokenDecoder,
    rank_candidates,
)
from .language import detect_language
from .logits import ApplyTimestampRules, LogitFilter, LogitsProcessor, SuppressBlank, SuppressTokens
from .loop import DecoderRunner, DecodeState, DecodingTask, StepOutput, decode
from .options import (
    DecodingOptions,
    DecodingResult,
    OptionError,
    check_options,
    compression_ratio,
    task_tokenizer,
    verify_options,
)

__all__ = [
    "ApplyTimestampRules",
    "BeamSearchChooser",
    "BeamSearchDecoder",
    "DecodeState",
    "DecoderRunner",
    "DecodingOptions",
    "DecodingResult",
    "DecodingTask",
    "GreedyChooser",
    "GreedyDecoder",
    "LogitFilter",
    "LogitsProcessor",
    "MaximumLikelihoodRanker",
    "OptionError",
    "SequenceRanker",
    "StepOutput",
    "SuppressBlank",
    "SuppressTokens",
    "TokenDecoder",
    "Tokenizer",
    "check_options",
    "compression_ratio",
    "decode",
    "detect_language",
    "get_tokenizer",
    "rank_candidates",
    "task_tokenizer",
    "verify_options",
]
