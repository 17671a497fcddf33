"""The encoder's bf16 self-attention on AMX (_amx.c) from Python.

On a CPU with Intel's AMX matrix units (amx_bf16), a bf16 model's encoder attends through `attend`: the scores
and the output products on the tiles (bf16 inputs, fp32 sums), the softmax in fp32 (AVX-512), the
probabilities rounded to bf16 for the output product, as in torch's bf16 flash attention. It is faster than
that kernel and several times faster than the fp32 head-by-head attention there (benchmarks/RESULTS.md,
"Encoder code paths"). `SPLIT = True` carries the probabilities as two bf16 numbers instead (about 16 bits):
closer to fp32 attention, slower, and no better on the bf16 agreement measure (benchmarks/bf16_agreement.py).

It needs the compiled extension (setup.py builds it where the compiler knows AMX; optional), an x86-64 CPU with
AMX-BF16 and AVX512-BF16, and Linux granting the tile state. Elsewhere, and with `ENABLED = False` (how the
fallback is tested on an AMX CPU), `applies` is False and cpu/ops.py runs its other paths.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .kernels import eager_inference

try:
    from . import _amx as _c
except ImportError:  # not built (no AMX-aware compiler at install, not x86-64)
    _c = None

ENABLED = True  # set False to run the encoder's other attention paths on an AMX CPU
# the probabilities enter the output product as one bf16 (8 bits, as in torch's bf16 flash attention); True: as
# hi + lo bf16 (about 16 bits)
SPLIT = False
HEAD_SIZE = 64  # the head size the kernel takes: every Whisper size's
_ok: bool | None = None


def available() -> bool:
    """Whether the kernel is built and this CPU and OS run it (and `ENABLED`)."""
    global _ok
    if torch.compiler.is_compiling():
        return False
    if _ok is None:
        _ok = _c is not None and bool(_c.supported())
    return ENABLED and _ok


def applies(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether `attend` takes these: bf16 CPU tensors (N, H, T, 64) and (N, H, S, 64), each row contiguous,
    outside autograd and torch.compile."""
    return (
        q.dtype is torch.bfloat16
        and k.dtype is torch.bfloat16
        and v.dtype is torch.bfloat16
        and q.is_cpu
        and q.dim() == 4
        and q.shape[-1] == HEAD_SIZE
        and k.shape == v.shape
        and k.shape[:2] == q.shape[:2]
        and k.shape[-1] == HEAD_SIZE
        and k.shape[2] > 0
        and q.stride(-1) == 1
        and k.stride(-1) == 1
        and v.stride(-1) == 1
        and available()
        and eager_inference(q, k, v)
    )


def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(D)) v, unmasked (call where `applies`): (N, H, T, D) bf16, laid out as (N, T, H, D)
    underneath so that merging the heads is a view."""
    N, H, T, D = q.shape
    S = k.shape[2]
    out = torch.empty(N, T, H, D, dtype=torch.bfloat16)
    if T:
        _c.attend(
            q.data_ptr(),
            k.data_ptr(),
            v.data_ptr(),
            out.data_ptr(),
            N,
            H,
            T,
            S,
            D**-0.5,
            q.stride()[:3],
            k.stride()[:3],
            v.stride()[:3],
            (T * H * D, D, H * D),
            SPLIT,
            torch.get_num_threads(),
        )
    return out.transpose(1, 2)
