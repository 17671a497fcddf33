"""Decode semantics on tiny random weights and hand-built sequences: each logits processor, the choosers, the
options, batching, sampling and the compiled step.
"""

from __future__ import annotations

import math
from dataclasses import FrozenInstanceError
from types import SimpleNamespace

import pytest
import torch
from helpers import random_mel, reference_copy, tiny_random_model

from kvwhisper.cpu import kernels
from kvwhisper.decoding import DecodingOptions, DecodingTask, decode
from kvwhisper.decoding.choosers import BeamSearchChooser, GreedyChooser, greedy_step, rank_candidates
from kvwhisper.decoding.logits import ApplyTimestampRules, FusedProcessors, SuppressBlank, SuppressTokens

NEG = float("-inf")


@pytest.fixture(scope="module")
def model():
    return tiny_random_model(0)


@pytest.fixture(scope="module")
def mels():
    return random_mel(1, n=3)


# -- the decode loop at tiny random sizes ------------------------------------------------------------------


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
    p = SuppressBlank(SimpleNamespace(encode=lambda text, **kw: [220], eot=50256), sample_begin=3)
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


@pytest.mark.slow
def test_compiled_step_gives_the_eager_tokens(model, mels):
    """DecodingOptions(compile=True): torch.compile of the one-token step (compiles once, ~30 s on CPU)."""
    eager = decode(model, mels[:2], DecodingOptions(sample_len=10))
    compiled = decode(model, mels[:2], DecodingOptions(sample_len=10, compile=True))
    for a, b in zip(eager, compiled):
        assert a.tokens == b.tokens
        assert math.isclose(a.avg_logprob, b.avg_logprob, abs_tol=1e-4)


# -- the processors and greedy's choice in one call (FusedProcessors) ------------------------------------------


def _tokenizer_like(tb, eot, no_ts, blank=220):
    return SimpleNamespace(
        timestamp_begin=tb, eot=eot, no_timestamps=no_ts, encode=lambda text, **kw: [blank]
    )


def _random_case(g, rows, V, tb, sample_begin, n_sampled):
    """Rows of prompt tokens then `n_sampled` sampled ones, a mix of text and (non-decreasing or not)
    timestamps; logits spread enough that either side of rule 4 happens."""
    tokens = torch.randint(0, tb, (rows, sample_begin + n_sampled), generator=g)
    is_ts = torch.rand(rows, n_sampled, generator=g) < 0.4
    ts = torch.randint(tb, V, (rows, n_sampled), generator=g)
    tokens[:, sample_begin:] = torch.where(is_ts, ts, tokens[:, sample_begin:])
    logits = torch.randn(rows, V, generator=g) * torch.rand(rows, 1, generator=g) * 8
    logits[:, tb:] += torch.randn(rows, 1, generator=g) * 4  # timestamps' mass from far below to far above
    return tokens, logits


@pytest.mark.skipif(not kernels.available(), reason="the CPU kernels are not built or do not run here")
@pytest.mark.parametrize("max_initial", [None, 3])
@pytest.mark.parametrize("with_blank", [True, False])
def test_fused_processors_mask_what_the_processors_mask(max_initial, with_blank):
    """Random rows (first sampled position and later, timestamps paired, lone, decreasing): the one-call
    processors leave exactly the logits the processors one by one leave, and force the same rows."""
    V, tb, eot, no_ts, sample_begin = 1200, 1000, 900, 999, 3
    tok = _tokenizer_like(tb, eot, no_ts)
    blank = SuppressBlank(tok, sample_begin)
    processors = [blank] if with_blank else []
    processors += [
        SuppressTokens([5, 17, 17, 640, 950], n_vocab=V),
        ApplyTimestampRules(tok, sample_begin, max_initial),
    ]
    fused = FusedProcessors.of(processors)
    g = torch.Generator().manual_seed(0)
    forced_seen = set()
    for case in range(300):
        tokens, logits = _random_case(g, 4, V, tb, sample_begin, case % 7)
        expected = logits.clone()
        for p in processors:
            p.apply(expected, tokens)
        want_forced = processors[-1].forced.clone()
        assert fused.applies(logits, tokens)
        fused.apply(logits, tokens)
        assert torch.equal(logits, expected), case
        assert torch.equal(processors[-1].forced, want_forced), case
        forced_seen.update(want_forced.tolist())
    assert forced_seen == {True, False}


@pytest.mark.skipif(not kernels.available(), reason="the CPU kernels are not built or do not run here")
def test_fused_greedy_choice_equals_the_greedy_chooser():
    """The argmax found with the processors is greedy's (the first index among equal logits; ended rows too),
    and the step built on it (decoding/loop.py) gives the chooser's tokens and log-probs bit for bit."""
    V, tb, eot, no_ts, sample_begin = 1200, 1000, 900, 999, 2
    tok = _tokenizer_like(tb, eot, no_ts)
    processors = [SuppressTokens([5, 640], n_vocab=V), ApplyTimestampRules(tok, sample_begin, None)]
    fused = FusedProcessors.of(processors)
    chooser = GreedyChooser(0.0, eot=eot)
    g = torch.Generator().manual_seed(1)
    for case in range(200):
        tokens, logits = _random_case(g, 5, V, tb, sample_begin, 1 + case % 5)
        tokens[0, -1] = eot  # an ended row
        logits[1, 7] = logits[1, 8] = logits[1].max() + 1  # a tie: the first index wins
        expected, sums = logits.clone(), torch.full((5,), -1.5)
        for p in processors:
            p.apply(expected, tokens)
        want, _, _ = chooser.update(tokens, expected, sums)
        argmax = fused.apply(logits, tokens, argmax=True)
        assert torch.equal(argmax, expected.argmax(dim=-1)), case
        got_sums = torch.full((5,), -1.5)
        got, _ = greedy_step(tokens, logits, got_sums, 0.0, eot, force=argmax)
        assert torch.equal(got, want) and torch.equal(got_sums, sums), case


def test_fused_processors_only_for_the_standard_list():
    tok = _tokenizer_like(1000, 900, 999)

    class Mine(ApplyTimestampRules):
        pass

    rules, suppress = ApplyTimestampRules(tok, 2, None), SuppressTokens([5])
    assert FusedProcessors.of([suppress]) is None  # no eot known
    assert FusedProcessors.of([Mine(tok, 2, None)]) is None
    assert FusedProcessors.of([rules, suppress]) is None  # another order
    assert FusedProcessors.of([SuppressBlank(tok, 3), rules]) is None  # two sample_begins
    if kernels.available():
        assert FusedProcessors.of([suppress, rules]) is not None


@pytest.mark.skipif(not kernels.available(), reason="the CPU kernels are not built or do not run here")
@pytest.mark.parametrize("patience", [None, 2.0])
def test_beam_search_cpu_path_chooses_what_the_tensor_path_chooses(monkeypatch, patience):
    """Two windows of 3 beams stepped 30 times on random logits (eot often among the best; the first step's
    beams identical): the kernel-and-lists path keeps the same beams, sources and finished sequences as the
    tensor operations, and the same scores."""
    K, N, V, eot = 3, 2, 500, 400
    listed, tensors = BeamSearchChooser(K, eot, patience), BeamSearchChooser(K, eot, patience)
    listed.reset(N)
    tensors.reset(N)
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 300, (N, 4), generator=g).repeat_interleave(K, dim=0)
    sums_l, sums_t = torch.zeros(N * K), torch.zeros(N * K)
    tokens_l = tokens_t = tokens
    for step in range(30):
        logits = torch.randn(N * K, V, generator=g) * 2
        logits[:, eot] += torch.randn(N * K, generator=g) * 3
        new_l, src_l, done_l = listed.update(tokens_l, logits, sums_l)
        with monkeypatch.context() as m:
            m.setattr(kernels, "logits_apply", lambda *a: False)
            new_t, src_t, done_t = tensors.update(tokens_t, logits, sums_t)
        assert torch.equal(new_l, new_t) and torch.equal(src_l, src_t), step
        assert torch.equal(sums_l, sums_t), step  # torch's log-softmax in both: the same scores
        assert bool(done_l) == bool(done_t)
        tokens_l, tokens_t = new_l, new_t
    assert listed.finished == tensors.finished
    assert sum(len(f) for f in listed.finished) > 0


@pytest.mark.skipif(not kernels.available(), reason="the CPU kernels are not built or do not run here")
def test_beam_top_takes_the_largest_first_index_first():
    logprobs = torch.log_softmax(torch.tensor([[1.0, 3.0, 3.0, -1.0, 2.0, float("-inf")] * 6]), -1)
    scores, tokens = kernels.beam_top(logprobs, torch.tensor([-2.0]), 4)
    assert tokens.tolist() == [[1, 2, 7, 8]]
    assert torch.equal(scores, (-2.0 + logprobs[0, [1, 2, 7, 8]])[None])
