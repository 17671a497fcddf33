"""The decode step's C kernels (_kernels.c) from Python: 2-byte-weight products and few-query attention.

A cached decode step is bound by the bytes it reads: every decoder weight (for a few rows, one per beam) and
every layer's cross-attention K/V over 1,500 audio positions. Two kernels read them faster than torch's general
operations do on this CPU, in fp32 arithmetic (benchmarks/RESULTS.md):

- `gemv`: a product over an fp32 weight that fp16 holds exactly (Whisper's checkpoints are fp16 numbers),
  read as fp16 and widened in registers: half the bytes. A bf16 weight is read as bf16 against fp32 rows (only
  the weight is rounded; oneDNN's bf16 product rounds the rows too). Used by packed.py (`HALF`) for up to
  `packed.HALF_MAX_ROWS` rows.
- `attend`: softmax attention of up to 8 query rows per (batch, head), reading K and V once in place. Used by
  model.attend for decode steps (one new token over the self-attention cache, a window's beams over its
  cross-attention K/V).
- `decoder_layer`: a whole decoder layer's one-token step in one call (layer norms, the products through
  `gemv`, the attention through `attend`, GELU, the residual adds, the new K/V written into the cache): the
  same kernels as the step op by op, without the ~20 torch operations and the Python between them. Used by
  `CPUOps.block_step` (ops.py).
- `lstm`: an LSTM layer's recurrence, step after step on one core, its sigmoid and tanh vectorized: the
  voice activity detector's cell over a recording's frames (audio/vad.py), ~4x torch's `nn.LSTM` there.

Both need the compiled extension (setup.py builds it at install where a C compiler is; optional) and an x86-64
CPU with AVX-512, or with AVX2, F16C and FMA. Elsewhere, and with `ENABLED = False`, the callers run torch's
operations as before. Results agree with torch's to fp32 rounding (other summation orders), not bit for bit, and
do not depend on the thread count.

Each kernel has an AVX-512 and an AVX2 version, one width-generic code whose lanes do the same operations in
the same order: the two give the same bits (tested where a CPU runs both). The best one this CPU runs is used
(`isas()`, `isa()`); `set_isa("avx2")`, or the environment variable `KVWHISPER_KERNEL_ISA=avx2` (read once, at
import: an unknown name or a version this CPU does not run fails the import), runs AVX2's on an AVX-512 CPU, so
that it is tested there too.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

try:
    from . import _kernels as _c
except ImportError:  # not built (no C compiler at install, not x86-64)
    _c = None

ENABLED = True  # set False to measure or debug torch's operations in their place
ATTEND_MAX_ROWS = 8  # query rows per (batch, head) the attention kernel takes (a window's beams)
# the packed weights' dtypes (packed.pack_half) as the kernel's kinds: fp16 numbers, bf16, int8 + scales
_KINDS = {torch.float16: 0, torch.bfloat16: 1, torch.uint8: 2}
_KV_DTYPES = (torch.float32, torch.bfloat16)  # K/V the attention kernel reads (bf16 widened: exact)
ISAS = ("avx512", "avx2")  # the kernels' versions, best first
_ok: bool | None = None


def available() -> bool:
    """Whether the kernels are built and this CPU runs them (x86-64 with AVX-512, or with AVX2; F16C, FMA).
    False while torch.compile traces: Dynamo cannot trace the C extension's `supported()`, and the kernels do
    not apply there anyway (`eager_inference`)."""
    global _ok
    if torch.compiler.is_compiling():
        return False
    if _ok is None:
        _ok = _c is not None and bool(_c.supported())
    return ENABLED and _ok


def isas() -> tuple[str, ...]:
    """The versions of the kernels (`ISAS`) this CPU runs, best first; () where the kernels are not built."""
    return () if _c is None else tuple(_c.isas())


def isa() -> str | None:
    """The version the kernels run: the best of `isas()` unless `set_isa` chose another (None: none runs)."""
    return None if _c is None else _c.isa()


def set_isa(name: str | None) -> None:
    """Run the kernels' `name` version, one of `ISAS` (None: the best this CPU runs). ValueError for another
    name; RuntimeError where this CPU does not run it or the kernels are not built."""
    if name is not None and name not in ISAS:
        raise ValueError(f"set_isa: {name!r} is not one of {ISAS}")
    if _c is None:
        if name is not None:
            raise RuntimeError("set_isa: the C kernels (kvwhisper.cpu._kernels) are not built")
        return
    _c.set_isa(name)


if os.environ.get("KVWHISPER_KERNEL_ISA"):
    set_isa(os.environ["KVWHISPER_KERNEL_ISA"])


LSTM_MAX_STATE = 256  # the largest LSTM state `lstm` takes (a multiple of 16)


def lstm_applies(state_size: int) -> bool:
    """Whether `lstm` takes a state of this size (a multiple of 16 up to LSTM_MAX_STATE) here."""
    return state_size % 16 == 0 and 16 <= state_size <= LSTM_MAX_STATE and available()


def lstm(xg: Tensor, wt: Tensor, h: Tensor, c: Tensor) -> Tensor:
    """An LSTM layer over T steps, as `nn.LSTM`'s (gates i, f, g, o): xg (T, 4H) fp32 is each step's input
    product plus both biases, wt (H, 4H) the recurrent weight transposed, h and c (H,) the state, updated in
    place. Returns each step's h, (T, H). Call where `lstm_applies(H)`; each step in fp32 to rounding (its own
    summation order and exp)."""
    T, H = xg.shape[0], h.shape[0]
    if not (xg.shape == (T, 4 * H) and wt.shape == (H, 4 * H) and c.shape == (H,)):
        raise ValueError(
            f"lstm: shapes {tuple(xg.shape)}, {tuple(wt.shape)}, {tuple(h.shape)}, {tuple(c.shape)}"
        )
    tensors = (xg, wt, h, c)
    if not all(t.dtype is torch.float32 and t.is_contiguous() and t.is_cpu for t in tensors):
        raise ValueError("lstm: fp32 contiguous CPU tensors only")
    out = torch.empty(T, H, dtype=torch.float32)
    if T:
        _c.lstm(xg.data_ptr(), wt.data_ptr(), h.data_ptr(), c.data_ptr(), out.data_ptr(), T, H)
    return out


def eager_inference(*tensors: Tensor) -> bool:
    """Not where autograd would record these tensors, not under torch.compile: both are blind to the kernels
    (and to oneDNN's packed products, packed.py, which share this rule)."""
    if torch.compiler.is_compiling():
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def gemv(
    x: Tensor, packed_weight: Tensor, bias: Tensor | None, n_out: int, add: Tensor | None = None
) -> Tensor:
    """x (..., K) fp32 times a weight of `n_out` outputs packed by `packed.pack_half` (fp16 numbers of an fp32
    weight, bf16, or int8 with per-output scales), plus `bias` (fp32), plus `add` (fp32, shaped like the
    result) when given: fp32 result."""
    K = x.shape[-1]
    x2 = x.reshape(-1, K).contiguous()
    y = torch.empty(*x.shape[:-1], n_out, dtype=torch.float32)
    if add is not None:
        add = add.contiguous()
    _c.gemv(
        packed_weight.data_ptr(),
        x2.data_ptr(),
        y.data_ptr(),
        None if bias is None else bias.data_ptr(),
        None if add is None else add.data_ptr(),
        x2.shape[0],
        n_out,
        K,
        _KINDS[packed_weight.dtype],
        torch.get_num_threads(),
    )
    return y


def attend_applies(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether `attend` takes these: CPU tensors (N, H, R, D) fp32 over (N, H, S, D) fp32 or bf16 (K and V
    alike), R <= 8 rows, D a multiple of 16 up to 128, each row of D contiguous, outside autograd and
    torch.compile. (Called 8 times a step: the cheap checks first.)"""
    if not (q.is_cpu and q.dtype is torch.float32 and k.dtype in _KV_DTYPES and v.dtype is k.dtype):
        return False
    qs, ks = q.shape, k.shape
    return (
        len(qs) == 4
        and qs[2] <= ATTEND_MAX_ROWS
        and qs[3] % 16 == 0
        and 16 <= qs[3] <= 128
        and ks == v.shape
        and ks[:2] == qs[:2]
        and ks[3] == qs[3]
        and ks[2] > 0
        and available()
        and q.stride(-1) == 1
        and k.stride(-1) == 1
        and v.stride(-1) == 1
        and eager_inference(q, k, v)
    )


def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(D)) v, unmasked (call where `attend_applies`): (N, H, R, D) fp32, laid out as
    (N, R, H, D) underneath so that merging the heads back is a view. bf16 K/V are read as the fp32 numbers
    they are: the result equals that of `attend(q, k.float(), v.float())` bit for bit."""
    N, H, R, D = q.shape
    S = k.shape[2]
    out = torch.empty(N, R, H, D, dtype=torch.float32)
    _c.attend(
        q.data_ptr(),
        k.data_ptr(),
        v.data_ptr(),
        out.data_ptr(),
        N,
        H,
        R,
        S,
        D,
        q.stride()[:3],
        k.stride()[:3],
        v.stride()[:3],
        (R * H * D, D, H * D),
        torch.get_num_threads(),
        k.dtype is torch.bfloat16,
    )
    return out.transpose(1, 2)


def weight_kind(pack: Tensor) -> int:
    """The kernel's kind of a `packed.pack_half` pack: 0 fp16 numbers, 1 bf16, 2 int8 with per-output scales."""
    return _KINDS[pack.dtype]


def layer_pointers(norms: list[Tensor], weights: list[Tensor], biases: list[Tensor | None]) -> tuple:
    """What `decoder_layer` takes of a layer: the three LayerNorms' weights and biases in order (fp32), the packs
    of `packed.pack_half` (qkv stacked, out, cross query, cross out, fc1, fc2) and their fp32 biases (None:
    none), as the kernel's 18 pointers. The tensors must outlive every call given these."""
    w = [t.data_ptr() for t in weights]
    b = [None if t is None else t.data_ptr() for t in biases]
    n = [t.data_ptr() for t in norms]
    return (
        n[0], n[1], w[0], b[0], w[1], b[1], n[2], n[3], w[2], b[2], w[3], b[3],
        n[4], n[5], w[4], b[4], w[5], b[5],
    )  # fmt: skip


def decoder_layer(
    x: Tensor,
    layer: tuple,
    kind: int,
    eps: float,
    segments: list[tuple[int, int, int, tuple[Tensor, Tensor, Tensor, Tensor]]],
    n_head: int,
    n_mlp: int,
) -> None:
    """One decoder layer's step for one new token per row, `x` (M, C) fp32 contiguous updated in place.

    layer: `layer_pointers` of the layer; kind: `weight_kind` of its packs; eps: its LayerNorms'; n_mlp: fc1's
    outputs. segments: (first row, rows, position, (k cache, v cache, cross k, cross v)) in row order, covering
    x: the rows' self-attention cache (rows, H, capacity, D) fp32, the new token's K/V written at `position`,
    and their windows' audio K/V (windows, H, S, D) fp32 or bf16, shared by the rows / windows rows of each
    window."""
    M, C = x.shape
    segs = tuple(
        (
            row0,
            rows,
            position,
            ck.shape[0],
            ck.shape[2],
            kc.data_ptr(),
            vc.data_ptr(),
            ck.data_ptr(),
            cv.data_ptr(),
            *kc.stride()[:3],
            *vc.stride()[:3],
            *ck.stride()[:3],
            *cv.stride()[:3],
            ck.dtype == torch.bfloat16,
        )  # fmt: skip
        for row0, rows, position, (kc, vc, ck, cv) in segments
    )
    dims = (M, C, n_head, C // n_head, n_mlp, kind)
    _c.decoder_layer((x.data_ptr(), *layer), dims, segs, eps, torch.get_num_threads())


def logits_apply(logits: Tensor, *more: Tensor) -> bool:
    """Whether `logits_step` and `beam_top` take these: `logits` (B, V) fp32 and `more` contiguous CPU tensors,
    outside autograd and torch.compile, where the kernels run."""
    return (
        logits.is_cpu
        and logits.dtype is torch.float32
        and logits.dim() == 2
        and logits.is_contiguous()
        and all(t.is_contiguous() for t in more)
        and available()
        and eager_inference(logits)
    )


def logits_step(
    logits: Tensor,
    tokens: Tensor,
    forced: Tensor,
    rules: tuple[int, int, int, int, int],
    blank: Tensor,
    suppress: Tensor,
    next_tokens: Tensor | None = None,
) -> None:
    """A decode step's logits processors (decoding/logits.py: suppress blank, suppress tokens, the timestamp
    rules) on `logits` (B, V) fp32 in place, in one call; with `next_tokens` (B,) int64, each row's argmax after
    them written there too (the first largest). tokens: (B, T) int64, every token so far; forced: (B,) uint8
    written (1: the timestamp rules forced a timestamp). rules: (sample_begin, timestamp_begin or -1 for no
    timestamp rules, eot, no_timestamps or -1, max_initial_timestamp_index or -1); blank / suppress: int64 ids
    (blank only at T == sample_begin). All contiguous CPU tensors. The masks are the processors' exactly; the
    timestamps' logsumexp differs from torch's by the rounding of another exp."""
    B, V = logits.shape
    _c.logits_step(
        logits.data_ptr(),
        tokens.data_ptr(),
        forced.data_ptr(),
        None if next_tokens is None else next_tokens.data_ptr(),
        blank.data_ptr() if blank.numel() else None,
        suppress.data_ptr() if suppress.numel() else None,
        B,
        V,
        tokens.shape[1],
        *rules,
        blank.numel(),
        suppress.numel(),
    )


def beam_top(logprobs: Tensor, sum_logprobs: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Each row's `n` (<= 64) largest values of `logprobs` (B, V) fp32 (the first index first among equal ones):
    (scores (B, n) fp32 = sum_logprobs (B,) + them, tokens (B, n) int64), best first: beam search's topk and
    sum in one pass (contiguous CPU tensors), the same numbers as torch's."""
    B, V = logprobs.shape
    scores = torch.empty(B, n, dtype=torch.float32)
    tokens = torch.empty(B, n, dtype=torch.long)
    _c.beam_top(
        logprobs.data_ptr(),
        sum_logprobs.data_ptr(),
        scores.data_ptr(),
        tokens.data_ptr(),
        B,
        V,
        n,
        torch.get_num_threads(),
    )
    return scores, tokens
