"""transcribe()'s options, checked before any audio is read: the window decode options at each fallback
temperature, the thresholds, the clips. Each problem is an OptionError naming the option (the CLI makes the
same checks before loading a model)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from ..decoding import DecodingOptions, OptionError, check_options, verify_options
from ..decoding.options import check_number

if TYPE_CHECKING:
    from ..model import Whisper


def options_at(options: DecodingOptions, temperature: float) -> DecodingOptions:
    """The options for one try: beam search only at T = 0, best-of only when sampling (as the reference)."""
    if temperature > 0:
        return replace(options, temperature=temperature, beam_size=None, patience=None)
    return replace(options, temperature=temperature, best_of=None)


def clip_seconds(clip_timestamps: str | Sequence[float]) -> list[float]:
    """``"start,end,start,end,..."`` seconds (or a list) as numbers: finite, >= 0, each start before its end."""
    items = clip_timestamps.split(",") if isinstance(clip_timestamps, str) else list(clip_timestamps)
    if isinstance(clip_timestamps, str) and not clip_timestamps.strip():
        items = []
    points = []
    for item in items:
        try:
            points.append(float(item))
        except (TypeError, ValueError):
            raise OptionError(
                "clip_timestamps", f"expected comma-separated seconds start,end,start,end,...; got {item!r}"
            ) from None
        check_number("clip_timestamps", points[-1], low=0)
    for start, end in zip(points[::2], points[1::2]):
        if end <= start:
            raise OptionError("clip_timestamps", f"a clip ends ({end:g} s) before it starts ({start:g} s)")
    return points


def check_transcribe_options(
    decode_options: dict,
    temperatures: Sequence[float],
    compression_ratio_threshold: float | None = None,
    logprob_threshold: float | None = None,
    no_speech_threshold: float | None = None,
    hallucination_silence_threshold: float | None = None,
    repeat_no_speech_threshold: float | None = None,
    clip_timestamps: str | Sequence[float] = "0",
    *,
    model: Whisper | None = None,
) -> DecodingOptions:
    """Every option of transcribe(), against `model` too when given (its vocabulary, its languages); returns
    the window DecodingOptions."""
    if len(temperatures) == 0:
        raise OptionError("temperature", "at least one temperature is needed")
    for t in temperatures:
        check_number("temperature", t, low=0)
    check_number("compression_ratio_threshold", compression_ratio_threshold, low=0, above=True)
    check_number("logprob_threshold", logprob_threshold)
    check_number("no_speech_threshold", no_speech_threshold, low=0, high=1)
    check_number("hallucination_silence_threshold", hallucination_silence_threshold, low=0, above=True)
    check_number("repeat_no_speech_threshold", repeat_no_speech_threshold, low=0, high=1)
    clip_seconds(clip_timestamps)
    options = DecodingOptions(**decode_options)  # TypeError for a keyword that is no option
    for t in temperatures:
        if model is None:
            check_options(options_at(options, float(t)))
        else:
            verify_options(options_at(options, float(t)), model)
    return options


def english_only(language: str | None, model, name: str = "the model") -> str | None:
    """The language to ask of ``model`` (called ``name`` in the warning): an English-only model transcribes
    English, so any language asked of it becomes "en" (with a warning when it was not English), as
    openai-whisper's command does."""
    if language is None or model.is_multilingual:
        return language
    if language.lower() not in ("en", "english"):
        warnings.warn(f"{name} is English-only; transcribing as English, not {language!r}", stacklevel=3)
    return "en"
