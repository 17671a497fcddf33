"""The network's operations that are not modules (the `Ops` seam of network.py), in plain torch.

A backend subclasses `Ops` and hands it to the model (`Whisper.use_ops`); kvwhisper/cpu/ops.py is the CPU's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from .kv_cache import LayerKV
    from .network import Linear, ResidualAttentionBlock


class Ops:
    """The network's operations that are not modules, in plain torch. A backend subclasses it (cpu/ops.py)."""

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Unmasked attention of (N, H, Tq, D) over (N, H, S, D): decode steps and cross-attention."""
        return F.scaled_dot_product_attention(q.to(k.dtype), k, v)

    def self_attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Unmasked self-attention of the encoder, (N, H, T, D) each, in the widest of their dtypes (a bias
        wider than its weight widens that projection's output)."""
        dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
        return F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype))

    def block_step(
        self, block: ResidualAttentionBlock, x: Tensor, segments: list[tuple[slice, LayerKV, int]]
    ) -> Tensor | None:
        """A decoder block's step for one new token per row, x (B, 1, C), all at once where a backend can.
        `segments`: (rows, the rows' cache, position) in row order, covering x: one for a decoder call, one per
        window for windows stepped together (ragged.py); each segment's new K/V are written into its cache at
        its position. None: the block runs op by op."""
        return None

    def linears(self, x: Tensor, layers: tuple[Linear, ...]) -> list[Tensor]:
        """Each layer applied to the same input (the q/k/v projections): a backend may stack them."""
        return [layer(x) for layer in layers]

    def project(self, x: Tensor, weight: Tensor) -> Tensor:
        """x (..., C) times `weight` (V, C) transposed: the output projection, tied to the token embedding."""
        return F.linear(x.to(weight.dtype), weight)

    def residual_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype of the decoder's residual stream for weights of `dtype`."""
        return dtype

    def kv_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype the cache keeps the self-attention K/V in for weights of `dtype`."""
        return dtype

    def cross_kv_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype the cross-attention K/V are kept in for weights of `dtype`."""
        return dtype


TORCH_OPS = Ops()
