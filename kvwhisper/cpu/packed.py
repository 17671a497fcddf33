"""oneDNN-packed weights for the model's linear layers on CPU (speed only; the parameters are unchanged).

A cached decode step multiplies one row per beam by every decoder weight: matrix-vector products whose
speed is the memory bandwidth they reach. oneDNN's inner product on a weight reordered once into its blocked
layout (`torch.ops.mkldnn._reorder_linear_weight`, what Inductor's weight prepacking uses) reads it faster than
`F.linear` does, in fp32 and in bf16, and the encoder's fp32 matrix products (1500 rows) gain too
(benchmarks/RESULTS.md, "Decode step code paths"). The packed copy is made on first use and again whenever the
weight changes (another dtype, device, or an in-place load: the key is the storage pointer and version).

It is used on CPU, in fp32, bf16 and fp16 (bf16 and fp16 only where oneDNN runs them natively), outside
autograd and outside torch.compile; everywhere else, and when `ENABLED` is False, the plain `F.linear` runs.
Results agree with `F.linear` to fp32 rounding (oneDNN sums in another order), not bit for bit.
Costs: one extra copy of the linear weights in memory.

2-byte weights (`HALF`): Whisper's checkpoints hold fp16 numbers, so an fp32 model's weights are fp16
values in 4 bytes each. A product of up to `HALF_MAX_ROWS` rows (a decode step: one row per beam and window;
a prompt) over an fp32 weight that fp16 holds exactly runs through the C kernel of kernels.py instead: the weight
packed once as fp16 and widened to fp32 in registers, the arithmetic fp32's, half the bytes read. A bf16 or
fp16 weight goes through the same kernel as itself, against fp32 rows. It needs the compiled extension (built at
install where a C compiler is, optional) and an x86-64 CPU with AVX-512, or with AVX2, F16C and FMA; elsewhere,
for fp32 weights fp16 does not hold, and for more rows (the encoder), oneDNN as above.

int8 weights (`PackedWeight.int8`, set by `kvwhisper.cpu.accelerate(model, int8=True)`, which load_model's
`dtype="int8"` asks for): the same kernel reads each weight as one byte, quantized per output row, a quarter of
fp32's bytes and half of bf16's; only the products that go through the kernel (a decode step's, a prompt's, the
output projection) see them. Not exact: a model's own choice.

Fusion (`FUSE`): `fused_linear` packs several weights stacked (the q/k/v projections: one product instead of
three), and `linear(..., gelu=True)` / `linear(..., add=r)` fuse the MLP's GELU and the residual adds into the
oneDNN call as post-ops. The encoder gains from it; a decode step, bound by the bytes of weight it reads,
about nothing (benchmarks/RESULTS.md).

Biases wider than their weight (fp32 under bf16 weights: model/registry.py's `exact` bf16 model): where the
product's output is added to a residual of the bias's dtype (the encoder's stream), the product runs without
it and the bias joins the add in that dtype; where the output stays in the weight's dtype (q/k/v, the MLP's
first product), the bias is rounded to it once and kept (`PackedWeight.narrow`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import kernels

ENABLED = True  # set False to measure or debug the plain F.linear path
FUSE = True  # set False to measure the packed path without fused q/k/v, GELU and residual adds
# the batch size oneDNN is told to expect when it lays a weight out. In fp32 any size of 8 or more lays it out
# faster than 1, whatever the rows actually multiplied (one row, a beam's five, the encoder's 1500); bf16 is the
# same either way (benchmarks/RESULTS.md)
PACK_BATCH = 64
HALF = True  # set False to measure or debug without the 2-byte-weight kernel (kernels.gemv)
# products of up to this many rows run through the kernel: a decode step of a batch of windows with their beams,
# and a prompt (at most 224 tokens). The kernel computes each row on its own, in one order, so a row's result
# does not depend on the rows beside it (decoding/batch.py: batched equals alone); it is as fast as oneDNN's
# product at these sizes (benchmarks/RESULTS.md). The encoder's products (1500 rows a window) are oneDNN's.
HALF_MAX_ROWS = 256

# weight dtypes kernels.gemv reads as 2 bytes: fp32 weights that are fp16 numbers, bf16 and fp16 weights
_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_support: dict[torch.dtype, bool] = {}


def _supported(dtype: torch.dtype) -> bool:
    """Whether oneDNN's packed inner product works here in this dtype (tried once on a tiny matrix)."""
    if dtype not in _support:
        ok = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        if ok and dtype == torch.bfloat16:
            ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if ok and dtype == torch.float16:
            ok = bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
        if ok:
            try:
                w, x = torch.ones(4, 8, dtype=dtype), torch.ones(1, 8, dtype=dtype)
                with torch.inference_mode(False), torch.no_grad():
                    y = torch.ops.mkldnn._linear_pointwise(
                        x, torch.ops.mkldnn._reorder_linear_weight(w, PACK_BATCH), None, "none", [], ""
                    )
                ok = bool((y.float() == 8).all())
            except (RuntimeError, NotImplementedError):
                ok = False
        _support[dtype] = ok
    return _support[dtype]


def enabled(dtype: torch.dtype, *tensors: Tensor) -> bool:
    """Whether oneDNN products are used here in `dtype` on these CPU tensors: not under torch.compile, not
    where autograd would record them (the same rule as the packed weights)."""
    return ENABLED and kernels.eager_inference(*tensors) and _supported(dtype)


def _key(tensors: list[Tensor | None]) -> tuple:
    """What a packed copy was made from: each tensor's storage, version (in-place changes), dtype and shape."""
    return tuple(
        (t.data_ptr(), t._version, t.dtype, tuple(t.shape)) if t is not None else None for t in tensors
    )


class PackedWeight:
    """A weight's packed copy, remade when the weight changes. Not saved, copied or pickled.

    `get` packs one weight; `get_fused` packs several stacked along the output axis (the q/k/v projections
    as one matrix) and also returns their biases stacked (zeros where a layer has none).
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.tensor: Tensor | None = None
        self.bias: Tensor | None = None
        self._parts: list[PackedWeight] = []  # with FUSE off: a packed weight per part of a fused product
        self.half_key: tuple | None = None
        # the 2-byte pack for kernels.gemv (None: not packed, or fp16 does not hold the fp32 weight)
        self.half: Tensor | None = None
        self.half_bias: Tensor | None = None
        self.int8 = False  # pack for kernels.gemv as int8 with per-output scales instead (`pack_half`)
        self.narrow_key: tuple | None = None
        self.narrow_bias: Tensor | None = None  # a wider bias rounded to the weight's dtype (`narrow`)

    @staticmethod
    def applies(weight: Tensor) -> bool:
        return (
            weight.device.type == "cpu"
            and weight.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and enabled(weight.dtype, weight)
        )

    def get(self, weight: Tensor) -> Tensor | None:
        """The packed copy of `weight` (out_features, in_features), or None where the plain path must run."""
        if not self.applies(weight):
            return None
        key = _key([weight])
        if key != self.key:
            with torch.inference_mode(False), torch.no_grad():
                self.tensor = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACK_BATCH)
            self.key = key
        return self.tensor

    def get_fused(self, weights: list[Tensor], biases: list[Tensor | None]) -> tuple[Tensor, Tensor]:
        """The packed copy of the weights stacked (sum of out_features, in_features) and their stacked bias
        (call where `applies(weights[0])`)."""
        key = _key([*weights, *biases])
        if key != self.key:
            with torch.inference_mode(False), torch.no_grad():
                w = torch.cat([t.detach() for t in weights])
                self.bias = torch.cat(
                    [
                        torch.zeros(t.shape[0], dtype=t.dtype) if b is None else b.detach().to(t.dtype)
                        for t, b in zip(weights, biases)
                    ]
                )
                self.tensor = torch.ops.mkldnn._reorder_linear_weight(w, PACK_BATCH)
            self.key = key
        return self.tensor, self.bias

    def get_half(self, weights: list[Tensor], biases: list[Tensor | None]) -> tuple[Tensor, Tensor] | None:
        """The 2-byte pack (`pack_half`) of the weights stacked along the output axis (one weight: a list of
        one) and their stacked fp32 bias (zeros where a layer has none), or None where the kernel does not
        apply: not fp32 or bf16 on CPU, an fp32 weight fp16 does not hold exactly, no kernel here, under
        autograd or torch.compile."""
        w0 = weights[0]
        if not kernels.eager_inference(*weights):  # first: nothing below is for torch.compile to trace
            return None
        if not (HALF and w0.dtype in _KERNEL_DTYPES and w0.device.type == "cpu" and kernels.available()):
            return None
        key = (*_key([*weights, *biases]), self.int8)
        if key != self.half_key:
            with torch.inference_mode(False), torch.no_grad():
                self.half, self.half_bias = pack_half(
                    torch.cat([w.detach() for w in weights]) if len(weights) > 1 else w0.detach(),
                    [b.detach() if b is not None else None for b in biases],
                    [w.shape[0] for w in weights],
                    int8=self.int8,
                )
            self.half_key = key
        return None if self.half is None else (self.half, self.half_bias)

    def narrow(self, bias: Tensor, dtype: torch.dtype) -> Tensor:
        """`bias` rounded to `dtype`, made once while the bias stays as it is."""
        key = (*_key([bias]), dtype)
        if key != self.narrow_key:
            self.narrow_bias, self.narrow_key = bias.detach().to(dtype), key
        return self.narrow_bias

    def parts(self, n: int) -> list[PackedWeight]:
        """n packed weights of their own, for running a fused product's parts one by one."""
        if len(self._parts) != n:
            self._parts = [PackedWeight() for _ in range(n)]
        return self._parts

    def __getstate__(self) -> dict:
        return {"int8": self.int8}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
        self.int8 = state.get("int8", False)


def pack_half(
    weight: Tensor, biases: list[Tensor | None], sizes: list[int], *, int8: bool = False
) -> tuple[Tensor | None, Tensor | None]:
    """`weight` (N, K) as kernels.gemv's layout, (ceil(N / 64), K, 64) numbers zero-padded: an fp32 weight as
    fp16 (None if fp16 does not hold it exactly), a bf16 or fp16 weight as itself; and the biases of its parts
    (`sizes` rows each) as one fp32 vector (None if all are None). Returns (None, None) where it does not apply.

    With `int8`: each output row quantized to int8, symmetric (scale = its largest |weight| / 127), the layout's
    bytes followed by the N scales as fp32 bytes, all in one uint8 tensor."""
    bias = None
    if any(b is not None for b in biases):
        bias = torch.cat([torch.zeros(n) if b is None else b.float() for n, b in zip(sizes, biases)])
    N, K = weight.shape
    groups = -(-N // 64)
    if int8:
        w = weight.float()
        scale = (w.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
        q = torch.zeros(groups * 64, K, dtype=torch.int8)
        q[:N] = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
        body = q.view(groups, 64, K).transpose(1, 2).contiguous().view(torch.uint8).reshape(-1)
        return torch.cat([body, scale.contiguous().view(torch.uint8)]), bias
    if weight.dtype in (torch.bfloat16, torch.float16):
        narrow = weight
    else:
        narrow = weight.to(torch.float16)
        # not fp16 numbers (or out of fp16's range): oneDNN's product
        if not torch.equal(narrow.float(), weight):
            return None, None
    padded = torch.zeros(groups * 64, K, dtype=narrow.dtype)
    padded[:N] = narrow
    return padded.view(groups, 64, K).transpose(1, 2).contiguous(), bias


def _rows(x: Tensor) -> int:
    return x.numel() // x.shape[-1] if x.shape[-1] else 0


def linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    packed: PackedWeight,
    *,
    gelu: bool = False,
    add: Tensor | None = None,
) -> Tensor:
    """`F.linear(x, weight, bias)`, then GELU (exact, erf) with `gelu`, or `add + that` with `add`.

    Through kernels.gemv for a few rows where it applies (`HALF`): x in fp32 and an fp32 result, whatever the
    weight's dtype (a bf16 weight's rows are not rounded), the add fused into the kernel. Otherwise `x` is cast
    to the weight's dtype first; `add` may be in another dtype (the result is then in the wider one); through
    the packed weight where it applies, the GELU or the add fused into the same oneDNN call. A bias wider than
    the weight: see the module docstring.
    """
    if 0 < _rows(x) <= HALF_MAX_ROWS and (h := packed.get_half([weight], [bias])) is not None:
        x = x.float()  # fp32 rows, also for a bf16 weight: only the weight is rounded
        fused_add = (
            add is not None
            and not gelu
            and add.dtype == torch.float32
            and add.shape == (*x.shape[:-1], weight.shape[0])
        )
        y = kernels.gemv(x, h[0], h[1], weight.shape[0], add if fused_add else None)
        if gelu:
            y = F.gelu(y)
        return y if add is None or fused_add else add + y
    x = x.to(weight.dtype)
    if bias is not None and bias.dtype != weight.dtype:  # wider than the weight
        if add is not None and not gelu and add.dtype == bias.dtype:
            return add_bias(add, linear(x, weight, None, packed), bias)
        bias = packed.narrow(bias, weight.dtype)
    w = packed.get(weight)
    fused_gelu = w is not None and FUSE and gelu
    if w is None:
        y = F.linear(x, weight, bias)
    elif FUSE and add is not None and add.dtype == x.dtype and add.shape == (*x.shape[:-1], weight.shape[0]):
        return torch.ops.mkldnn._linear_pointwise.binary(x, add.contiguous(), w, bias, "add")
    else:
        post = ("gelu", "none") if fused_gelu else ("none", "")  # (attr, algorithm: "none" = exact erf GELU)
        y = torch.ops.mkldnn._linear_pointwise(x, w, bias, post[0], [], post[1])
    if gelu and not fused_gelu:
        y = F.gelu(y)
    return y if add is None else add + y


def fused_linear(
    x: Tensor, weights: list[Tensor], biases: list[Tensor | None], packed: PackedWeight
) -> list[Tensor]:
    """`[F.linear(x, w, b) for w, b in zip(weights, biases)]` as one product where the packed path applies
    (the results are then views of one output)."""
    if 0 < _rows(x) <= HALF_MAX_ROWS and (h := packed.get_half(weights, biases)) is not None:
        y = kernels.gemv(x.float(), h[0], h[1], sum(w.shape[0] for w in weights))
        return list(y.split([w.shape[0] for w in weights], dim=-1))
    x = x.to(weights[0].dtype)
    if not PackedWeight.applies(weights[0]):
        return [F.linear(x, w, None if b is None else b.to(w.dtype)) for w, b in zip(weights, biases)]
    if not FUSE:  # each product through its own packed weight
        return [linear(x, w, b, p) for w, b, p in zip(weights, biases, packed.parts(len(weights)))]
    w, b = packed.get_fused(weights, biases)
    y = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
    return list(y.split([w.shape[0] for w in weights], dim=-1))


def add_bias(add: Tensor, y: Tensor, bias: Tensor) -> Tensor:
    """`add + y + bias` in the dtype of `add` and `bias` (y narrower: a product's output)."""
    return torch.add(add, y).add_(bias)


class PackedLinear(nn.Linear):
    """A Linear layer of the network (same parameters, same names) that multiplies through its packed weight
    where it applies: `forward(x, gelu=True)` and `forward(x, add=r)` take the network's `Linear` arguments and
    fuse them into the product. `stacked` holds the packed copy of a group of layers multiplied as one (the
    q/k/v projections, see ops.py), kept on the group's first layer."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.packed = PackedWeight()
        self.stacked = PackedWeight()

    @classmethod
    def adopt(cls, layer: nn.Linear) -> PackedLinear:
        """A PackedLinear holding `layer`'s own parameters (no copy)."""
        new = cls(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        new.weight, new.bias = layer.weight, layer.bias
        return new

    def forward(self, x: Tensor, *, gelu: bool = False, add: Tensor | None = None) -> Tensor:
        return linear(x, self.weight, self.bias, self.packed, gelu=gelu, add=add)
