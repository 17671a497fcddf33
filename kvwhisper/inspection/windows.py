"""One window's encoder input from what a user has: a file, bytes, a waveform, a mel, or audio features."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ..audio import (
    CHUNK_LENGTH,
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    MelWindows,
    load_audio,
    log_mel_spectrogram,
    pad_or_trim,
)
from ..decoding.inputs import window_input

if TYPE_CHECKING:
    from ..model import Whisper


def window_mel(model: Whisper, audio_or_mel: Any, window: int | None = None) -> tuple[Tensor, float | None]:
    """The encoder input of one window, and the seconds of real audio in it (None when unknown).

    - a mel (n_mels, 3000) or audio features (n_audio_ctx, n_audio_state): used as they are (window must be
      None or 0);
    - audio (a path, bytes, a file object, or a 16 kHz waveform) with window=None: the first 30 s, as
      `model.decode(log_mel_spectrogram(pad_or_trim(audio)))` reads it;
    - audio with window=N: the N-th 30 s window (seek = N * 3000 frames) of the whole-file mel, as the
      long-form decoder cuts it (`MelWindows`: normalized over the whole file, the window zero-padded).
    """
    d = model.dims
    if isinstance(audio_or_mel, np.ndarray):
        audio_or_mel = torch.from_numpy(np.ascontiguousarray(audio_or_mel))
    if isinstance(audio_or_mel, Tensor) and audio_or_mel.dim() >= 2:
        batch, single = window_input(audio_or_mel, model, "audio_or_mel")
        if not single:
            raise ValueError(f"audio_or_mel: a session decodes one window, got a batch {tuple(batch.shape)}")
        if window:
            raise ValueError(
                "window selects a window of an audio file; a mel or features are used as they are"
            )
        return batch[0], None
    if isinstance(audio_or_mel, Tensor) and audio_or_mel.dim() != 1:
        raise ValueError(f"audio must be a mono waveform (n_samples,), not shape {tuple(audio_or_mel.shape)}")
    if isinstance(audio_or_mel, (str, Path)) or not isinstance(audio_or_mel, Tensor):
        audio = torch.from_numpy(load_audio(audio_or_mel))
    else:
        audio = audio_or_mel.float()
    seconds = audio.shape[0] / SAMPLE_RATE
    if window is None:
        mel = log_mel_spectrogram(pad_or_trim(audio, N_SAMPLES), d.n_mels)
        return mel, min(seconds, float(CHUNK_LENGTH))
    if window < 0:
        raise ValueError(f"window must be >= 0, not {window}")
    windows = MelWindows(audio, d.n_mels)
    seek = window * N_FRAMES
    if seek > 0 and seek >= windows.content_frames:
        n = max(1, math.ceil(windows.content_frames / N_FRAMES))
        raise ValueError(
            f"window {window} is past the end: the audio ({windows.duration:.2f} s) has {n} window(s)"
        )
    size = windows.segment_size(seek)
    return windows.window(seek), size / (N_FRAMES / CHUNK_LENGTH)
