"""The decoder's KV cache: static self-attention buffers written at a position, cross-attention K/V once.

One object, passed explicitly to the decoder. Nothing is hidden in hooks and there is no "first step?" flag:
`position` says how many tokens the self-attention buffers hold, and `has_cross` whether the
cross-attention K/V of the current window(s) are filled.

Shapes (L = decoder layers, B = rows decoded = n_audio * n_group, H = heads, D = head dim):
- self_k, self_v: (L, B, H, capacity, D), preallocated; a step writes its new tokens at [position:position+T].
- cross_k, cross_v: (L, n_audio, H, n_audio_ctx, D), computed once per window right after the encoder and shared
  by every beam / sample of that window: attention folds the group into the query axis, so nothing is copied
  per beam (see `MultiHeadAttention.cross`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

CACHE_MODES = ("full", "self_only", "none")
# full:      self-attention K/V cached, cross-attention K/V computed once per window (the fast path)
# self_only: self-attention K/V cached, cross-attention K/V recomputed at every step
# none:      nothing reused: the whole prefix and the cross-attention K/V are recomputed at every step


@dataclass
class LayerKV:
    """One decoder layer's view into the cache (views, not copies)."""

    self_k: Tensor  # (B, H, capacity, D)
    self_v: Tensor  # (B, H, capacity, D)
    cross_k: Tensor | None  # (n_audio, H, S, D)
    cross_v: Tensor | None  # (n_audio, H, S, D)


class KVCache:
    """Preallocated K/V buffers for `n_layer` decoder layers, `batch` rows and up to `capacity` tokens."""

    def __init__(
        self,
        n_layer: int,
        batch: int,
        n_head: int,
        head_dim: int,
        capacity: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        shape = (n_layer, batch, n_head, capacity, head_dim)
        self.self_k = torch.zeros(shape, device=device, dtype=dtype)
        self.self_v = torch.zeros(shape, device=device, dtype=dtype)
        self.cross_k: Tensor | None = None  # (L, n_audio, H, S, D)
        self.cross_v: Tensor | None = None
        self.position = 0  # tokens held in the self-attention buffers, for every row alike
        # positions below this hold the same K/V in every row of a window (the prompt, fed once and copied to
        # the window's beams): a reorder leaves them as they are
        self.shared = 0

    @property
    def n_layer(self) -> int:
        return self.self_k.shape[0]

    @property
    def batch(self) -> int:
        return self.self_k.shape[1]

    @property
    def capacity(self) -> int:
        return self.self_k.shape[3]

    @property
    def has_cross(self) -> bool:
        return self.cross_k is not None

    @property
    def cross_length(self) -> int:
        """Audio positions held by the cross-attention K/V (0 when not filled)."""
        return 0 if self.cross_k is None else self.cross_k.shape[3]

    def layer(self, i: int) -> LayerKV:
        cross_k = None if self.cross_k is None else self.cross_k[i]
        cross_v = None if self.cross_v is None else self.cross_v[i]
        return LayerKV(self.self_k[i], self.self_v[i], cross_k, cross_v)

    def set_cross(self, k: Tensor, v: Tensor) -> None:
        """Store the cross-attention K/V of the current windows: (L, n_audio, H, S, D) each."""
        if self.batch % k.shape[1] != 0:
            raise ValueError(f"cache rows ({self.batch}) are not a multiple of the windows ({k.shape[1]})")
        self.cross_k, self.cross_v = k, v

    def clear_cross(self) -> None:
        self.cross_k = self.cross_v = None

    def advance(self, n_tokens: int) -> None:
        """Record that `n_tokens` more tokens were written at `position`."""
        if self.position + n_tokens > self.capacity:
            raise ValueError(f"KV cache full: {self.position} + {n_tokens} > capacity {self.capacity}")
        self.position += n_tokens

    def rewind(self, position: int) -> None:
        """Forget everything at or after `position`: with static buffers this is just a position change."""
        if not 0 <= position <= self.position:
            raise ValueError(f"cannot rewind to {position}: the cache holds {self.position} tokens")
        self.position = position
        self.shared = min(self.shared, position)

    def reorder(self, source_indices: Tensor) -> None:
        """Make row i a copy of row source_indices[i] (beam search). Only the filled positions that differ
        between rows (from `shared` to `position`) are moved.

        Rows come from the same window (beams never cross windows), so the shared cross K/V stay as they are.
        """
        start, p = self.shared, self.position
        if p == start:
            return
        idx = source_indices.to(self.self_k.device)
        rows = slice(None)
        # on CPU (where reading the indices costs nothing) only the rows that change are moved
        if idx.device.type == "cpu":
            moved = (idx != torch.arange(len(idx))).nonzero().squeeze(1)
            if len(moved) == 0:
                return
            rows, idx = moved, idx[moved]
        self.self_k[:, rows, :, start:p] = self.self_k[:, idx, :, start:p]
        self.self_v[:, rows, :, start:p] = self.self_v[:, idx, :, start:p]

    def spread(self, group: int) -> None:
        """Copy the first row of every `group` consecutive rows to the others, and mark every filled position
        as `shared`: the prompt was fed to one row per window and holds the same K/V in all of them."""
        first = torch.arange(self.batch, device=self.self_k.device) // group * group
        self.shared = 0
        self.reorder(first)
        self.shared = self.position

    def rows(self, index: slice) -> KVCache:
        """A cache over some rows of this one (views of the same buffers: what it writes lands here), at the
        same position and with the same cross K/V. Its position moves on its own."""
        view = object.__new__(KVCache)
        view.self_k, view.self_v = self.self_k[:, index], self.self_v[:, index]
        view.cross_k, view.cross_v = self.cross_k, self.cross_v
        view.position, view.shared = self.position, self.shared
        return view

    def reset(self) -> None:
        """Empty the cache for a new window (buffers are kept and reused)."""
        self.position = self.shared = 0
        self.clear_cross()

    def lengths(self) -> dict[str, int]:
        """What the cache holds, for inspection: self-attention tokens per layer and cross-attention frames."""
        return {"self": self.position, "cross": self.cross_length, "layers": self.n_layer}

    def __repr__(self) -> str:
        L, B, H, C, D = self.self_k.shape
        return (
            f"KVCache(layers={L}, batch={B}, heads={H}, head_dim={D}, capacity={C}, "
            f"position={self.position}, cross={self.cross_length}, dtype={self.self_k.dtype})"
        )
