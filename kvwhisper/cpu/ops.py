"""The network's non-module operations on CPU (the `Ops` seam of model/network.py), faster than plain torch.

- few-query attention (decode steps, cross-attention) in fp32 through the C kernel where it is built, else
  fp32 scaled_dot_product_attention: fp32 is the more exact, and on CPU the faster, of the two for bf16 models;
- the encoder's self-attention: for a bf16 model on a CPU with AMX, the AMX kernel (amx.py); otherwise, on
  such a CPU, torch's flash attention; elsewhere in fp32, head by head and a chunk of queries at a time, as two
  oneDNN products around a softmax whose scores stay in cache (measured per CPU: on the AMD EPYC the head by
  head path is 1.27x faster than the flash kernel for fp32, on the Intel Xeon with AMX 0.84x);
- the q/k/v projections as one product over their stacked packed weights, and the tied output projection
  through its packed weight (packed.py);
- the decoder's residual stream and the self-attention K/V kept in fp32 whatever the weights' dtype, so a
  bf16 model rounds only inside its products; its audio K/V, bf16 products, kept as those bf16 numbers (exact)
  where the attention kernel reads them, else in fp32;
- a decoder block's one-token step in one C call where the kernels apply (`block_step`, kernels.decoder_layer).
Figures for each choice are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import amx, kernels, packed
from .packed import HALF_MAX_ROWS, PackedLinear, PackedWeight, fused_linear
from .packed import enabled as packed_enabled
from .packed import linear as packed_linear

BLOCK_STEP = (
    True  # set False to run a decode step's blocks op by op (the C kernels still used, see block_step)
)
FEW_QUERIES = 16  # attention of at most this many queries (a decode step's beams) runs in fp32
SELF_ATTEND_CHUNK = 500  # encoder queries per oneDNN product in `self_attend` (their scores stay in cache)


class CPUOps:
    """The `model.network.Ops` methods for a model on the CPU (one instance per model: it holds the output
    projection's packed weight)."""

    def __init__(self) -> None:
        self.output = PackedWeight()
        self._plans: dict[nn.Module, _LayerPlan] = {}  # block_step's, by decoder block

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if q.device.type == "cpu" and (k.dtype == torch.float32 or q.shape[-2] <= FEW_QUERIES):
            q32 = q.float()  # no copy for fp32
            if kernels.attend_applies(q32, k, v):  # fp32 or bf16 K/V, read in place
                return kernels.attend(q32, k, v).to(q.dtype)
            return F.scaled_dot_product_attention(q32, k.float(), v.float()).to(q.dtype)
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

    def block_step(
        self, block: nn.Module, x: Tensor, segments: list[tuple[slice, object, int]]
    ) -> Tensor | None:
        """A decoder block's one-token step, x (B, 1, C) fp32, through one C call (kernels.decoder_layer): the
        same kernels as op by op, to fp32 rounding (layer norm and GELU are its own). None where it does not
        apply: no kernels here, not fp32 rows and caches, too many rows, weights fp16 does not hold.

        What the call takes of the block (its packs' pointers) is made once and kept (`_LayerPlan`) while the
        block's parameters stay where and as they are (storage and version, as the packs themselves)."""
        B, T, C = x.shape
        if not (
            BLOCK_STEP
            and T == 1
            and B <= HALF_MAX_ROWS
            and x.dtype is torch.float32
            and x.is_cpu
            and packed.HALF
            and all(_fits(rows, kv) for rows, kv, _ in segments)
            and kernels.available()
            and kernels.eager_inference(x)
        ):
            return None
        plan = self._plans.get(block)
        if plan is None or not plan.current():
            plan = _LayerPlan.make(block, C)
            if plan is None:
                return None
            self._plans[block] = plan
        out = x.reshape(B, C).clone()
        kernels.decoder_layer(
            out,
            plan.pointers,
            plan.kind,
            plan.eps,
            [
                (rows.start, rows.stop - rows.start, position, (kv.self_k, kv.self_v, kv.cross_k, kv.cross_v))
                for rows, kv, position in segments
            ],
            plan.n_head,
            plan.n_mlp,
        )
        return out.view(B, 1, C)

    def linears(self, x: Tensor, layers: tuple[nn.Linear, ...]) -> list[Tensor]:
        first = layers[0]
        if not isinstance(first, PackedLinear):
            return [layer(x) for layer in layers]
        return fused_linear(x, [m.weight for m in layers], [m.bias for m in layers], first.stacked)

    def project(self, x: Tensor, weight: Tensor) -> Tensor:
        return packed_linear(x, weight, None, self.output)

    def residual_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return torch.float32

    def kv_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return torch.float32

    def cross_kv_dtype(self, dtype: torch.dtype) -> torch.dtype:
        # a bf16 model's audio K/V come out of bf16 products: kept as the bf16 numbers they are (half the bytes
        # a step reads), where the attention kernel reads bf16
        return dtype if dtype == torch.bfloat16 and kernels.available() else torch.float32


def _fits(rows: slice, kv) -> bool:
    """Whether kernels.decoder_layer takes a segment: an fp32 cache, fp32 or bf16 audio K/V, rows of D contiguous, at most
    `kernels.ATTEND_MAX_ROWS` rows per window."""
    n = rows.stop - rows.start
    return (
        kv.self_k.dtype is torch.float32
        and kv.self_v.dtype is torch.float32
        and kv.cross_k is not None
        and kv.cross_k.dtype in (torch.float32, torch.bfloat16)
        and kv.cross_v.dtype is kv.cross_k.dtype
        and kv.self_k.shape[0] == n
        and n % kv.cross_k.shape[0] == 0
        and n // kv.cross_k.shape[0] <= kernels.ATTEND_MAX_ROWS
        and all(t.stride(-1) == 1 for t in (kv.self_k, kv.self_v, kv.cross_k, kv.cross_v))
    )


def _stamp(tensors: tuple[Tensor, ...], packs: tuple[PackedWeight, ...]) -> tuple:
    return (*((t.data_ptr(), t._version) for t in tensors), *(p.int8 for p in packs))


class _LayerPlan:
    """What `CPUOps.block_step` hands kernels.decoder_layer for one decoder block: its packs' pointers (the packs
    kept alive here), and the stamp of the parameters and packing choices they were made from."""

    __slots__ = ("tensors", "packed", "stamp", "packs", "pointers", "kind", "eps", "n_head", "n_mlp")

    @classmethod
    def make(cls, block: nn.Module, C: int) -> _LayerPlan | None:
        attn, cross, fc1, fc2 = block.attn, block.cross_attn, block.mlp[0], block.mlp[2]
        layers = (attn.query, attn.key, attn.value, attn.out, cross.query, cross.out, fc1, fc2)
        D = C // attn.n_head
        if D % 16 or D > 128 or not all(isinstance(m, PackedLinear) for m in layers):
            return None
        q, k, v = attn.query, attn.key, attn.value
        packs = [q.stacked.get_half([q.weight, k.weight, v.weight], [q.bias, k.bias, v.bias])]
        singles = (attn.out, cross.query, cross.out, fc1, fc2)
        packs += [m.packed.get_half([m.weight], [m.bias]) for m in singles]
        if any(p is None for p in packs):
            return None
        norms = [block.attn_ln, block.cross_attn_ln, block.mlp_ln]
        plan = cls()
        plan.tensors = tuple(t for m in (*layers, *norms) for t in (m.weight, m.bias) if t is not None)
        plan.packed = (q.stacked, *(m.packed for m in singles))
        plan.stamp = _stamp(plan.tensors, plan.packed)
        norm_tensors = [t.float() for n in norms for t in (n.weight, n.bias)]
        plan.pointers = kernels.layer_pointers(norm_tensors, [p[0] for p in packs], [p[1] for p in packs])
        plan.packs = (packs, norm_tensors)  # alive as long as the pointers
        plan.kind = kernels.weight_kind(packs[0][0])
        plan.eps = block.attn_ln.eps
        plan.n_head, plan.n_mlp = attn.n_head, fc1.out_features
        return plan

    def current(self) -> bool:
        """Whether the block's parameters and packing choices are still those the plan was made from."""
        return _stamp(self.tensors, self.packed) == self.stamp
