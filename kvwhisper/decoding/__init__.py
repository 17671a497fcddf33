"""Decoding one 30-second window: options, the KV-cached loop, logits processors and token choosers.

Names follow openai-whisper's `whisper.decoding` (`DecodingOptions`, `DecodingResult`, `DecodingTask`,
`decode`, `detect_language`, the logits filters and token decoders).
"""

from .choosers import BeamSearchChooser, GreedyChooser, rank_candidates
from .language import detect_language
from .logits import ApplyTimestampRules, LogitsProcessor, SuppressBlank, SuppressTokens
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
    "DecodeState",
    "DecoderRunner",
    "DecodingOptions",
    "DecodingResult",
    "DecodingTask",
    "GreedyChooser",
    "LogitsProcessor",
    "OptionError",
    "StepOutput",
    "SuppressBlank",
    "SuppressTokens",
    "check_options",
    "compression_ratio",
    "decode",
    "detect_language",
    "rank_candidates",
    "task_tokenizer",
    "verify_options",
]
