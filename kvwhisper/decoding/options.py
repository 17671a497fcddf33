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


class OptionError(ValueError):
    """A bad option value: `option` is the option's name (a DecodingOptions or transcribe() keyword), `reason`
    what is wrong with it; str() is ``"option: reason"``. The CLI reports it as ``--option-name: reason``."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option, self.reason = option, reason


def _number(option: str, value, *, low: float | None = None, high: float | None = None, above: bool = False):
    """`value` a finite number within [low, high] (above: strictly greater than low), else an OptionError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise OptionError(option, f"must be a number, not {value!r}")
    if not np.isfinite(value):
        raise OptionError(option, f"must be a finite number, not {value}")
    ok_low = low is None or (value > low if above else value >= low)
    if ok_low and (high is None or value <= high):
        return
    if low is not None and high is not None:
        raise OptionError(option, f"must be between {low:g} and {high:g}, not {value:g}")
    if not ok_low:
        raise OptionError(option, f"must be {'>' if above else '>='} {low:g}, not {value:g}")
    raise OptionError(option, f"must be <= {high:g}, not {value:g}")


def check_count(option: str, value, low: int = 1) -> None:
    """`value` None or an integer >= low."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise OptionError(option, f"must be an integer, not {value!r}")
    if value < low:
        raise OptionError(option, f"must be >= {low}, not {value}")


def check_number(option: str, value, **limits) -> None:
    """`value` None or a finite number within the limits (low=, high=, above=True for a strict low)."""
    if value is not None:
        _number(option, value, **limits)


def suppress_token_ids(value: str | list[int] | None) -> list[int]:
    """`suppress_tokens` as a list of ids: "-1,5,7" or [-1, 5, 7]; -1 stands for the non-speech symbols."""
    if value is None:
        return []
    items = [t.strip() for t in value.split(",") if t.strip()] if isinstance(value, str) else list(value)
    ids = []
    for item in items:
        try:
            ids.append(int(item) if not isinstance(item, float) or item.is_integer() else None)
        except (TypeError, ValueError):
            ids.append(None)
        if ids[-1] is None or ids[-1] < -1:
            raise OptionError(
                "suppress_tokens",
                f"expected comma-separated token ids (-1: non-speech symbols), got {item!r}",
            )
    return ids


def check_fields(options: DecodingOptions) -> None:
    """Each field on its own (no model needed): the checks a command line can make before loading anything.
    Raises OptionError naming the field."""
    if options.task not in TASKS:
        raise OptionError("task", f"must be one of {', '.join(TASKS)}, not {options.task!r}")
    if options.kv_cache not in CACHE_MODES:
        raise OptionError("kv_cache", f"must be one of {', '.join(CACHE_MODES)}, not {options.kv_cache!r}")
    _number("temperature", options.temperature, low=0)
    check_count("sample_len", options.sample_len)
    check_count("best_of", options.best_of)
    check_count("beam_size", options.beam_size)
    check_number("patience", options.patience, low=0, above=True)
    check_number("length_penalty", options.length_penalty, low=0, high=1)
    check_number("max_initial_timestamp", options.max_initial_timestamp, low=0)
    suppress_token_ids(options.suppress_tokens)
    if options.language is not None:
        try:
            normalize_language(options.language)  # a code or an English name
        except ValueError as e:
            raise OptionError("language", str(e)) from None


def check_options(options: DecodingOptions) -> None:
    """Each field, then the fields together: everything that needs no model."""
    check_fields(options)
    if options.beam_size is not None and options.best_of is not None:
        raise OptionError("best_of", "can't be given together with beam_size")
    if options.temperature == 0 and options.best_of is not None:
        raise OptionError("best_of", "not compatible with greedy decoding (temperature 0)")
    if options.patience is not None and options.beam_size is None:
        raise OptionError("patience", "requires beam_size")


def verify_options(options: DecodingOptions, model: Whisper) -> DecodingOptions:
    """The one place options are checked (each field, the fields together, then against the model); an
    OptionError (a ValueError) says which option is wrong and why. Returns them with the language as a code."""
    check_options(options)
    if options.sample_len is not None and options.sample_len > model.dims.n_text_ctx:
        raise OptionError("sample_len", f"must be in 1..{model.dims.n_text_ctx}, not {options.sample_len}")
    n_vocab = model.dims.n_vocab
    if any(t >= n_vocab for t in suppress_token_ids(options.suppress_tokens)):
        raise OptionError("suppress_tokens", f"token ids must be < {n_vocab} (this model's vocabulary)")
    if options.language is not None:
        code = normalize_language(options.language)
        if model.is_multilingual and code not in model.tokenizer.all_language_codes:
            raise OptionError("language", f"{options.language!r} is not one of this model's languages")
        options = replace(options, language=code)
    return options


def task_tokenizer(model: Whisper, language: str | None, task: str) -> Tokenizer:
    """The model's tokenizer set for (language, task); English-only models have neither."""
    if not model.is_multilingual:
        return model.tokenizer
    return model.tokenizer.with_options(
        language=language or "en", task="transcribe" if task == "lang_id" else task
    )
