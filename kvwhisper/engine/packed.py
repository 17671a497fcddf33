"""oneDNN-packed weights for the model's linear layers on CPU (speed only; the parameters are unchanged).

A cached decode step multiplies one row per beam by every decoder weight: matrix-vector products whose
speed is the memory bandwidth they reach. oneDNN's inner product on a weight reordered once into its blocked
layout (`torch.ops.mkldnn._reorder_linear_weight`, what Inductor's weight prepacking uses) reads it
1.3-2.5x faster than `F.linear` does on this 2-core AVX512 machine, in fp32 and in bf16
(benchmarks/RESULTS.md, "Decode step code paths"); the encoder's fp32 matrix products (1500 rows) also run
~1.2x faster through them. The packed copy is made on first use and again whenever the
weight changes (another dtype, device, or an in-place load: the key is the storage pointer and version).

It is used on CPU, in fp32 and bf16 (bf16 only where oneDNN has native bf16), outside autograd and outside
torch.compile; everywhere else, and when `ENABLED` is False, the plain `F.linear` runs. Results agree with
`F.linear` to fp32 rounding (oneDNN sums in another order), not bit for bit.
Costs: one extra copy of the linear weights in memory (tiny.en: ~130 MB fp32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ENABLED = True  # set False to measure or debug the plain F.linear path

_support: dict[torch.dtype, bool] = {}


def _supported(dtype: torch.dtype) -> bool:
    """Whether oneDNN's packed inner product works here in this dtype (tried once on a tiny matrix)."""
    if dtype not in _support:
        ok = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        if ok and dtype == torch.bfloat16:
            ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if ok:
            try:
                w, x = torch.ones(4, 8, dtype=dtype), torch.ones(1, 8, dtype=dtype)
                with torch.inference_mode(False), torch.no_grad():
                    y = torch.ops.mkldnn._linear_pointwise(
                        x, torch.ops.mkldnn._reorder_linear_weight(w, 1), None, "none", [], ""
                    )
                ok = bool((y.float() == 8).all())
            except (RuntimeError, NotImplementedError):
                ok = False
        _support[dtype] = ok
    return _support[dtype]


class PackedWeight:
    """A weight's packed copy, remade when the weight changes. Not saved, copied or pickled."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.tensor: Tensor | None = None

    def get(self, weight: Tensor) -> Tensor | None:
        """The packed copy of `weight` (out_features, in_features), or None where the plain path must run."""
        if not (
            ENABLED
            and weight.device.type == "cpu"
            and weight.dtype in (torch.float32, torch.bfloat16)
            and not (torch.is_grad_enabled() and weight.requires_grad)
            and not torch.compiler.is_compiling()
            and _supported(weight.dtype)
        ):
            return None
        key = (weight.data_ptr(), weight._version, weight.dtype, tuple(weight.shape))
        if key != self.key:
            with torch.inference_mode(False), torch.no_grad():
                self.tensor = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1)
            self.key = key
        return self.tensor

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


def linear(x: Tensor, weight: Tensor, bias: Tensor | None, packed: PackedWeight) -> Tensor:
    """`F.linear(x, weight, bias)`, through the packed weight when it applies."""
    w = packed.get(weight) if x.dtype == weight.dtype else None
    if w is None:
        return F.linear(x, weight, bias)
    return torch.ops.mkldnn._linear_pointwise(x, w, bias, "none", [], "")


class Linear(nn.Linear):
    """`nn.Linear` (same parameters, same names) that multiplies through its packed weight where it applies."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.packed = PackedWeight()

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias, self.packed)
