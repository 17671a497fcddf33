"""Decoding options and results: the one frozen options dataclass, the one place that checks it, the result
of a window, and the tokenizer a (language, task) pair selects."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

from ..model.kv_cache import CACHE_MODES
from ..tokenizer.languages import normalize_language

if TYPE_CHECKING:
    from ..model import Whisper
    from ..tokenizer import Tokenizer

TASKS = ("transcribe", "translate", "lang_id")


@dataclass(frozen=True)
class DecodingOptions:
    # "transcribe" (X -> X) or "translate" (X -> English); "lang_id" only detects the language
    task: str = "transcribe"
    # language spoken in the audio; detected from the first window when None (multilingual models)
    language: str | None = None
    # 0 = greedy; > 0 samples from softmax(logits / temperature)
    temperature: float = 0.0
    # maximum number of tokens to sample (default: half the decoder context, 224)
    sample_len: int | None = None
    # independent samples to draw when temperature > 0; the best one (by ranking) is returned
    best_of: int | None = None
    # beams in beam search (temperature 0)
    beam_size: int | None = None
    # beam search patience (arxiv:2204.05424): stop after round(beam_size * patience) finished candidates
    patience: float | None = None
    # ranking of finished candidates: None = log-prob / length; alpha in [0, 1] = Google NMT length penalty
    length_penalty: float | None = None
    # previous context, fed after <|startofprev|> (text or token ids; the last 223 tokens are kept)
    prompt: str | list[int] | None = None
    # forced beginning of the current transcript (text or token ids)
    prefix: str | list[int] | None = None
    # token ids to suppress ("-1" = the non-speech symbols), as a comma-separated string or a list
    suppress_tokens: str | list[int] | None = "-1"
    # forbid a blank or end-of-text as the first sampled token
    suppress_blank: bool = True
    # decode text only, with <|notimestamps|>
    without_timestamps: bool = False
    # the first timestamp is at most this many seconds into the window
    max_initial_timestamp: float | None = 1.0
    # accepted for compatibility with openai-whisper: precision is the model's dtype, chosen at load_model
    fp16: bool = True
    # "full" (default), "self_only" (cross K/V recomputed each step) or "none" (everything recomputed)
    kv_cache: str = "full"
    # torch.compile the one-token decoder step (full cache only; see compiled.py); the eager step is the reference
    compile: bool = False


@dataclass(frozen=True)
class DecodingResult:
    audio_features: Tensor  # (n_audio_ctx, n_audio_state) of this window
    language: str
    language_probs: dict[str, float] | None = None
    tokens: list[int] = field(default_factory=list)  # sampled tokens, without the initial tokens and eot
    text: str = ""
    avg_logprob: float = np.nan  # sum of log-probs / (tokens + 1)
    no_speech_prob: float = np.nan  # P(<|nospeech|>) at <|startoftranscript|>
    temperature: float = np.nan
    compression_ratio: float = np.nan  # of the text under zlib; high values mean repetition

    def to_dict(self) -> dict:
        return {
            "language": self.language,
            "language_probs": self.language_probs,
            "tokens": list(self.tokens),
            "text": self.text,
            "avg_logprob": self.avg_logprob,
            "no_speech_prob": self.no_speech_prob,
            "temperature": self.temperature,
            "compression_ratio": self.compression_ratio,
        }


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))


def verify_options(options: DecodingOptions, model: Whisper) -> DecodingOptions:
    """The one place options are checked; a ValueError says what is wrong."""
    if options.task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, not {options.task!r}")
    if options.kv_cache not in CACHE_MODES:
        raise ValueError(f"kv_cache must be one of {CACHE_MODES}, not {options.kv_cache!r}")
    if options.temperature < 0:
        raise ValueError("temperature must be >= 0")
    if options.beam_size is not None and options.best_of is not None:
        raise ValueError("beam_size and best_of can't be given together")
    if options.temperature == 0 and options.best_of is not None:
        raise ValueError("best_of with greedy sampling (T=0) is not compatible")
    if (
        options.beam_size is not None
        and options.beam_size < 1
        or options.best_of is not None
        and options.best_of < 1
    ):
        raise ValueError("beam_size and best_of must be >= 1")
    if options.patience is not None and options.beam_size is None:
        raise ValueError("patience requires beam_size to be given")
    if options.length_penalty is not None and not 0 <= options.length_penalty <= 1:
        raise ValueError("length_penalty (alpha) should be a value between 0 and 1")
    if options.sample_len is not None and not 1 <= options.sample_len <= model.dims.n_text_ctx:
        raise ValueError(f"sample_len must be in 1..{model.dims.n_text_ctx}")
    if options.language is not None:
        code = normalize_language(
            options.language
        )  # a code or an English name; TokenizerError (a ValueError)
        if model.is_multilingual and code not in model.tokenizer.all_language_codes:
            raise ValueError(f"language {options.language!r} is not one of this model's languages")
        options = replace(options, language=code)
    return options


def task_tokenizer(model: Whisper, language: str | None, task: str) -> Tokenizer:
    """The model's tokenizer set for (language, task); English-only models have neither."""
    if not model.is_multilingual:
        return model.tokenizer
    return model.tokenizer.with_options(
        language=language or "en", task="transcribe" if task == "lang_id" else task
    )
