"""`kvwhisper bench`'s timed pieces: the 30-second windows of a file, the options of a forced decode (every
step to `sample_len`) and of a natural one, and a decode, an encoder pass or a whole `decode` timed."""

from __future__ import annotations

import time
from dataclasses import dataclass

from . import CLIError
from .bench_breakdown import _sync, timed_start

WINDOW_SECONDS = 30


def load_windows(path: str, n: int, offset: float = 0.0):
    """The first `n` 30 s windows of a file from `offset` seconds: log-mel (80|128, 3000) each, on the CPU.

    A window must hold at least 5 s of audio (the last one is zero-padded to 30 s).
    """
    from ..audio import SAMPLE_RATE, load_audio, log_mel_spectrogram, pad_or_trim

    audio = load_audio(path)
    windows = []
    for i in range(n):
        start = int((offset + i * WINDOW_SECONDS) * SAMPLE_RATE)
        piece = audio[start : start + WINDOW_SECONDS * SAMPLE_RATE]
        if len(piece) < 5 * SAMPLE_RATE:
            raise CLIError(
                f"{path}: {len(audio) / SAMPLE_RATE:.1f} s of audio holds fewer than {n} window(s) from "
                f"{offset:g} s"
            )
        windows.append(
            {
                "index": i,
                "start_s": start / SAMPLE_RATE,
                "audio_s": len(piece) / SAMPLE_RATE,
                "mel": log_mel_spectrogram(pad_or_trim(piece)),
            }
        )
    return windows


def forced_options(model, mode: str, beam_size: int, sample_len: int, language: str | None):
    """Options that decode exactly `sample_len` steps: end-of-text suppressed, no timestamps."""
    from ..decoding import DecodingOptions

    eot = model.tokenizer.eot
    return DecodingOptions(
        language=language if model.is_multilingual else None,
        kv_cache=mode,
        beam_size=beam_size if beam_size > 1 else None,
        without_timestamps=True,
        sample_len=sample_len,
        suppress_tokens=f"-1,{eot}",
    )


def natural_options(model, mode: str, beam_size: int, language: str | None):
    """Options of an ordinary decode (timestamps on, stop at end-of-text), as long-form transcription uses."""
    from ..decoding import DecodingOptions

    return DecodingOptions(
        language=language if model.is_multilingual else None,
        kv_cache=mode,
        beam_size=beam_size if beam_size > 1 else None,
    )


@dataclass
class StepTimes:
    start_s: float  # DecodingTask.start: cache allocation (+ cross K/V for "full")
    steps_s: list[float]  # one per step
    prefix: int  # initial tokens fed at the first step

    def cumulative(self, n: int) -> float | None:
        """Seconds from the start of the decode (after the encoder) until `n` tokens are generated."""
        if n > len(self.steps_s):
            return None
        return self.start_s + sum(self.steps_s[:n])


def time_steps(model, audio_features, options) -> StepTimes:
    """One decode of already-encoded features, every step timed."""
    import torch

    from ..decoding import DecodingTask

    sync = _sync(model.device)
    with torch.no_grad():
        task = DecodingTask(model, options)
        state, start_s = timed_start(task, audio_features, sync)
        steps = []
        while not state.completed:
            t0 = time.perf_counter()
            task.step(state)
            sync()
            steps.append(time.perf_counter() - t0)
    return StepTimes(start_s, steps, len(task.initial_tokens))


def time_encoder(model, mel) -> tuple[float, object]:
    import torch

    sync = _sync(model.device)
    with torch.no_grad():
        sync()
        t0 = time.perf_counter()
        features = model.embed_audio(mel[None])
        sync()
    return time.perf_counter() - t0, features


def time_natural(model, mel, options) -> tuple[float, int]:
    """An ordinary decode of one window, encoder included: (seconds, tokens generated)."""
    import torch

    sync = _sync(model.device)
    with torch.no_grad():
        sync()
        t0 = time.perf_counter()
        result = model.decode(mel, options)
        sync()
    return time.perf_counter() - t0, len(result.tokens)
