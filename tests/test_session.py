"""Step-through decoding (engine/session.py): equal to decode(), rewind/force keep the KV cache consistent,
the trace reports what the processors did, stop reasons. Real tiny.en on tests/data/jfk.flac."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import STEP_TRACE_KEYS

from kvwhisper.audio import MelWindows, load_audio, log_mel_spectrogram, pad_or_trim
from kvwhisper.decoding import DecodingOptions, DecodingTask
from kvwhisper.inspection.activations import decode_with_stats
from kvwhisper.inspection.records import Candidate, apply_processors, describe_processors
from kvwhisper.inspection.session import DecodeSession, decode_session, window_mel
from kvwhisper.model import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model():
    return load_model("tiny.en", device="cpu")


@pytest.fixture(scope="module")
def audio(jfk_path):
    return load_audio(jfk_path)


@pytest.fixture(scope="module")
def mel(model, audio):
    return log_mel_spectrogram(pad_or_trim(audio), model.dims.n_mels)


@pytest.fixture(scope="module")
def features(model, mel):
    with torch.no_grad():
        return model.embed_audio(mel[None])[0]


@pytest.fixture(scope="module")
def greedy(model, mel):
    """A default session on the mel, run to the end."""
    session = decode_session(model, mel)
    session.run()
    return session


@pytest.fixture(scope="module")
def reference(model, mel):
    return model.decode(mel)


def test_greedy_session_equals_decode(model, greedy, reference):
    result = greedy.result
    assert result.tokens == reference.tokens
    assert result.text == reference.text
    assert result.avg_logprob == pytest.approx(reference.avg_logprob, abs=1e-6)
    assert result.no_speech_prob == pytest.approx(reference.no_speech_prob, abs=1e-6)
    assert greedy.result is result  # computed once
    assert greedy.tokens == reference.tokens
    assert greedy.text == model.tokenizer.decode_with_timestamps(reference.tokens)
    assert "<|0.00|>" in greedy.text and "fellow Americans" in greedy.text
    traces = greedy.traces
    assert [t.token.id for t in traces] == reference.tokens + [model.tokenizer.eot]
    assert [t.step for t in traces] == list(range(len(traces)))
    assert traces[0].fed == greedy.initial_tokens  # the prompt on the first step, then one token
    assert all(t.fed == (prev.token.id,) for prev, t in zip(traces, traces[1:], strict=False))
    assert traces[0].no_speech_prob == pytest.approx(reference.no_speech_prob, abs=1e-6)
    assert traces[-1].cumulative_logprob == pytest.approx(
        reference.avg_logprob * (len(reference.tokens) + 1), abs=1e-4
    )
    assert not any(t.finished for t in traces[:-1]) and traces[-1].finished
    assert next(iter(greedy), None) is None  # iteration stops at the end


def test_beam_session_equals_decode_and_rewinds(model, features):
    options = DecodingOptions(beam_size=3)
    session = decode_session(model, features, options)
    for _ in range(8):
        session.step()
    rows = session.state.tokens.clone()
    scores = session.state.sum_logprobs.clone()
    first = session.traces[:]
    undone = session.rewind(3)
    assert undone == first[5:] and len(session.traces) == 5
    for _ in range(3):  # the prefix cache is rebuilt after a beam rewind: the same beams come back
        session.step()
    assert torch.equal(session.state.tokens, rows)
    torch.testing.assert_close(session.state.sum_logprobs, scores, atol=1e-4, rtol=0)
    session.run()
    reference = model.decode(features, options)
    assert session.result.tokens == reference.tokens
    assert session.result.avg_logprob == pytest.approx(reference.avg_logprob, abs=1e-4)
    for trace in session.traces:
        assert len(trace.beams) == 3
        assert all(0 <= b.source < 3 for b in trace.beams)
        assert [b.score for b in trace.beams] == sorted((b.score for b in trace.beams), reverse=True)
        assert trace.beams[0].score == trace.cumulative_logprob
        assert trace.token.id == trace.beams[0].token.id
    assert session.traces[-1].stop_reason == "eot"
    assert len(session.traces[-1].beam_finished) == 3  # beam_size * patience finished candidates
    n = len(session.traces)
    session.rewind(1)
    with pytest.raises(ValueError, match="beam search"):
        session.step(force=model.tokenizer.eot)
    assert len(session.traces) == n - 1  # the refusal changed nothing
    assert session.step().stop_reason == "eot"
    assert session.result.tokens == reference.tokens


def test_cached_and_uncached_sessions_agree(model, features, greedy):
    n = 10
    uncached = decode_session(model, features, DecodingOptions(kv_cache="none"))
    traces = [uncached.step() for _ in range(n)]
    cached = greedy.traces[:n]
    assert [t.token.id for t in traces] == [t.token.id for t in cached]
    for u, c in zip(traces, cached, strict=True):
        assert u.token.logprob == pytest.approx(c.token.logprob, abs=1e-4)
        assert u.cumulative_logprob == pytest.approx(c.cumulative_logprob, abs=1e-4)
        assert [x.id for x in u.top_k] == [x.id for x in c.top_k]
        np.testing.assert_allclose([x.logprob for x in u.top_k], [x.logprob for x in c.top_k], atol=1e-4)
        assert u.cache_self == c.cache_self  # after the step both hold the whole prefix
    t0 = len(greedy.initial_tokens)
    assert [len(t.fed) for t in cached] == [t0] + [1] * (n - 1)  # cached: the prompt, then one token
    assert [len(t.fed) for t in traces] == [t0 + i for i in range(n)]  # uncached: the whole prefix each time
    assert [t.position for t in cached] == [0] + [t0 + i for i in range(n - 1)]
    assert [t.position for t in traces] == [0] * n


def test_rewind_then_step_reproduces(model, features):
    session = decode_session(model, features)
    first = [session.step() for _ in range(8)]
    tokens = session.tokens
    assert session.rewind(0) == []
    undone = session.rewind(3)
    assert undone == first[5:]
    assert session.tokens == tokens[:5] and len(session.traces) == 5
    assert session.cache.position == first[5].position
    assert session.traces[-1].cumulative_logprob == first[4].cumulative_logprob
    assert float(session.state.sum_logprobs[0]) == first[4].cumulative_logprob
    again = [session.step() for _ in range(3)]
    assert session.tokens == tokens
    for a, b in zip(again, first[5:], strict=True):
        assert (a.token.id, a.position, a.fed, a.cache_self) == (b.token.id, b.position, b.fed, b.cache_self)
        assert a.token.logprob == pytest.approx(b.token.logprob, abs=1e-6)
        assert a.cumulative_logprob == pytest.approx(b.cumulative_logprob, abs=1e-6)
    with pytest.raises(ValueError, match="cannot rewind"):
        session.rewind(9)
    session.rewind(8)  # back to the start: the first step feeds the prompt again
    assert session.cache.position == 0 and session.tokens == []
    assert session.step().token.id == first[0].token.id


def test_force_changes_continuation_and_cache_stays_consistent(model, features, greedy):
    session = decode_session(model, features)
    for _ in range(6):
        session.step()
    session.rewind(3)
    original = greedy.traces[3]
    removed = {c.id for p in original.processors for c in p.suppressed_top}
    alternative = next(c for c in original.top_k if c.id != original.token.id and c.id not in removed)
    forced = session.step(force=alternative.id)
    assert forced.forced and forced.token.id == alternative.id
    assert forced.token.logprob < original.token.logprob  # not the chooser's pick
    logits = []
    for _ in range(5):
        session.step()
        logits.append((session.last_output.raw_logits.clone(), session.last_output.logits.clone()))
    continuation = session.tokens[4:9]
    assert continuation != greedy.tokens[4:9]  # forcing changed what follows
    # the cache after rewind + force is consistent: an uncached decode forced along the same tokens agrees
    uncached = decode_session(model, features, DecodingOptions(kv_cache="none"))
    for i, token in enumerate(session.tokens[:9]):
        uncached.step(force=token)
        if i >= 4:
            raw, processed = logits[i - 4]
            torch.testing.assert_close(uncached.last_output.raw_logits, raw, atol=1e-4, rtol=0)
            torch.testing.assert_close(uncached.last_output.logits, processed, atol=1e-4, rtol=0)
    assert uncached.tokens == session.tokens[:9]


def test_stop_reasons_and_bad_force(model, features, greedy):
    assert greedy.traces[-1].stop_reason == "eot"
    assert all(t.stop_reason is None for t in greedy.traces[:-1])
    with pytest.raises(RuntimeError, match="finished"):
        greedy.step()

    options = DecodingOptions(sample_len=5)
    session = decode_session(model, features, options)
    for bad in (-1, model.dims.n_vocab, 1.5, "7", True):
        with pytest.raises(ValueError):
            session.step(force=bad)
    assert session.traces == [] and session.cache.position == 0  # a refused force changes nothing
    traces = session.run()
    assert len(traces) == 5 and traces[-1].finished and traces[-1].stop_reason == "sample_len"
    assert session.result.tokens == model.decode(features, options).tokens == session.tokens

    # a prompt and a prefix (the whole prefix is kept with the default sample_len) leave 3 free positions
    word = model.tokenizer.encode(" so")[0]
    options = DecodingOptions(prompt=[word] * 223, prefix=[word] * 221)
    session = decode_session(model, features, options)
    assert len(session.initial_tokens) == 446
    traces = [session.step(force=word) for _ in range(3)]
    assert traces[-1].finished and traces[-1].stop_reason == "context_full"
    assert traces[0].fed == session.initial_tokens
    assert traces[-1].forced and traces[-1].token.id == word


def test_processor_report_matches_logits_handbuilt(model):
    """Rule 4 of the timestamp rules forces a timestamp on logits built so that the timestamps' total mass
    beats the best text token, although a text token has the highest single logit."""
    tok = model.tokenizer
    task = DecodingTask(model, DecodingOptions())
    tb, V = tok.timestamp_begin, model.dims.n_vocab
    word = tok.encode(" Hello")[0]
    tokens = torch.tensor([[*task.initial_tokens, tb + 10, word]])  # <|0.20|> ' Hello': free to end the pair
    raw = torch.zeros(1, V)
    raw[0, tb:] = 3.0
    raw[0, word] = 4.0
    logits = raw.clone()
    masks, forced = apply_processors(task.processors, logits, tokens)
    logprobs = F.log_softmax(raw[0], dim=-1)
    top = tuple(
        Candidate(i, tok.decode_with_timestamps([i]), logprobs[i].item()) for i in [word, tb + 20, tb]
    )
    actions = {a.name: a for a in describe_processors(task.processors, masks, forced, 0, top)}
    ts = actions["timestamp_rules"]
    assert ts.forced_timestamp is True
    assert torch.isinf(logits[0, :tb]).all()  # every text token (eot included) removed
    assert torch.isfinite(logits[0, tb + 11 :]).all()  # timestamps after the last one remain
    assert torch.isinf(logits[0, tb : tb + 11]).all()  # rule 2: a closed pair's time is not repeated
    # the reported counts partition what became -inf, each processor counted where it acted
    after_two = raw.clone()
    for p in task.processors[:2]:
        p.apply(after_two, tokens)
    assert ts.suppressed == int((torch.isinf(logits) & ~torch.isinf(after_two)).sum())
    assert actions["suppress_tokens"].suppressed == int(torch.isinf(after_two).sum())
    assert actions["suppress_blank"].suppressed == 0  # only at the first sampled position
    assert [c.id for c in ts.suppressed_top] == [word, tb]  # the top text token, and <|0.00|> (rule 2)
    assert actions["suppress_tokens"].forced_timestamp is None

    # the same text token alone above the timestamps: nothing forced, the word stays
    raw[0, tb:] = -5.0
    logits = raw.clone()
    masks, forced = apply_processors(task.processors, logits, tokens)
    actions = {a.name: a for a in describe_processors(task.processors, masks, forced, 0, top)}
    assert actions["timestamp_rules"].forced_timestamp is False
    assert torch.isfinite(logits[0, word]) and actions["timestamp_rules"].suppressed_top == (top[2],)


def test_processor_report_matches_real_steps(model, features):
    tok = model.tokenizer
    session = decode_session(model, features, top_k=10)
    trace = session.step()
    out = session.last_output
    blank = next(a for a in trace.processors if a.name == "suppress_blank")
    blanks = [*tok.encode(" "), tok.eot]
    assert blank.suppressed == len(blanks)  # the first step: a blank and end-of-text are forbidden
    assert torch.isfinite(out.raw_logits[0, blanks]).all() and torch.isinf(out.logits[0, blanks]).all()
    assert out.processor_masks["suppress_blank"][0, blanks].all()
    tb = tok.timestamp_begin
    while True:
        out = session.last_output
        became_inf = torch.isinf(out.logits[0]) & ~torch.isinf(out.raw_logits[0])
        assert sum(a.suppressed for a in trace.processors) == int(became_inf.sum())
        for action in trace.processors:
            assert all(torch.isinf(out.logits[0, c.id]) for c in action.suppressed_top)
            if action.forced_timestamp:
                assert torch.isinf(out.logits[0, :tb]).all()
            elif action.forced_timestamp is False:
                assert torch.isfinite(out.logits[0, :tb]).any()
        if trace.step >= 17:  # step 15/16 force the <|8.00|> pair on this recording
            break
        if trace.step > 0:
            assert all(a.suppressed == 0 for a in trace.processors if a.name == "suppress_blank")
        trace = session.step()
    forced_steps = [t.step for t in session.traces if t.processors[-1].forced_timestamp]
    assert 0 in forced_steps and len(forced_steps) >= 2


def test_trace_to_dict_is_json(greedy):
    for trace in greedy.traces:
        record = json.loads(json.dumps(trace.to_dict(), allow_nan=False))
        assert set(record) == STEP_TRACE_KEYS
        assert set(record["cache"]) == {"self", "cross"} and len(record["cache"]["self"]) == 4
        assert record["cache"]["cross"] == 1500
        assert len(record["top_k"]) == 5 and set(record["top_k"][0]) == {"id", "text", "logprob"}
        assert [p["name"] for p in record["processors"]] == [
            "suppress_blank",
            "suppress_tokens",
            "timestamp_rules",
        ]
        assert set(record["processors"][0]) == {"name", "suppressed", "suppressed_top", "forced_timestamp"}
        assert set(record["token"]) == {"id", "text", "logprob"}
        assert record["time_ms"] > 0 and record["n_fed"] == len(record["fed"]) == len(record["fed_text"])
    assert json.loads(json.dumps(greedy.traces[-1].to_dict()))["stop_reason"] == "eot"


def test_record_activations_and_attention(model, mel, greedy):
    session = decode_session(
        model, mel, DecodingOptions(sample_len=6), record_activations=True, record_attention=True
    )
    traces = session.run()
    assert session.tokens == greedy.tokens[:6]
    for t, g in zip(traces, greedy.traces, strict=False):  # want_qk takes the explicit-softmax attention path
        assert t.token.logprob == pytest.approx(g.token.logprob, abs=1e-4)
    # the block-by-block mirrors give the model's own outputs, bit for bit
    assert torch.equal(session.audio_features, model.embed_audio(mel[None]))
    tokens = torch.tensor([[*greedy.initial_tokens, *greedy.tokens[:8]]])
    caches = [model.new_cache(1, 16) for _ in range(2)]
    for cache in caches:
        model.fill_cross(cache, session.audio_features)
    with torch.no_grad():
        expected = model.decoder(tokens, caches[0])[0]
        logits, _, decoder_stats = decode_with_stats(model, tokens, caches[1])
    assert torch.equal(logits, expected) and caches[1].position == caches[0].position == tokens.shape[1]
    assert len(decoder_stats) == model.dims.n_text_layer + 2
    stats = session.encoder_stats
    assert [s["name"] for s in stats] == ["encoder.conv1", "encoder.conv2+pos"] + [
        f"encoder.blocks.{i}" for i in range(model.dims.n_audio_layer)
    ] + ["encoder.ln_post"]
    assert all(np.isfinite([s["mean"], s["std"], s["absmax"]]).all() and s["std"] > 0 for s in stats)
    for trace in traces:
        assert len(trace.activations) == model.dims.n_text_layer + 2
        assert trace.activations[0]["name"] == "decoder.embedding"
        weights = trace.cross_attention
        assert weights.shape == (model.dims.n_text_layer, model.dims.n_text_head, model.dims.n_audio_ctx)
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2]))
        assert 0 <= trace.attention_peak_s < 30
    assert session.step_attention(-1).shape == (model.dims.n_audio_ctx,)
    assert session.step_attention(-1, heads=None).shape == weights.shape
    # words of the first sentence are attended in the first 11 s
    assert traces[-1].attention_peak_s < 11
    weights, labels = greedy.attention_map()
    assert weights.shape == (len(greedy.tokens) + 1, model.dims.n_audio_ctx) and labels[-1] == "<|endoftext|>"
    with pytest.raises(ValueError, match="record_attention"):
        greedy.step_attention(0)


def test_window_selection(model, audio, mel, jfk_path):
    first, seconds = window_mel(model, jfk_path)
    assert torch.equal(first, mel) and seconds == pytest.approx(11.0)
    long_form, seconds = window_mel(model, audio, window=0)
    assert torch.equal(long_form, MelWindows(audio).window(0)) and seconds == pytest.approx(11.0)
    three = np.concatenate([audio, audio, audio])  # 33 s: two windows
    second, seconds = window_mel(model, three, window=1)
    assert torch.equal(second, MelWindows(three).window(3000)) and seconds == pytest.approx(3.0)
    with pytest.raises(ValueError, match="past the end"):
        window_mel(model, three, window=2)
    with pytest.raises(ValueError, match="window"):
        window_mel(model, mel, window=1)
    with pytest.raises(ValueError):
        window_mel(model, torch.zeros(80, 100))
    with pytest.raises(ValueError, match="lang_id"):
        DecodeSession(model, mel, DecodingOptions(task="lang_id"))
