"""Pictures of a decode: the window's log-mel spectrogram and a cross-attention map (tokens x audio).

matplotlib is an optional extra (`pip install matplotlib`); it is imported when a picture is drawn, and only
its object API with the Agg canvas is used, so the caller's pyplot backend is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

FRAMES_PER_SECOND = 100  # mel frames (10 ms hop)
AUDIO_POSITIONS_PER_SECOND = 50  # encoder positions (20 ms)


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("pictures need matplotlib: pip install matplotlib") from e
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _array(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def plot_mel(
    mel,
    path: str | Path,
    *,
    title: str | None = None,
    audio_seconds: float | None = None,
    offset_seconds: float = 0.0,
) -> Path:
    """The log-mel spectrogram of a window (n_mels, frames) as a PNG; a dashed line where the audio ends."""
    m = _array(mel)
    if m.ndim != 2:
        raise ValueError(f"mel must be (n_mels, frames), not shape {m.shape}")
    seconds = m.shape[1] / FRAMES_PER_SECOND
    fig = _figure(12, 3.2)
    ax = fig.add_subplot()
    image = ax.imshow(
        m,
        origin="lower",
        aspect="auto",
        cmap="magma",
        interpolation="nearest",
        extent=(offset_seconds, offset_seconds + seconds, 0, m.shape[0]),
    )
    if audio_seconds is not None and audio_seconds < seconds:
        ax.axvline(offset_seconds + audio_seconds, color="white", linestyle="--", linewidth=1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel bin")
    ax.set_title(title or "log-mel spectrogram")
    fig.colorbar(image, ax=ax, pad=0.01, label="log-mel")
    fig.tight_layout()
    return _save(fig, path)


def plot_cross_attention(
    weights,
    labels: Sequence[str],
    path: str | Path,
    *,
    title: str | None = None,
    audio_seconds: float | None = None,
    normalize: bool = True,
) -> Path:
    """A cross-attention map as a PNG: weights (n_tokens, n_audio_positions) with the tokens as row labels.

    audio_seconds: show only the audio (positions are 20 ms) plus a little margin. normalize: scale each row
    to [0, 1] so that every token's peak is visible (attention of early tokens is often diffuse).
    """
    w = _array(weights)
    if w.ndim != 2 or w.shape[0] != len(labels):
        raise ValueError(
            f"weights must be (n_tokens, positions), one label per row: {w.shape}, {len(labels)}"
        )
    positions = w.shape[1]
    if audio_seconds is not None:
        positions = min(positions, int(np.ceil((audio_seconds + 0.5) * AUDIO_POSITIONS_PER_SECOND)))
        w = w[:, :positions]
    if normalize and w.size:
        lo, hi = w.min(axis=1, keepdims=True), w.max(axis=1, keepdims=True)
        w = (w - lo) / np.maximum(hi - lo, 1e-12)
    n = max(len(labels), 1)
    fig = _figure(max(8.0, min(16.0, positions / 50)), max(3.0, 0.22 * n + 1.4))
    ax = fig.add_subplot()
    seconds = positions / AUDIO_POSITIONS_PER_SECOND
    image = ax.imshow(
        w if w.size else np.zeros((1, positions)),
        aspect="auto",
        cmap="viridis",
        interpolation="nearest",
        extent=(0, seconds, n - 0.5, -0.5),
    )
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels([_label(t) for t in labels], fontsize=8, family="monospace")
    ax.set_xlabel("audio (s)")
    ax.set_ylabel("token chosen")
    ax.set_title(title or "cross-attention")
    fig.colorbar(image, ax=ax, pad=0.01, label="attention (row-normalized)" if normalize else "attention")
    fig.tight_layout()
    return _save(fig, path)


def _label(text: str) -> str:
    text = text.replace("\n", "\\n")
    return f"'{text}'" if text.startswith(" ") or text.endswith(" ") else text


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise OSError(f"{path.parent}: no such directory")
    fig.savefig(path, format="png")
    return path
