"""Engine tests on tiny random weights: the cache, each logits processor, the choosers, and equivalences.

Fast (seconds): no real weights needed. Real-weight parity with the reference is in test_parity.py.
"""

from __future__ import annotations

import math
import os
from dataclasses import FrozenInstanceError
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from helpers import random_mel, reference_copy, tiny_random_model

from kvwhisper.decoding import DecodingOptions, DecodingTask, decode
from kvwhisper.decoding.choosers import BeamSearchChooser, GreedyChooser, rank_candidates
from kvwhisper.decoding.logits import ApplyTimestampRules, SuppressBlank, SuppressTokens
from kvwhisper.model import KVCache

NEG = float("-inf")


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


# -- equivalences at tiny random sizes ---------------------------------------------------------------------


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


@pytest.mark.parametrize("options", [dict(beam_size=3), dict(temperature=0.7, best_of=3)])
def test_first_step_feeds_one_row_per_window(model, mels, options):
    """The rows of a window are copies until the first step: it feeds one per window, and every row's cache,
    logits and no-speech probability are what feeding every row gives."""
    task = DecodingTask(model, DecodingOptions(sample_len=4, **options))
    features = task.audio_features(mels[:2])
    tokens = torch.tensor([task.initial_tokens]).repeat(2, 1)
    fed = []
    state = task.start(features, tokens)
    plain = task.start(features, tokens)
    plain.runner.group = 1  # feeds all 6 rows
    forward = state.runner.forward
    state.runner.forward = lambda new, *a: fed.append(new.shape[0]) or forward(new, *a)
    with torch.no_grad():
        logits, _ = state.runner.logits(state.tokens, positions=(0, -1))
        expected, _ = plain.runner.logits(plain.tokens, positions=(0, -1))
    assert fed == [2]  # one row per window, not 2 * 3
    assert state.runner.cache.shared == tokens.shape[1]  # the prompt: left alone by beam reorders
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    p = state.runner.cache.position
    assert p == tokens.shape[1]
    torch.testing.assert_close(state.runner.cache.self_k[:, :, :, :p], plain.runner.cache.self_k[:, :, :, :p])
    torch.testing.assert_close(state.runner.cache.self_v[:, :, :, :p], plain.runner.cache.self_v[:, :, :, :p])


@pytest.mark.parametrize("beam_size", [None, 3])
def test_batch_equals_single(model, mels, beam_size):
    opts = DecodingOptions(sample_len=10, beam_size=beam_size)
    batch = decode(model, mels, opts)
    for i in range(mels.shape[0]):
        single = decode(model, mels[i], opts)
        assert single.tokens == batch[i].tokens


def test_beam_search_matches_reference(model, mels):
    import whisper

    ref = reference_copy(model)
    for i in range(2):
        ours = decode(model, mels[i], DecodingOptions(beam_size=4, sample_len=10))
        theirs = whisper.decode(
            ref, mels[i], whisper.DecodingOptions(beam_size=4, sample_len=10, fp16=False, language="en")
        )
        assert ours.tokens == theirs.tokens
        assert math.isclose(ours.avg_logprob, theirs.avg_logprob, abs_tol=1e-4)


def test_greedy_matches_reference_with_prompt_and_prefix(model, mels):
    import whisper

    ref = reference_copy(model)
    opts = dict(sample_len=8, prompt="hello there", prefix="And so")
    ours = decode(model, mels[0], DecodingOptions(**opts))
    theirs = whisper.decode(ref, mels[0], whisper.DecodingOptions(fp16=False, language="en", **opts))
    assert ours.tokens == theirs.tokens and ours.text == theirs.text


def test_bf16_close_to_fp32(mels):
    fp32 = tiny_random_model(0)
    bf16 = tiny_random_model(0, dtype=torch.bfloat16)
    tokens = torch.tensor([[50257, 50362, 400, 1000]])
    with torch.no_grad():
        a, b = fp32(mels[:1], tokens), bf16(mels[:1], tokens)
    assert b.dtype == torch.float32  # logits are returned in fp32 whatever the weights
    assert (a - b).abs().max() < 0.1 * a.abs().max()
    assert bf16.decoder.ln.weight.dtype == torch.float32  # LayerNorm parameters stay fp32
    # on CPU the decoder's residual stream stays fp32 (only the products round to bf16); the cache is bf16
    assert bf16.decoder.embed(tokens, 0).dtype == torch.float32
    assert bf16.new_cache(1).self_k.dtype == torch.bfloat16
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


# -- logits processors on hand-built sequences -------------------------------------------------------------

TB, EOT, NO_TS = 100, 50, 99  # a toy vocabulary: text < 50, eot 50, specials 51..99, timestamps 100..119
V = 120


def _apply(processor, rows: list[list[int]], logits: torch.Tensor | None = None) -> torch.Tensor:
    """Apply to default logits where one text token clearly beats the timestamps (rule 4 stays out of the way)."""
    tokens = torch.tensor(rows)
    if logits is None:
        logits = torch.zeros(len(rows), V)
        logits[:, :TB] = 5.0
    logits = logits.clone()
    processor.apply(logits, tokens)
    return logits


def test_suppress_blank_only_at_first_sampled_position():
    p = SuppressBlank(SimpleNamespace(encode=lambda text: [220], eot=50256), sample_begin=3)
    logits = torch.zeros(2, 51864)
    tokens = torch.tensor([[1, 2, 3], [4, 5, 6]])
    p.apply(logits, tokens)
    assert logits[:, [220, 50256]].eq(NEG).all() and logits.isinf().sum() == 4
    later = torch.zeros(1, 51864)
    p.apply(later, torch.tensor([[1, 2, 3, 7]]))
    assert not later.isinf().any()


def test_suppress_tokens_mask():
    p = SuppressTokens([3, 7, 7, 11], n_vocab=20)
    logits = _apply_any(p, torch.zeros(2, 20))
    assert logits.isinf().nonzero()[:, 1].tolist() == [3, 7, 11, 3, 7, 11]


def _apply_any(p, logits):
    p.apply(logits, torch.zeros(logits.shape[0], 1, dtype=torch.long))
    return logits


def _ts_rules(sample_begin=1, max_initial=None):
    return ApplyTimestampRules(
        SimpleNamespace(timestamp_begin=TB, eot=EOT, no_timestamps=NO_TS), sample_begin, max_initial
    )


def test_timestamp_rule_first_token_is_timestamp_within_max_initial():
    out = _apply(_ts_rules(sample_begin=1, max_initial=5), [[7]])
    allowed = (~out[0].isinf()).nonzero().squeeze(1).tolist()
    assert allowed == list(range(TB, TB + 6))


def test_timestamp_rule_after_pair_close_text_must_follow():
    # sampled: <ts 3> text <ts 5> <ts 5>?  -> last two are timestamps: no timestamp next
    out = _apply(_ts_rules(), [[7, TB + 3, 10, TB + 5, TB + 5]])
    assert out[0, TB:].isinf().all() and not out[0, :TB].isinf().all()
    assert out[0, NO_TS] == NEG


def test_timestamp_rule_after_lone_timestamp_no_text():
    # sampled: <ts 3> text <ts 5> -> a lone timestamp: text forbidden, eot allowed, timestamps >= 5 allowed
    out = _apply(_ts_rules(), [[7, TB + 3, 10, TB + 5]])
    assert out[0, :EOT].isinf().all() and out[0, EOT] == 5.0
    assert out[0, TB : TB + 5].isinf().all() and out[0, TB + 5 :].isfinite().all()


def test_timestamp_rule_monotonic_after_text():
    # sampled: <ts 3> text -> timestamps must be > 3? no: >= 4 after text (strictly after the last one)
    out = _apply(_ts_rules(), [[7, TB + 3, 10]])
    assert out[0, TB : TB + 4].isinf().all() and out[0, TB + 4 :].isfinite().all()
    assert out[0, :EOT].isfinite().all()


def test_timestamp_rule_rows_are_independent():
    out = _apply(_ts_rules(), [[7, TB + 3, 10, TB + 5], [7, TB + 3, 10, 11]])
    assert out[0, :EOT].isinf().all() and not out[1, :EOT].isinf().any()


def test_timestamp_rule_forces_timestamp_when_mass_wins():
    logits = torch.zeros(2, V)
    logits[0, TB:] = 2.0  # 20 timestamps of e^2 vs text tokens of e^0 each: timestamps' total mass wins
    logits[1, 5] = 10.0  # one text token dominates
    p = _ts_rules()
    out = _apply(p, [[7, 10, 11], [7, 10, 11]], logits)
    assert p.forced.tolist() == [True, False]
    assert out[0, :TB].isinf().all() and not out[0, TB:].isinf().any()
    assert not out[1, :TB].isinf().all()


# -- choosers ---------------------------------------------------------------------------------------------


def test_greedy_chooser_keeps_finished_rows_finished():
    chooser = GreedyChooser(0.0, eot=EOT)
    tokens = torch.tensor([[1, 2], [1, EOT]])
    logits = torch.zeros(2, V)
    logits[:, 9] = 5.0
    sum_lp = torch.zeros(2)
    new, sources, completed = chooser.update(tokens, logits, sum_lp)
    assert new[:, -1].tolist() == [9, EOT] and sources is None and not completed
    assert sum_lp[0] < 0 and sum_lp[1] == 0  # a finished row accumulates nothing


def test_beam_chooser_first_step_dedups_identical_beams_and_records_eot():
    chooser = BeamSearchChooser(beam_size=2, eot=EOT)
    chooser.reset(1)
    tokens = torch.tensor([[1, 2], [1, 2]])  # identical beams, as at the first step
    logits = torch.full((2, V), -10.0)
    logits[:, EOT] = 3.0  # best: eot -> finished, not a beam
    logits[:, 4] = 2.0
    logits[:, 5] = 1.0
    sum_lp = torch.zeros(2)
    new, sources, completed = chooser.update(tokens, logits, sum_lp)
    assert new[:, -1].tolist() == [4, 5]  # two distinct continuations, not [4, 4]
    assert sources.tolist() == [0, 0]
    assert list(chooser.finished[0]) == [(1, 2, EOT)] and not completed


def test_rank_candidates_length_penalty():
    tokens = [[torch.tensor([1, 2, 3, 4]), torch.tensor([1])]]
    assert rank_candidates(tokens, [[-2.0, -1.0]], None) == [0]  # -0.5 per token beats -1.0
    assert rank_candidates(tokens, [[-2.0, -1.0]], 0.0) == [1]  # no length normalization


# -- options ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(beam_size=2, best_of=2, temperature=0.5), "can't be given together"),
        (dict(best_of=2), "not compatible"),
        (dict(patience=2.0), "requires beam_size"),
        (dict(length_penalty=2.0), "between 0 and 1"),
        (dict(kv_cache="sometimes"), "kv_cache: must be"),
        (dict(task="summarize"), "task: must be"),
        (dict(temperature=-1.0), "temperature"),
        (dict(sample_len=1000), "sample_len"),
    ],
)
def test_bad_options_raise(model, mels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        decode(model, mels[0], DecodingOptions(**kwargs))


def test_options_and_results_are_frozen(model, mels):
    with pytest.raises(FrozenInstanceError):
        DecodingOptions().beam_size = 3
    result = decode(model, mels[0], DecodingOptions(sample_len=3))
    with pytest.raises(FrozenInstanceError):
        result.text = "x"
    assert set(result.to_dict()) >= {"tokens", "text", "avg_logprob", "no_speech_prob", "compression_ratio"}


def test_sampling_best_of_runs_and_is_seeded(model, mels):
    torch.manual_seed(1)
    a = decode(model, mels[0], DecodingOptions(temperature=1.0, best_of=3, sample_len=6))
    torch.manual_seed(1)
    b = decode(model, mels[0], DecodingOptions(temperature=1.0, best_of=3, sample_len=6))
    assert a.tokens == b.tokens and a.temperature == 1.0 and len(a.tokens) <= 6


# -- CPU speed paths: packed weights, explicit attention, compiled step ----------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_linear_equals_plain_and_follows_weight_changes(dtype):
    import copy

    from kvwhisper.cpu import packed

    if not packed._supported(dtype):
        pytest.skip(f"oneDNN packed inner product not available in {dtype} here")
    torch.manual_seed(0)
    lin = packed.PackedLinear(48, 80).to(dtype)
    x = torch.randn(3, 7, 48, dtype=dtype)  # more rows than kernels.gemv takes (packed.HALF_MAX_ROWS): oneDNN
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
    x, r = torch.randn(3, 7, 48, dtype=dtype), torch.randn(3, 7, 48, dtype=dtype)  # rows for oneDNN
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
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_half_kernel_equals_plain_product_on_2_byte_weights(rows, n_out, dtype, kernel_isa):
    """fp32 weights that are fp16 numbers (as every Whisper checkpoint's are) go through kernels.gemv: fp32
    arithmetic over the weight read as fp16, equal to F.linear up to summation order; bias, residual add and
    GELU as in the plain ops; any number of outputs (groups of 64 padded). bf16 weights are read as bf16
    against fp32 rows: F.linear of the same weight in fp32, and an fp32 result. Each version of the kernel
    (AVX-512, AVX2) this CPU runs."""
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
        stored = torch.float16 if dtype == torch.float32 else torch.bfloat16
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
    with pytest.raises(TypeError, match="14 arguments"):
        _c.attend(1, 2)
    s3 = (1, 1, 1)
    with pytest.raises(ValueError, match="head size"):
        _c.attend(1, 1, 1, 1, 1, 1, 1, 1, 24, s3, s3, s3, s3, 1)
    with pytest.raises(TypeError, match="3-tuples"):
        _c.attend(1, 1, 1, 1, 1, 1, 1, 1, 64, (1, 1), s3, s3, s3, 1)


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_encoder_self_attention_head_by_head_matches_sdpa(dtype):
    from kvwhisper.cpu import CPUOps

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
def test_compiled_step_gives_the_eager_tokens(model, mels):
    """DecodingOptions(compile=True): torch.compile of the one-token step (compiles once, ~30 s on CPU)."""
    eager = decode(model, mels[:2], DecodingOptions(sample_len=10))
    compiled = decode(model, mels[:2], DecodingOptions(sample_len=10, compile=True))
    for a, b in zip(eager, compiled):
        assert a.tokens == b.tokens
        assert math.isclose(a.avg_logprob, b.avg_logprob, abs_tol=1e-4)


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
