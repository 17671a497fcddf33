"""The network's non-module operations on CPU (the `Ops` seam of model/network.py), faster than plain torch.

- few-query attention (decode steps, cross-attention) in fp32 through the C kernel where it is built, else
  fp32 scaled_dot_product_attention: fp32 is the more exact, and on CPU the faster, of the two for bf16 models;
- the encoder's self-attention: for a bf16 model on a CPU with AMX, the AMX kernel (amx.py); otherwise, on
  such a CPU, torch's flash attention; elsewhere in fp32, head by head and a chunk of queries at a time, as two
  oneDNN products around a softmax whose scores stay in cache (measured per CPU: on the AMD EPYC the head by
  head path is 1.27x faster than the flash kernel for fp32, on the Intel Xeon with AMX 0.84x);
- the q/k/v projections as one product over their stacked packed weights, and the tied output projection
  through its packed weight (packed.py);
- the decoder's residual stream and the cross-attention K/V kept in fp32 whatever the weights' dtype, so a bf16
  model rounds only inside its products.
Figures for each choice are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import amx, kernels
from .packed import PackedLinear, PackedWeight, fused_linear
from .packed import enabled as packed_enabled
from .packed import linear as packed_linear

FEW_QUERIES = 16  # attention of at most this many queries (a decode step's beams) runs in fp32
SELF_ATTEND_CHUNK = 500  # encoder queries per oneDNN product in `self_attend` (their scores stay in cache)


class CPUOps:
    """The `model.network.Ops` methods for a model on the CPU (one instance per model: it holds the output
    projection's packed weight)."""

    def __init__(self) -> None:
        self.output = PackedWeight()

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if q.device.type == "cpu" and (k.dtype == torch.float32 or q.shape[-2] <= FEW_QUERIES):
            q32, k32, v32 = q.float(), k.float(), v.float()  # no copies for fp32 tensors
            if kernels.attend_applies(q32, k32, v32):
                return kernels.attend(q32, k32, v32).to(q.dtype)
            return F.scaled_dot_product_attention(q32, k32, v32).to(q.dtype)
        return F.scaled_dot_product_attention(q.to(k.dtype), k, v)

    def self_attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if amx.applies(q, k, v):  # a bf16 model on a CPU with AMX
            return amx.attend(q, k, v)
        N, H, T, D = q.shape
        if (
            q.device.type != "cpu"
            or T < SELF_ATTEND_CHUNK
            or amx.available()  # the Intel CPUs with AMX: torch's flash attention is the faster one there
            or not packed_enabled(torch.float32, q, k, v)
        ):
            return F.scaled_dot_product_attention(q, k, v)
        lin = torch.ops.mkldnn._linear_pointwise
        chunk = SELF_ATTEND_CHUNK
        # contiguous operands: oneDNN is pathologically slow on the strided views of the fused q/k/v product
        q = (q.float() * D**-0.5).contiguous()  # (a power of two for every Whisper size: exact, as in SDPA)
        k = k.float().contiguous()
        v_t = v.float().transpose(-1, -2).contiguous()  # (N, H, D, T): a "weight" of T inputs
        out = torch.empty(N, T, H, D, dtype=torch.float32)
        for n in range(N):
            for h in range(H):
                for i in range(0, T, chunk):
                    scores = lin(q[n, h, i : i + chunk], k[n, h], None, "none", [], "")  # (chunk, T)
                    out[n, i : i + chunk, h] = lin(torch.softmax(scores, -1), v_t[n, h], None, "none", [], "")
        return out.transpose(1, 2).to(v.dtype)

    def linears(self, x: Tensor, layers: tuple[nn.Linear, ...]) -> list[Tensor]:
        first = layers[0]
        if not isinstance(first, PackedLinear):
            return [layer(x) for layer in layers]
        return fused_linear(x, [m.weight for m in layers], [m.bias for m in layers], first.stacked)

    def project(self, x: Tensor, weight: Tensor) -> Tensor:
        return packed_linear(x, weight, None, self.output)

    def residual_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return torch.float32

    def cross_kv_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return torch.float32
