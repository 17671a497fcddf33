"""The CPU package: packed weights, the C kernels (each version the CPU runs), the explicit attention, and
the plain torch network against the accelerated one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import random_mel, tiny_fp16_valued_model

# -- packed weights and fused products --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_linear_equals_plain_and_follows_weight_changes(dtype):
    import copy

    from kvwhisper.cpu import packed

    if not packed._supported(dtype):
        pytest.skip(f"oneDNN packed inner product not available in {dtype} here")
    torch.manual_seed(0)
    lin = packed.PackedLinear(48, 80).to(dtype)
    rows = packed.HALF_MAX_ROWS // 3 + 1  # more rows than kernels.gemv takes (packed.HALF_MAX_ROWS): oneDNN
    x = torch.randn(3, rows, 48, dtype=dtype)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=0.1, rtol=0.02)
    with torch.no_grad():
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), **tol)
        assert lin.packed.tensor is not None
        lin.weight.mul_(-1)  # an in-place change (a state-dict load does this): repacked
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), **tol)
        packed.ENABLED = False
        try:
            assert torch.equal(lin(x), F.linear(x, lin.weight, lin.bias))
        finally:
            packed.ENABLED = True
    y = lin(x)  # with autograd: the plain path, gradients reach the parameters
    y.float().sum().backward()
    assert lin.weight.grad is not None
    assert copy.deepcopy(lin).packed.tensor is None  # the packed copy is never copied or pickled


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_products_equal_the_plain_ops(dtype):
    """q/k/v as one product, GELU and residual adds fused into the products: same results as the plain ops."""
    from kvwhisper.cpu import packed

    if not packed._supported(dtype):
        pytest.skip(f"oneDNN packed inner product not available in {dtype} here")
    torch.manual_seed(0)
    layers = [packed.PackedLinear(48, 48, bias=b).to(dtype) for b in (True, False, True)]
    rows = packed.HALF_MAX_ROWS // 3 + 1  # rows for oneDNN
    x, r = torch.randn(3, rows, 48, dtype=dtype), torch.randn(3, rows, 48, dtype=dtype)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=0.1, rtol=0.02)
    fused = packed.PackedWeight()
    with torch.no_grad():
        weights, biases = [m.weight for m in layers], [m.bias for m in layers]
        outs = packed.fused_linear(x, weights, biases, fused)
        assert fused.tensor is not None and len(outs) == 3
        for out, m in zip(outs, layers):
            torch.testing.assert_close(out, F.linear(x, m.weight, m.bias), **tol)
        layers[1].weight.mul_(2)  # a changed part is repacked
        torch.testing.assert_close(
            packed.fused_linear(x, weights, biases, fused)[1], F.linear(x, layers[1].weight), **tol
        )
        lin = layers[0]
        torch.testing.assert_close(lin(x, gelu=True), F.gelu(F.linear(x, lin.weight, lin.bias)), **tol)
        torch.testing.assert_close(lin(x, add=r), r + F.linear(x, lin.weight, lin.bias), **tol)
        for flags in ((False, True), (True, False)):  # plain path; packed but unfused path
            packed.ENABLED, packed.FUSE = flags
            try:
                torch.testing.assert_close(
                    lin(x, gelu=True), F.gelu(F.linear(x, lin.weight, lin.bias)), **tol
                )
                torch.testing.assert_close(lin(x, add=r), r + F.linear(x, lin.weight, lin.bias), **tol)
                for out, m in zip(packed.fused_linear(x, weights, biases, fused), layers):
                    torch.testing.assert_close(out, F.linear(x, m.weight, m.bias), **tol)
            finally:
                packed.ENABLED, packed.FUSE = True, True


# -- the C kernels, under each version this CPU runs -------------------------------------------------------


def _kernels_or_skip():
    from kvwhisper.cpu import kernels, packed

    if not kernels.available():
        why = (
            "the C kernels (kvwhisper.cpu._kernels) are not built, or this CPU runs neither their AVX-512 "
            "nor their AVX2 version"
        )
        if os.environ.get("KVWHISPER_EXPECT_KERNELS"):  # set by .ci/run: there it must run, not skip
            pytest.fail(f"{why} (KVWHISPER_EXPECT_KERNELS is set)")
        pytest.skip(why)
    return packed


# the CPU flags (/proc/cpuinfo) each version of the C kernels needs
_ISA_FLAGS = {"avx512": {"avx512f", "avx2", "f16c", "fma"}, "avx2": {"avx2", "f16c", "fma"}}


def _cpu_flags() -> set[str]:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())


@pytest.fixture(params=["avx512", "avx2"])
def kernel_isa(request):
    """Runs a test once per version of the C kernels (kernels.set_isa), skipping a version this CPU does not
    run: AVX-512's on an AVX2 CPU. With KVWHISPER_EXPECT_KERNELS, some version must run, and so must each
    one whose flags /proc/cpuinfo lists."""
    _kernels_or_skip()
    from kvwhisper.cpu import kernels

    if request.param not in kernels.isas():
        if os.environ.get("KVWHISPER_EXPECT_KERNELS") and _ISA_FLAGS[request.param] <= _cpu_flags():
            pytest.fail(f"the CPU has {sorted(_ISA_FLAGS[request.param])}, yet the kernels' isas() lack it")
        pytest.skip(f"this CPU does not run the kernels' {request.param} version")
    before = kernels.isa()
    kernels.set_isa(request.param)
    try:
        yield request.param
    finally:
        kernels.set_isa(before)


@pytest.mark.parametrize("rows", [1, 2, 5, 7, 16])
@pytest.mark.parametrize("n_out", [48, 64, 200])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_half_kernel_equals_plain_product_on_2_byte_weights(rows, n_out, dtype, kernel_isa):
    """fp32 weights that are fp16 numbers (as every Whisper checkpoint's are) go through kernels.gemv: fp32
    arithmetic over the weight read as fp16, equal to F.linear up to summation order; bias, residual add and
    GELU as in the plain ops; any number of outputs (groups of 64 padded). bf16 and fp16 weights are read as
    themselves against fp32 rows: F.linear of the same weight in fp32, and an fp32 result. Each version of the
    kernel (AVX-512, AVX2) this CPU runs."""
    packed = _kernels_or_skip()
    torch.manual_seed(0)
    lin = packed.PackedLinear(96, n_out).to(dtype)

    def plain(x):  # the product in fp32 of the weight as stored
        return F.linear(x, lin.weight.float(), lin.bias.float())

    with torch.no_grad():
        if dtype == torch.float32:
            lin.weight.copy_(lin.weight.half().float())
        x, r = torch.randn(rows, 1, 96), torch.randn(rows, 1, n_out)
        tol = dict(atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lin(x), plain(x), **tol)
        assert lin.packed.half is not None and lin.packed.tensor is None  # the kernel ran, not oneDNN
        stored = torch.float16 if dtype != torch.bfloat16 else torch.bfloat16
        assert lin.packed.half.dtype == stored and lin.packed.half.shape == (-(-n_out // 64), 96, 64)
        torch.testing.assert_close(lin(x, add=r), r + plain(x), **tol)
        torch.testing.assert_close(lin(x, gelu=True), F.gelu(plain(x)), **tol)
        lin.weight.mul_(-2)  # an in-place change: repacked (still fp16 numbers)
        torch.testing.assert_close(lin(x), plain(x), **tol)
        # the result does not depend on the thread count: each output is summed by one thread in one order
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            one = lin(x)
            torch.set_num_threads(2)
            assert torch.equal(lin(x), one)
        finally:
            torch.set_num_threads(threads)


@pytest.mark.parametrize("hidden", [16, 128, 256])
def test_lstm_kernel_equals_nn_lstm(hidden, kernel_isa):
    """kernels.lstm: nn.LSTM's recurrence (gates i, f, g, o) to fp32 rounding, its state carried from one call
    to the next as nn.LSTM's (h, c), saturated gates included; the same bits whatever the thread count. Each
    version of the kernel this CPU runs."""
    packed = _kernels_or_skip()
    kernels = packed.kernels
    torch.manual_seed(hidden)
    lstm = torch.nn.LSTM(24, hidden, batch_first=True)
    with torch.no_grad():
        lstm.bias_ih_l0[:hidden] += 30  # input gates saturated open for some units
        x = torch.randn(1, 300, 24) * 3
        want, (h_n, c_n) = lstm(x)
        w_t = lstm.weight_hh_l0.t().contiguous()
        bias = lstm.bias_ih_l0 + lstm.bias_hh_l0
        h, c = torch.zeros(hidden), torch.zeros(hidden)
        gates = torch.addmm(bias, x[0], lstm.weight_ih_l0.t())
        got = torch.cat([kernels.lstm(gates[:100], w_t, h, c), kernels.lstm(gates[100:], w_t, h, c)])
        torch.testing.assert_close(got, want[0], atol=2e-6, rtol=1e-5)
        torch.testing.assert_close(h, h_n.view(-1), atol=2e-6, rtol=1e-5)
        torch.testing.assert_close(c, c_n.view(-1), atol=2e-6, rtol=1e-5)
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            one = kernels.lstm(gates, w_t, torch.zeros(hidden), torch.zeros(hidden))
        finally:
            torch.set_num_threads(threads)
        assert torch.equal(one, kernels.lstm(gates, w_t, torch.zeros(hidden), torch.zeros(hidden)))
    assert kernels.lstm_applies(hidden) and not kernels.lstm_applies(hidden + 8)
    with pytest.raises(ValueError, match="shapes"):
        kernels.lstm(gates[:, :-1], w_t, h, c)


def test_half_kernel_applies_only_where_fp16_holds_the_weight_and_rows_are_few():
    packed = _kernels_or_skip()
    torch.manual_seed(0)
    lin = packed.PackedLinear(32, 40)
    x = torch.randn(3, 32)
    with torch.no_grad():
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), atol=1e-5, rtol=1e-5)
        assert lin.packed.half is None  # random fp32 weights are not fp16 numbers: oneDNN's product
        lin.weight.copy_(lin.weight.half().float())
        many = torch.randn(packed.HALF_MAX_ROWS + 1, 32)
        torch.testing.assert_close(lin(many), F.linear(many, lin.weight, lin.bias), atol=1e-5, rtol=1e-5)
        assert lin.packed.half is None  # more rows than a decode step: a matrix product, oneDNN's
        lin(x)
        assert lin.packed.half is not None
        packed.HALF = False
        try:
            lin.packed.half_key = lin.packed.half = None
            torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), atol=1e-5, rtol=1e-5)
            assert lin.packed.half is None
        finally:
            packed.HALF = True
    # qkv as one product: the stacked pack, a missing bias as zeros
    layers = [packed.PackedLinear(32, 32, bias=b) for b in (True, False, True)]
    fused = packed.PackedWeight()
    with torch.no_grad():
        for m in layers:
            m.weight.copy_(m.weight.half().float())
        outs = packed.fused_linear(x, [m.weight for m in layers], [m.bias for m in layers], fused)
        assert fused.half is not None
        for out, m in zip(outs, layers):
            torch.testing.assert_close(out, F.linear(x, m.weight, m.bias), atol=1e-5, rtol=1e-5)


def test_kernels_refuse_bad_calls():
    _kernels_or_skip()
    from kvwhisper.cpu.kernels import _c

    with pytest.raises(TypeError, match="10 arguments"):
        _c.gemv(1, 2, 3)
    with pytest.raises(ValueError, match="null pointer or empty shape"):
        _c.gemv(0, 0, 0, None, None, 1, 1, 1, 0, 1)
    with pytest.raises(TypeError, match="15 arguments"):
        _c.attend(1, 2)
    s3 = (1, 1, 1)
    with pytest.raises(ValueError, match="head size"):
        _c.attend(1, 1, 1, 1, 1, 1, 1, 1, 24, s3, s3, s3, s3, 1, 0)
    with pytest.raises(TypeError, match="3-tuples"):
        _c.attend(1, 1, 1, 1, 1, 1, 1, 1, 64, (1, 1), s3, s3, s3, 1, 0)


@pytest.mark.parametrize("rows", [1, 3, 5, 8])
@pytest.mark.parametrize("keys", [1, 15, 17, 200, 1500])
@pytest.mark.parametrize("head", [64, 32])
def test_attention_kernel_equals_sdpa(rows, keys, head, kernel_isa):
    """Few-query attention (a decode step) through the C kernel: SDPA's result to fp32 rounding, for any
    number of keys (tails of 16 included), head sizes 32 and 64, and thread counts 1 and 2 alike; each
    version of the kernel (AVX-512, AVX2) this CPU runs."""
    from kvwhisper.cpu import kernels

    torch.manual_seed(keys + rows)
    q, k, v = torch.randn(2, 3, rows, head), torch.randn(2, 3, keys, head) * 3, torch.randn(2, 3, keys, head)
    assert kernels.attend_applies(q, k, v)
    expected = F.scaled_dot_product_attention(q, k, v)
    out = kernels.attend(q, k, v)
    torch.testing.assert_close(out, expected, atol=2e-6, rtol=1e-5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(kernels.attend(q, k, v), out)
    finally:
        torch.set_num_threads(threads)
    # bf16 K/V (a bf16 model's audio K/V) are read as the fp32 numbers they are: the same bits
    k16, v16 = k.bfloat16(), v.bfloat16()
    assert kernels.attend_applies(q, k16, v16) and not kernels.attend_applies(q, k16, v)
    assert torch.equal(kernels.attend(q, k16, v16), kernels.attend(q, k16.float(), v16.float()))


def test_attention_kernel_reads_views_where_they_lie(kernel_isa):
    """The decode step's operands are views: q from the fused q/k/v product (rows of 3C), K/V the filled
    part of a static cache buffer (head stride = capacity * D). The kernel reads them in place; the output
    merges back to (B, T, C) as a view."""
    from kvwhisper.cpu import kernels

    torch.manual_seed(0)
    B, H, D, cap, end = 2, 4, 64, 40, 23
    qkv = torch.randn(B, 1, 3 * H * D)
    q = qkv[..., : H * D].view(B, 1, H, D).transpose(1, 2)  # (B, H, 1, D), not contiguous
    buf_k, buf_v = torch.randn(B, H, cap, D), torch.randn(B, H, cap, D)
    k, v = buf_k[:, :, :end], buf_v[:, :, :end]
    assert not q.is_contiguous() and not k.is_contiguous()
    assert kernels.attend_applies(q, k, v)
    out = kernels.attend(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=2e-6, rtol=1e-5)
    merged = out.transpose(1, 2).reshape(B, 1, H * D)
    assert merged.data_ptr() == out.data_ptr()  # a view: no copy to merge the heads
    # what the kernel does not take: too many rows, other dtypes, a head size not a multiple of 16
    assert not kernels.attend_applies(
        torch.randn(1, 1, 9, 64), torch.randn(1, 1, 5, 64), torch.randn(1, 1, 5, 64)
    )
    assert not kernels.attend_applies(q.double(), k.double(), v.double())
    assert not kernels.attend_applies(q[..., :24], k[..., :24], v[..., :24])


def test_kernel_versions_give_the_same_bits():
    """The AVX-512 and AVX2 kernels are one width-generic code: the same operations in the same order in each
    lane, the same tree for the horizontal sums. Products (fp16 and bf16 weights, rows past a pass of 5,
    outputs past a group of 64) and attention (key tails of 16) are bit for bit the same in both."""
    packed = _kernels_or_skip()
    from kvwhisper.cpu import kernels

    runs = kernels.isas()
    if len(runs) < 2:
        pytest.skip(f"this CPU runs only the kernels' {runs[0]} version: nothing to compare it with")
    torch.manual_seed(0)
    x, add, bias = torch.randn(7, 384), torch.randn(7, 200), torch.randn(200)
    weights = [torch.randn(200, 384).half().float(), torch.randn(200, 384).bfloat16()]
    packs = [packed.pack_half(w, [bias], [200]) for w in weights]
    q, k, v = torch.randn(2, 6, 5, 64), torch.randn(2, 6, 1500, 64) * 3, torch.randn(2, 6, 1500, 64)
    before = kernels.isa()
    results = {}
    try:
        for name in runs:
            kernels.set_isa(name)
            results[name] = [kernels.gemv(x, w, b, 200, add) for w, b in packs] + [kernels.attend(q, k, v)]
    finally:
        kernels.set_isa(before)
    for name in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[runs[0]], results[name]))


def test_kernel_version_is_chosen_by_set_isa_and_the_environment():
    """By default the best version this CPU runs; kernels.set_isa chooses another (None: the best again), and
    so does KVWHISPER_KERNEL_ISA, read at import. Names other than the versions are refused, and so is a
    version this CPU does not run."""
    _kernels_or_skip()
    import subprocess
    import sys

    from kvwhisper.cpu import kernels

    runs = kernels.isas()
    assert runs and set(runs) <= set(kernels.ISAS) and list(runs) == [i for i in kernels.ISAS if i in runs]
    assert kernels.isa() == (os.environ.get("KVWHISPER_KERNEL_ISA") or runs[0])
    before = kernels.isa()
    try:
        kernels.set_isa(runs[-1])
        assert kernels.isa() == runs[-1]
        kernels.set_isa(None)
        assert kernels.isa() == runs[0]
        with pytest.raises(ValueError, match="not one of"):
            kernels.set_isa("sse2")
        with pytest.raises(ValueError, match="not one of"):
            kernels._c.set_isa("sse2")
        for missing in set(kernels.ISAS) - set(runs):  # AVX-512's on an AVX2 CPU
            with pytest.raises(RuntimeError, match="does not run"):
                kernels.set_isa(missing)
            assert kernels.isa() == runs[0]
    finally:
        kernels.set_isa(before)
    code = "from kvwhisper.cpu import kernels; print(kernels.isa())"
    env = {**os.environ, "KVWHISPER_KERNEL_ISA": "avx2"}
    repo = Path(__file__).resolve().parents[1]  # the source tree, as this process imports it
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["avx2"]


@pytest.mark.slow
def test_real_decoder_weights_are_fp16_numbers_and_the_kernel_keeps_greedy_tokens(jfk_path):
    """The bundled tiny.en is fp16 numbers, so every decoder product of a decode step runs through the
    kernel; the greedy tokens are those of the oneDNN products and SDPA."""
    import kvwhisper

    packed = _kernels_or_skip()
    model = kvwhisper.load_model("tiny.en", device="cpu")
    mel = kvwhisper.log_mel_spectrogram(kvwhisper.pad_or_trim(kvwhisper.load_audio(jfk_path)))
    from kvwhisper.cpu import kernels

    with_kernel = model.decode(mel)
    assert model.decoder.ops.output.half is not None
    assert all(b.mlp[0].packed.half is not None for b in model.decoder.blocks)
    for off in ("HALF", "ENABLED"):  # the products alone, then both kernels, through torch's operations
        module = packed if off == "HALF" else kernels
        setattr(module, off, False)
        try:
            without = model.decode(mel)
        finally:
            setattr(module, off, True)
        assert with_kernel.tokens == without.tokens
        assert abs(with_kernel.avg_logprob - without.avg_logprob) < 1e-4


# -- attention and the plain network -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_encoder_self_attention_head_by_head_matches_sdpa(dtype, monkeypatch):
    from kvwhisper.cpu import CPUOps, amx

    monkeypatch.setattr(amx, "ENABLED", False)  # bf16 on an AMX CPU: tests below
    self_attend = CPUOps().self_attend

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 1100, 64, dtype=dtype) for _ in range(3))
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    with torch.no_grad():
        got = self_attend(q, k, v)
    assert got.dtype == dtype and got.shape == q.shape
    tol = dict(atol=2e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(got.float(), expected, **tol)
    with torch.no_grad():  # shorter than a chunk: SDPA itself
        assert torch.equal(
            self_attend(q[:, :, :100], k[:, :, :100], v[:, :, :100]),
            F.scaled_dot_product_attention(q[:, :, :100], k[:, :, :100], v[:, :, :100]),
        )


def test_explicit_attention_matches_sdpa_in_bf16():
    from kvwhisper.cpu import CPUOps

    attend = CPUOps().attend

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 6, n, 64, dtype=torch.bfloat16) for n in (5, 300, 300))
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    torch.testing.assert_close(attend(q, k, v).float(), expected, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(attend(q.float(), k.float(), v.float()), expected)  # fp32: SDPA itself


@pytest.mark.slow
def test_plain_network_gives_the_accelerated_tokens(jfk_path):
    """load_model on CPU applies kvwhisper.cpu (packed Linear layers, CPUOps); `use_plain()` runs the network
    as plain torch: the same greedy and beam tokens, log-probs to fp32 rounding."""
    import kvwhisper
    from kvwhisper.cpu import CPUOps, PackedLinear
    from kvwhisper.model.network import TORCH_OPS, Linear

    model = kvwhisper.load_model("tiny.en", device="cpu")
    mel = kvwhisper.log_mel_spectrogram(kvwhisper.pad_or_trim(kvwhisper.load_audio(jfk_path)))
    assert isinstance(model.decoder.ops, CPUOps) and isinstance(model.decoder.blocks[0].mlp[0], PackedLinear)
    accelerated = [model.decode(mel, beam_size=b) for b in (None, 5)]
    names = [n for n, _ in model.named_parameters()]
    model.use_plain()
    assert model.decoder.ops is TORCH_OPS and model.encoder.blocks[0].attn.ops is TORCH_OPS
    assert all(type(m) is Linear for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert [n for n, _ in model.named_parameters()] == names  # the same parameters under the same names
    plain = [model.decode(mel, beam_size=b) for b in (None, 5)]
    for a, p in zip(accelerated, plain):
        assert a.tokens == p.tokens and a.text == p.text
        assert abs(a.avg_logprob - p.avg_logprob) < 1e-4


# -- the encoder's bf16 self-attention on AMX ----------------------------------------------------------------

needs_amx = pytest.mark.skipif(
    not __import__("kvwhisper.cpu.amx", fromlist=["available"]).available(),
    reason="this CPU (or this build) has no AMX-BF16: the fp32 head-by-head path runs instead",
)


def _fused_qkv(N, H, T, seed=0, scale=2.0):
    """q, k, v as the encoder has them: (N, H, T, 64) bf16 views of one fused (N, T, 3 * H * 64) product."""
    g = torch.Generator().manual_seed(seed)
    qkv = (torch.randn(N, T, 3 * H * 64, generator=g) * scale).bfloat16()
    return [t.view(N, T, H, 64).transpose(1, 2) for t in qkv.split(H * 64, dim=-1)]


@needs_amx
@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("N,H,T,S", [(1, 6, 1500, 1500), (2, 3, 37, 70), (1, 2, 33, 64), (1, 1, 5, 1)])
def test_amx_attention_matches_fp32_attention(N, H, T, S, split, monkeypatch):
    from kvwhisper.cpu import amx

    monkeypatch.setattr(amx, "SPLIT", split)
    q, k, v = _fused_qkv(N, H, max(T, S))
    q = q[:, :, :T]
    k, v = k[:, :, :S], v[:, :, :S]
    assert amx.applies(q, k, v)
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    with torch.inference_mode():
        got = amx.attend(q, k, v)
    assert got.dtype == torch.bfloat16 and got.shape == q.shape
    assert got.transpose(1, 2).is_contiguous()  # laid out (N, T, H, D): the head merge is a view
    # the result rounded to bf16 once: at most one bf16 step (2^-8 relative) from fp32 attention, plus the
    # probabilities' rounding
    torch.testing.assert_close(got.float(), expected, atol=2e-2, rtol=8e-3)


@needs_amx
def test_amx_split_probabilities_are_closer_to_fp32_than_one_bf16(monkeypatch):
    from kvwhisper.cpu import amx

    q, k, v = _fused_qkv(1, 4, 1500)
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    err = {}
    with torch.inference_mode():
        for split in (True, False):
            monkeypatch.setattr(amx, "SPLIT", split)
            err[split] = (amx.attend(q, k, v).float() - expected).abs().mean().item()
        flash = (F.scaled_dot_product_attention(q, k, v).float() - expected).abs().mean().item()
    # what is left with split probabilities is the output's own rounding to bf16: err of rounding `expected`
    rounding = (expected.bfloat16().float() - expected).abs().mean().item()
    assert err[True] < 1.02 * rounding
    assert err[False] > 1.05 * rounding and flash > 1.05 * rounding


@needs_amx
def test_amx_attention_does_not_depend_on_the_thread_count():
    from kvwhisper.cpu import amx

    q, k, v = _fused_qkv(2, 3, 300)
    threads = torch.get_num_threads()
    try:
        with torch.inference_mode():
            torch.set_num_threads(1)
            one = amx.attend(q, k, v)
            torch.set_num_threads(2)
            two = amx.attend(q, k, v)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_amx_applies_only_to_bf16_heads_of_64_outside_autograd(monkeypatch):
    from kvwhisper.cpu import CPUOps, amx

    q, k, v = _fused_qkv(1, 2, 40)
    assert not amx.applies(q.float(), k.float(), v.float())
    assert not amx.applies(q[..., :32], k[..., :32], v[..., :32])
    with torch.enable_grad():  # where autograd would record the product
        assert not amx.applies(q.detach().clone().requires_grad_(), k, v)
    # switched off (a CPU without AMX takes the same path): the encoder attends in fp32 head by head
    monkeypatch.setattr(amx, "ENABLED", False)
    q, k, v = _fused_qkv(1, 2, 600)
    assert not amx.applies(q, k, v)
    with torch.inference_mode():
        got = CPUOps().self_attend(q, k, v)
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    torch.testing.assert_close(got.float(), expected, atol=2e-2, rtol=8e-3)


def test_amx_kernel_refuses_bad_calls():
    from kvwhisper.cpu import amx

    if amx._c is None:
        pytest.skip("the AMX extension is not built here")
    with pytest.raises(TypeError):
        amx._c.attend(1, 2, 3)
    with pytest.raises(TypeError):
        amx._c.attend(0, 0, 0, 0, 1, 1, 1, 1, 0.125, (1, 1), (1, 1, 1), (1, 1, 1), (1, 1, 1), True, 1)


# -- a decoder layer's step in one call --------------------------------------------------------------------


def _decode_steps(model, windows: int, group: int, steps: int = 6, cross_dtype=None):
    """Logits of a prompt and `steps` random one-token steps for `windows` x `group` rows, and the self K/V."""
    rows = windows * group
    with torch.inference_mode():
        cache = model.new_cache(rows)
        model.fill_cross(cache, model.embed_audio(random_mel(n=windows)))
        if cross_dtype is not None:
            cache.set_cross(cache.cross_k.to(cross_dtype), cache.cross_v.to(cross_dtype))
        logits = [model.decoder(torch.tensor([[50257, 50362]]).repeat(rows, 1), cache, positions=(-1,))[0]]
        g = torch.Generator().manual_seed(0)
        for _ in range(steps):
            tokens = torch.randint(0, 50000, (rows, 1), generator=g)
            logits.append(model.decoder(tokens, cache, positions=(-1,))[0])
    return torch.cat(logits, 1), cache.self_k[:, :, :, : cache.position].clone()


@pytest.mark.parametrize("cross_dtype", [None, torch.bfloat16])
@pytest.mark.parametrize("windows,group", [(1, 1), (2, 1), (1, 5), (2, 3)])
def test_decoder_layer_in_one_call_equals_op_by_op(windows, group, cross_dtype, monkeypatch):
    from kvwhisper.cpu import kernels, ops

    if not kernels.available():
        pytest.skip("the C kernels are not built or this CPU runs neither version")
    model = tiny_fp16_valued_model()
    calls = []
    one_call = kernels.decoder_layer
    monkeypatch.setattr(kernels, "decoder_layer", lambda *a: calls.append(1) or one_call(*a))
    fused = _decode_steps(model, windows, group, cross_dtype=cross_dtype)
    assert len(calls) == 6 * model.dims.n_text_layer  # every one-token step of every layer, not the prompt
    monkeypatch.setattr(ops, "BLOCK_STEP", False)
    op_by_op = _decode_steps(model, windows, group, cross_dtype=cross_dtype)
    assert len(calls) == 6 * model.dims.n_text_layer
    torch.testing.assert_close(fused[0], op_by_op[0], atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(fused[1], op_by_op[1], atol=1e-5, rtol=1e-5)


def test_decoder_layer_does_not_apply_where_its_kernels_cannot(monkeypatch):
    from kvwhisper.cpu import kernels

    model = tiny_fp16_valued_model()
    block = model.decoder.blocks[0]
    with torch.inference_mode():
        cache = model.new_cache(9)
        model.fill_cross(cache, model.embed_audio(random_mel(n=1)))
        x = torch.randn(9, 1, model.dims.n_text_state)
        ops = model.decoder.ops
        assert (
            ops.block_step(block, x, [(slice(0, 9), cache.layer(0), 0)]) is None
        )  # 9 rows of a window: 8 at most
        two = cache.rows(slice(0, 2)).layer(0)
        assert (
            ops.block_step(block, x[:2].repeat(1, 2, 1), [(slice(0, 2), two, 0)]) is None
        )  # two tokens a row
        monkeypatch.setattr(kernels, "ENABLED", False)
        assert ops.block_step(block, x[:1], [(slice(0, 1), cache.rows(slice(0, 1)).layer(0), 0)]) is None


def test_decoder_layer_kernel_refuses_bad_calls():
    from kvwhisper.cpu import kernels

    if kernels._c is None:
        pytest.skip("the C kernels are not built here")
    with pytest.raises(TypeError):
        kernels._c.decoder_layer((0,) * 18, (1,) * 6, ((0,) * 22,), 1e-5, 1)
    with pytest.raises(ValueError):
        kernels._c.decoder_layer((0,) * 19, (1,) * 6, ((0,) * 22,), 1e-5, 1)
    ok = (1,) * 19  # pointers are not read before the shapes are checked
    one = (0, 1, 0, 1, 1500, 1, 1, 1, 1, *(1,) * 12, 0)
    with pytest.raises(ValueError, match="do not cover"):
        kernels._c.decoder_layer(ok, (2, 64, 4, 16, 256, 0), (one,), 1e-5, 1)
    with pytest.raises(ValueError, match="bad segment"):
        kernels._c.decoder_layer(
            ok, (9, 64, 4, 16, 256, 0), ((0, 9, 0, 1, 1500, 1, 1, 1, 1, *(1,) * 12, 0),), 1e-5, 1
        )
    with pytest.raises(ValueError, match="bad shape"):
        kernels._c.decoder_layer(ok, (1, 64, 4, 8, 256, 0), (one,), 1e-5, 1)


# -- int8 weights in the decode-step kernel ----------------------------------------------------------------


@pytest.mark.parametrize("rows", [1, 3, 5, 7])
@pytest.mark.parametrize("n_out", [48, 200])
def test_int8_kernel_equals_the_dequantized_product(rows, n_out, kernel_isa):
    """pack_half(int8=True): each output row quantized (scale = max |w| / 127); the kernel's product equals the
    product with the dequantized weight to fp32 rounding, in each version of the kernel."""
    from kvwhisper.cpu import kernels, packed

    g = torch.Generator().manual_seed(rows * n_out)
    w = torch.randn(n_out, 384, generator=g).bfloat16()
    bias = torch.randn(n_out, generator=g)
    x = torch.randn(rows, 384, generator=g)
    pack, b = packed.pack_half(w, [bias], [n_out], int8=True)
    assert pack.dtype == torch.uint8
    scale = w.float().abs().amax(dim=1) / 127
    dequantized = torch.round(w.float() / scale[:, None]).clamp(-127, 127) * scale[:, None]
    assert (dequantized - w.float()).abs().max() <= scale.max() / 2 + 1e-6
    got = kernels.gemv(x, pack, b, n_out)
    torch.testing.assert_close(got, F.linear(x, dequantized, bias), atol=2e-5, rtol=1e-5)


def test_int8_packs_only_where_asked_and_survive_a_copy():
    import copy

    from kvwhisper import cpu
    from kvwhisper.cpu import kernels

    if not kernels.available():
        pytest.skip("the C kernels are not built or this CPU runs neither version")
    model = tiny_fp16_valued_model()
    cpu.accelerate(model, int8=True)
    fc1 = model.decoder.blocks[0].mlp[0]
    with torch.no_grad():
        assert fc1.packed.get_half([fc1.weight], [fc1.bias])[0].dtype == torch.uint8
        assert model.decoder.ops.output.int8
        assert copy.deepcopy(model).decoder.blocks[0].mlp[0].packed.int8
        cpu.accelerate(model)  # int8 off again: the 2-byte pack
        assert fc1.packed.get_half([fc1.weight], [fc1.bias])[0].dtype == torch.float16


@pytest.mark.slow
def test_int8_model_transcribes_the_words_of_fp32(jfk_path):
    import kvwhisper
    from kvwhisper.cpu import kernels
    from kvwhisper.normalizers import EnglishTextNormalizer

    if not kernels.available():
        pytest.skip("the C kernels are not built or this CPU runs neither version")
    int8 = kvwhisper.load_model("tiny.en", dtype="int8")
    assert int8.dtype == torch.bfloat16 and int8.decoder.ops.output.int8
    fp32 = kvwhisper.load_model("tiny.en")
    normalize = EnglishTextNormalizer()
    texts = [normalize(kvwhisper.transcribe(m, jfk_path, language="en")["text"]) for m in (int8, fp32)]
    assert texts[0] == texts[1] and "fellow americans" in texts[0]


def test_int8_is_refused_off_the_cpu():
    import kvwhisper

    with pytest.raises(ValueError, match="int8"):
        kvwhisper.load_model("tiny.en", device="meta", dtype="int8")


def test_decoder_layer_call_follows_weight_changes(monkeypatch):
    """What the one-call step keeps of a block is remade when its weights change in place (a new state dict)."""
    from kvwhisper.cpu import kernels, ops

    if not kernels.available():
        pytest.skip("the C kernels are not built or this CPU runs neither version")
    model = tiny_fp16_valued_model()
    before = _decode_steps(model, 1, 2)
    with torch.no_grad():
        fc1 = model.decoder.blocks[1].mlp[0]
        fc1.weight.mul_(0.5)  # still fp16 numbers
        model.decoder.blocks[0].attn_ln.bias.add_(0.25)
    after = _decode_steps(model, 1, 2)
    monkeypatch.setattr(ops, "BLOCK_STEP", False)
    op_by_op = _decode_steps(model, 1, 2)
    assert not torch.allclose(before[0], after[0])
    torch.testing.assert_close(after[0], op_by_op[0], atol=2e-4, rtol=1e-4)


# -- a step's logits: the processors, greedy's and beam search's choice ---------------------------------------


def test_logits_kernels_in_each_version(kernel_isa):
    """In each version of the kernels: the one-call processors leave the processors' logits, the argmax after
    them is torch's, and beam_top gives topk's tokens and the summed scores."""
    from types import SimpleNamespace

    from kvwhisper.cpu import kernels
    from kvwhisper.decoding.logits import ApplyTimestampRules, FusedProcessors, SuppressTokens

    V, tb = 1000, 800
    tok = SimpleNamespace(timestamp_begin=tb, eot=700, no_timestamps=799)
    processors = [SuppressTokens([3, 9]), ApplyTimestampRules(tok, 2, 50)]
    fused = FusedProcessors.of(processors)
    g = torch.Generator().manual_seed(7)
    for n in range(6):
        tokens = torch.randint(0, V, (3, 2 + n), generator=g)
        logits = torch.randn(3, V, generator=g) * 4
        expected = logits.clone()
        for p in processors:
            p.apply(expected, tokens)
        argmax = fused.apply(logits, tokens, argmax=True)
        assert torch.equal(logits, expected)
        assert torch.equal(argmax, expected.argmax(-1))
        logprobs = torch.log_softmax(expected, -1)
        scores, top = kernels.beam_top(logprobs, torch.full((3,), -0.5), 6)
        want_scores, want_top = logprobs.topk(6)
        assert torch.equal(top, want_top) and torch.equal(scores, -0.5 + want_scores)
