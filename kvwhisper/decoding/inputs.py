"""What a decode takes in, checked where it enters (`decode`, `detect_language`, `decode_session`): a log-Mel
window or the encoder's output, one or a batch, a tensor or a numpy array. A ValueError says what was expected
instead of a failure deep inside torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from ..model import Whisper


def expected_shapes(model: Whisper) -> str:
    d = model.dims
    return (
        f"a mel ({d.n_mels}, {2 * d.n_audio_ctx}) or audio features ({d.n_audio_ctx}, {d.n_audio_state}), "
        "or a batch (N, ...) of either"
    )


def _shape_hint(shape: tuple[int, ...], model: Whisper) -> str:
    """Why a shape may be wrong: transposed, another model's bins, not 30 s long."""
    d, last2 = model.dims, shape[-2:]
    if last2 == (2 * d.n_audio_ctx, d.n_mels):
        return "; transposed? the mel is (n_mels, frames)"
    if len(last2) == 2 and last2[-1] == 2 * d.n_audio_ctx and last2[0] != d.n_mels:
        return f"; this model takes {d.n_mels} mel bins (log_mel_spectrogram(audio, n_mels={d.n_mels}))"
    if len(last2) == 2 and last2[0] == d.n_mels:
        return f"; a window is {2 * d.n_audio_ctx} frames (pad_or_trim the audio or the mel)"
    return ""


def window_input(x: Any, model: Whisper, what: str = "mel") -> tuple[Tensor, bool]:
    """`x` as a batch (N, n_mels, frames) / (N, n_audio_ctx, n_audio_state) float tensor, and whether it was a
    single window (2-D). numpy arrays are taken; wrong shapes, an empty batch, integer or complex values and
    NaN / Inf raise ValueError naming `what`."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise ValueError(f"{what}: expected a tensor or numpy array, got {type(x).__name__}")
    shape = tuple(x.shape)
    d = model.dims
    if x.ndim not in (2, 3) or shape[-2:] not in (
        (d.n_mels, 2 * d.n_audio_ctx),
        (d.n_audio_ctx, d.n_audio_state),
    ):
        raise ValueError(
            f"{what}: expected {expected_shapes(model)}; got shape {shape}{_shape_hint(shape, model)}"
        )
    if x.ndim == 3 and shape[0] == 0:
        raise ValueError(f"{what}: the batch is empty, shape {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{what}: expected floating-point values, got {x.dtype}")
    if x.dtype == torch.float64:
        x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what}: contains NaN or infinite values")
    return (x[None] if x.ndim == 2 else x), x.ndim == 2
