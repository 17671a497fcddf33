"""One window decoded until acceptable: temperature fallback, and decodes asked for rather than run.

`fallback_decodes` is written as a generator of `WindowRequest`s: it yields each decode it needs and is sent
the result, so the same code runs a window alone (`run_alone`, `decode_with_fallback`) or with other
recordings' windows through one decoder (transcribe/batched.py).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..decoding import DecodingOptions, DecodingResult
from .checks import options_at

if TYPE_CHECKING:
    from ..model import Whisper

DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class FallbackPolicy:
    """When a window's decode is retried at the next temperature, and when a window counts as silence."""

    temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6

    def __post_init__(self) -> None:
        if len(self.temperatures) == 0:
            raise ValueError("temperature: at least one temperature is needed")
        if any(t < 0 for t in self.temperatures):
            raise ValueError(f"temperatures must be >= 0, got {self.temperatures}")

    def _low_logprob(self, result: DecodingResult) -> bool:
        return self.logprob_threshold is not None and result.avg_logprob < self.logprob_threshold

    def needs_fallback(self, result: DecodingResult) -> bool:
        """Too repetitive or too improbable, and not a silent window (which no temperature would fix)."""
        too_repetitive = (
            self.compression_ratio_threshold is not None
            and result.compression_ratio > self.compression_ratio_threshold
        )
        silent = (
            self.no_speech_threshold is not None
            and result.no_speech_prob > self.no_speech_threshold
            and self._low_logprob(result)
        )
        return (too_repetitive or self._low_logprob(result)) and not silent

    def is_silence(self, result: DecodingResult) -> bool:
        """No-speech probability above the threshold, unless the text is probable enough anyway."""
        if self.no_speech_threshold is None or result.no_speech_prob <= self.no_speech_threshold:
            return False
        return not (self.logprob_threshold is not None and result.avg_logprob > self.logprob_threshold)


@dataclass(frozen=True)
class WindowRequest:
    """What a seek loop asks for: `source` (a window's mel (n_mels, 3000), or its audio features
    (n_audio_ctx, C) when a fallback decodes it again) decoded with `options`, samples drawn from `generator`."""

    source: torch.Tensor
    options: DecodingOptions
    generator: torch.Generator | None = None


def decode_request(model: Whisper, request: WindowRequest) -> DecodingResult:
    """A request decoded alone, through the model's `decode` (as the reference's seek loop decodes)."""
    return model.decode(request.source, request.options, generator=request.generator)


def fallback_decodes(
    mel: torch.Tensor,
    options: DecodingOptions,
    policy: FallbackPolicy,
    generator: torch.Generator | None = None,
) -> Generator[WindowRequest, DecodingResult, DecodingResult]:
    """Decode one window (n_mels, N_FRAMES) at each of the policy's temperatures until one is acceptable: a
    generator that yields each decode it needs as a `WindowRequest`, is sent its result, and returns the
    accepted one (run alone by `decode_with_fallback`, with other windows by transcribe/batched.py).

    The encoder runs once: later temperatures decode the first result's audio features (the reference
    encodes the same window again for every temperature; the features are the same).
    """
    result = None
    source = mel
    for t in policy.temperatures:
        result = yield WindowRequest(source, options_at(options, float(t)), generator)
        if not policy.needs_fallback(result):
            break
        if result.audio_features is not None:
            source = result.audio_features
    return result


def run_alone(model: Whisper, requests: Generator[WindowRequest, DecodingResult, Any]) -> Any:
    """Drive a generator of window requests, decoding each alone; returns what the generator returns."""
    try:
        request = next(requests)
        while True:
            request = requests.send(decode_request(model, request))
    except StopIteration as stop:
        return stop.value


def decode_with_fallback(
    model: Whisper,
    mel: torch.Tensor,
    options: DecodingOptions,
    policy: FallbackPolicy,
    generator: torch.Generator | None = None,
) -> DecodingResult:
    """`fallback_decodes` run alone: the accepted decode of one window."""
    return run_alone(model, fallback_decodes(mel, options, policy, generator))
