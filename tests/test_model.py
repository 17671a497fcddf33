"""The network and its KV cache on tiny random weights: cache writes, rewinds and reorders, cached against
uncached forwards, the reference's decoder, and the dtypes.

Real-weight parity with the reference is in test_parity.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import random_mel, reference_copy, tiny_random_model

from kvwhisper import cpu
from kvwhisper.decoding import DecodingOptions, DecodingTask, decode
from kvwhisper.model import KVCache


@pytest.fixture(scope="module")
def model():
    return tiny_random_model(0)


@pytest.fixture(scope="module")
def mels():
    return random_mel(1, n=3)


# -- KV cache ---------------------------------------------------------------------------------------------


def test_cache_write_advance_rewind_reorder():
    cache = KVCache(n_layer=2, batch=3, n_head=2, head_dim=4, capacity=8)
    assert cache.self_k.shape == (2, 3, 2, 8, 4) and cache.position == 0 and not cache.has_cross
    for row in range(3):  # write distinct values per row at positions 0..2
        cache.self_k[:, row, :, :3] = row + 1
        cache.self_v[:, row, :, :3] = -(row + 1)
    cache.advance(3)
    cache.reorder(torch.tensor([2, 2, 0]))
    assert cache.self_k[:, 0, :, :3].eq(3).all() and cache.self_k[:, 1, :, :3].eq(3).all()
    assert cache.self_k[:, 2, :, :3].eq(1).all() and cache.self_v[:, 2, :, :3].eq(-1).all()
    assert cache.self_k[:, :, :, 3:].eq(0).all()  # only the filled prefix moves
    cache.reorder(torch.tensor([0, 2, 2]))  # rows 0 and 2 keep their place: only row 1 is moved
    assert [cache.self_k[0, r, 0, 0, 0].item() for r in range(3)] == [3, 1, 1]
    assert [cache.self_v[1, r, 1, 2, 3].item() for r in range(3)] == [-3, -1, -1]
    before = cache.self_k.clone()
    cache.reorder(torch.arange(3))  # the identity moves nothing
    assert torch.equal(cache.self_k, before)
    cache.rewind(1)
    assert cache.position == 1
    with pytest.raises(ValueError, match="cannot rewind"):
        cache.rewind(2)
    with pytest.raises(ValueError, match="KV cache full"):
        cache.advance(8)
    cache.set_cross(torch.zeros(2, 1, 2, 5, 4), torch.zeros(2, 1, 2, 5, 4))
    assert cache.lengths() == {"self": 1, "cross": 5, "layers": 2}
    cache.reset()
    assert cache.position == 0 and not cache.has_cross


def test_cache_is_written_in_place_not_reallocated(model, mels):
    """The static buffers are the same storage before and after decoding steps."""
    task = DecodingTask(model, DecodingOptions(sample_len=4))
    features = task.audio_features(mels[:1])
    state = task.start(features, torch.tensor([task.initial_tokens]))
    ptr = state.runner.cache.self_k.data_ptr()
    for _ in range(3):
        task.step(state)
    assert state.runner.cache.self_k.data_ptr() == ptr
    assert state.runner.cache.position == len(task.initial_tokens) + 2  # the last chosen token is not fed yet


def test_cross_kv_shared_across_beams_not_copied(model, mels):
    task = DecodingTask(model, DecodingOptions(beam_size=4, sample_len=3))
    features = task.audio_features(mels[:2])
    state = task.start(features, torch.tensor([task.initial_tokens] * 2))
    cache = state.runner.cache
    assert cache.batch == 8 and cache.cross_k.shape[1] == 2  # 2 windows x 4 beams; cross K/V once per window


# -- the network at tiny random sizes ----------------------------------------------------------------------


def test_decoder_matches_reference_implementation(model, mels):
    """Same random weights in the reference's model: identical logits (the architecture is the same)."""
    ref = reference_copy(model)
    tokens = torch.tensor([[50257, 50362, 400, 1000, 2000, 13]])
    with torch.no_grad():
        ours = model(mels[:1], tokens)
        theirs = ref(mels[:1], tokens)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode", ["self_only", "none"])
def test_cache_modes_identical(model, mels, mode):
    opts = dict(sample_len=12, without_timestamps=False)
    full = decode(model, mels, DecodingOptions(**opts))
    other = decode(model, mels, DecodingOptions(kv_cache=mode, **opts))
    for a, b in zip(full, other):
        assert a.tokens == b.tokens
        assert math.isclose(a.avg_logprob, b.avg_logprob, abs_tol=1e-4)


def test_cached_logits_equal_uncached_forward(model, mels):
    """Step-by-step cached logits equal a single uncached forward over the same tokens."""
    tokens = torch.tensor([[50257, 50362, 400, 1000, 2000, 13, 99, 7]])
    features = model.embed_audio(mels[:1])
    with torch.no_grad():
        full = model.logits(tokens, features)
        cache = model.new_cache(1)
        model.fill_cross(cache, features)
        first, _ = model.decoder(tokens[:, :3], cache)
        steps = [model.decoder(tokens[:, i : i + 1], cache)[0] for i in range(3, tokens.shape[1])]
    torch.testing.assert_close(torch.cat([first, *steps], dim=1), full, atol=1e-4, rtol=1e-4)


def test_multi_token_feed_after_prefix_is_causal(model, mels):
    """Feeding several tokens at a non-zero position (the masked path) equals feeding them one by one."""
    tokens = torch.tensor([[50257, 50362, 400, 1000, 2000, 13]])
    features = model.embed_audio(mels[:1])
    with torch.no_grad():
        c1 = model.new_cache(1)
        model.fill_cross(c1, features)
        model.decoder(tokens[:, :2], c1)
        chunk, _ = model.decoder(tokens[:, 2:], c1)
        full = model.logits(tokens, features)
    torch.testing.assert_close(chunk, full[:, 2:], atol=1e-4, rtol=1e-4)


def test_projecting_some_positions_equals_those_rows_of_all(model, mels):
    """`positions` projects only the rows asked for (the first step needs <|startoftranscript|> and the last)."""
    tokens = torch.tensor([[50257, 50362, 400, 1000, 2000, 13]])
    features = model.embed_audio(mels[:1])
    with torch.no_grad():
        full = model.logits(tokens, features)
        for positions in [(0, -1), (-1,), (2, 4, 5)]:
            cache = model.new_cache(1)
            model.fill_cross(cache, features)
            some, _ = model.decoder(tokens, cache, positions=positions)
            assert some.shape == (1, len(positions), full.shape[-1])
            assert cache.position == tokens.shape[1]  # every token's K/V is still written
            torch.testing.assert_close(some, full[:, list(positions)], atol=1e-5, rtol=1e-5)


def test_cache_rows_view_writes_into_the_parent():
    cache = KVCache(n_layer=2, batch=6, n_head=2, head_dim=4, capacity=8)
    view = cache.rows(slice(None, None, 3))  # rows 0 and 3
    assert view.batch == 2 and view.position == 0
    view.self_k[:, :, :, :2] = 1.0
    view.advance(2)
    assert view.position == 2 and cache.position == 0  # positions move on their own
    assert cache.self_k[:, [0, 3], :, :2].eq(1).all()
    assert cache.self_k[:, [1, 2, 4, 5]].eq(0).all()


def test_reorder_leaves_the_shared_prompt_alone():
    """Positions below `shared` are the same in every row of a window: a reorder copies only the rest."""
    cache = KVCache(n_layer=1, batch=3, n_head=1, head_dim=2, capacity=6)
    cache.self_k[:, :, :, :4] = torch.arange(3.0)[None, :, None, None, None]  # row r holds r everywhere
    cache.advance(4)
    cache.shared = 2
    cache.reorder(torch.tensor([2, 2, 0]))
    assert cache.self_k[0, :, 0, :2, 0].tolist() == [[0, 0], [1, 1], [2, 2]]  # untouched
    assert cache.self_k[0, :, 0, 2:4, 0].tolist() == [[2, 2], [2, 2], [0, 0]]  # reordered
    cache.rewind(1)
    assert cache.shared == 1  # what is rewound is no longer known to be shared
    cache.reset()
    assert cache.shared == 0


def test_bf16_close_to_fp32(mels):
    fp32 = tiny_random_model(0)
    bf16 = tiny_random_model(0, dtype=torch.bfloat16)
    tokens = torch.tensor([[50257, 50362, 400, 1000]])
    with torch.no_grad():
        a, b = fp32(mels[:1], tokens), bf16(mels[:1], tokens)
    assert b.dtype == torch.float32  # logits are returned in fp32 whatever the weights
    assert (a - b).abs().max() < 0.1 * a.abs().max()
    assert bf16.decoder.ln.weight.dtype == torch.float32  # LayerNorm parameters stay fp32
    # on CPU the decoder's residual stream and the cached K/V stay fp32 (only the products round to bf16)
    assert bf16.decoder.embed(tokens, 0).dtype == torch.float32
    assert bf16.new_cache(1).self_k.dtype == torch.float32
    assert bf16.use_plain().new_cache(1).self_k.dtype == torch.bfloat16  # plain torch: the weights' dtype
    cpu.accelerate(bf16)
    # the residual stream in bf16 (as before) is further from fp32 than the fp32 stream
    plain_embed = type(bf16.decoder).embed
    try:
        type(bf16.decoder).embed = lambda self, t, p: plain_embed(self, t, p).to(torch.bfloat16)
        with torch.no_grad():
            c = bf16(mels[:1], tokens)
    finally:
        type(bf16.decoder).embed = plain_embed
    assert (a - b).abs().mean() < (a - c).abs().mean()


def test_fp16_tiny_shapes_close_to_fp32(mels):
    """fp16 on CPU is slow: a 2-layer width-64 model, one short forward."""
    fp32 = tiny_random_model(0)
    fp16 = tiny_random_model(0, dtype=torch.float16)
    tokens = torch.tensor([[50257, 50362, 400]])
    with torch.no_grad():
        a, b = fp32(mels[:1], tokens), fp16(mels[:1], tokens)
    assert (a - b).abs().max() < 0.05 * a.abs().max()


# -- a bf16 model on the CPU keeps what bf16 would round where it costs no speed ------------------------------


def _exact_and_plain_bf16(tmp_path, monkeypatch):
    """The tiny fp16-valued model, and as load_model gives it in bf16 on this CPU: with the kernels (`exact`)
    and without them (every tensor bf16 but LayerNorm's)."""
    from helpers import tiny_fp16_valued_model, write_ct2

    import kvwhisper
    from kvwhisper.cpu import kernels

    if not kernels.available():
        pytest.skip("the C kernels are not built or this CPU runs neither version")
    fp32 = tiny_fp16_valued_model()
    write_ct2(fp32, tmp_path / "ct2")
    exact = kvwhisper.load_model(tmp_path / "ct2", dtype="bf16")
    with monkeypatch.context() as m:
        m.setattr(kernels, "ENABLED", False)
        plain = kvwhisper.load_model(tmp_path / "ct2", dtype="bf16")
    return fp32, exact, plain


def test_exact_bf16_model_holds_the_checkpoint_numbers_where_bf16_costs_no_speed(tmp_path, monkeypatch):
    """Encoder matrices and the audio K/V projections bf16 (products of many rows, on the matrix units); the
    decoder's other matrices and embeddings fp16, equal to the checkpoint's numbers; biases, the encoder's
    positional embedding and LayerNorm fp32. Without the kernels, the plain bf16 model."""
    fp32, exact, plain = _exact_and_plain_bf16(tmp_path, monkeypatch)
    assert exact.dtype == plain.dtype == torch.bfloat16
    ours = dict(exact.named_parameters()) | dict(exact.named_buffers())
    for name, ref in (dict(fp32.named_parameters()) | {"encoder.positional_embedding": None}).items():
        got = ours[name]
        layer_norm = "_ln." in name or name.startswith(("decoder.ln.", "encoder.ln_post."))
        if ref is None or name.endswith(".bias") or layer_norm:
            want = torch.float32
        elif name.startswith("encoder.") or ".cross_attn.key." in name or ".cross_attn.value." in name:
            want = torch.bfloat16
        else:
            want = torch.float16
        assert got.dtype == want, name
        if ref is not None and want != torch.bfloat16:
            assert torch.equal(got.float(), ref), name  # the checkpoint's numbers, unrounded
    for name, p in plain.named_parameters():
        layer_norm = "_ln." in name or name.startswith(("decoder.ln.", "encoder.ln_post."))
        assert p.dtype == (torch.float32 if layer_norm else torch.bfloat16), name


def test_exact_bf16_model_is_closer_to_fp32_than_plain_bf16(tmp_path, monkeypatch, mels):
    """The encoder's residual stream is fp32 (the biases' dtype) and so is its output; logits and encoder
    output both nearer fp32's than the all-bf16 model's; the plain network (`use_plain`) runs the same
    model too."""
    fp32, exact, plain = _exact_and_plain_bf16(tmp_path, monkeypatch)
    tokens = torch.tensor([[50257, 50362, 400, 1000, 23]])
    with torch.no_grad():
        f = {m: m.embed_audio(mels) for m in (fp32, exact, plain)}
        logits = {m: m.logits(tokens.expand(len(mels), -1), f[m]) for m in (fp32, exact, plain)}
        assert f[exact].dtype == torch.float32 and f[plain].dtype == torch.bfloat16
        enc_err = {m: (f[m].float() - f[fp32]).abs().mean() for m in (exact, plain)}
        err = {m: (logits[m] - logits[fp32]).abs().mean() for m in (exact, plain)}
        assert enc_err[exact] < 0.8 * enc_err[plain] and err[exact] < 0.8 * err[plain]
        exact.use_plain()
        again = exact.logits(tokens.expand(len(mels), -1), exact.embed_audio(mels))
        assert (again - logits[fp32]).abs().mean() < err[plain]
