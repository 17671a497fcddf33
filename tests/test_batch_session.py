"""Step-through of windows decoded together (inspection/batch_session.py) on tiny random weights: each step
records every row's stream, window, position and the keys it reads, and the results equal each window
decoded alone."""

from __future__ import annotations

import json

import pytest
from helpers import random_mel, tiny_fp16_valued_model

from kvwhisper.decoding import DecodingOptions, decode
from kvwhisper.inspection import BatchDecodeSession, BatchStepTrace, decode_session


@pytest.fixture(scope="module")
def model():
    return tiny_fp16_valued_model(3)


@pytest.fixture(scope="module")
def mels():
    return random_mel(7, n=3)


def test_a_list_gives_a_batch_session_whose_results_equal_each_window_alone(model, mels):
    options = DecodingOptions(sample_len=10, beam_size=2)
    session = decode_session(model, list(mels), options)
    assert isinstance(session, BatchDecodeSession)
    steps = list(session)
    assert steps and all(isinstance(s, BatchStepTrace) for s in steps)
    assert session.finished and sorted(session.results) == [0, 1, 2]
    for i, mel in enumerate(mels):
        alone = decode(model, mel, options)
        got = session.results[i]
        assert got.tokens == alone.tokens and got.text == alone.text
        assert got.avg_logprob == pytest.approx(alone.avg_logprob, abs=1e-5)
    # every step's rows: each window's beams, at that window's position, reading its own 0..position keys
    capacity = {}
    for s in steps:
        by_stream = {}
        for row in s.rows:
            by_stream.setdefault(row.stream, []).append(row)
        for stream, rows in by_stream.items():
            assert [r.row for r in rows] == list(range(2))
            assert len({r.position for r in rows}) == 1
            for r in rows:
                assert r.attends == r.position + 1
                assert r.unread >= 0
                capacity.setdefault(stream, r.attends + r.unread)
                assert r.attends + r.unread == capacity[stream]  # one cache per window, never reallocated
                assert r.cross_length == model.dims.n_audio_ctx
                assert r.batched
                assert 0 <= r.source < 2
    # positions advance by one per step while a window is open; ended windows leave the rows
    positions = {}
    for s in steps:
        for row in s.rows:
            if row.row == 0:
                if row.stream in positions:
                    assert row.position == positions[row.stream] + 1
                positions[row.stream] = row.position
        for stream in s.ended:
            assert stream in session.results
        later = {r.stream for t in steps[s.step + 1 :] for r in t.rows}
        assert not later & set(s.ended)
    assert steps[-1].decoder_calls == len(steps)


def test_the_fed_token_is_the_previous_steps_chosen_token(model, mels):
    session = decode_session(model, {"a": mels[0], "b": mels[1]}, DecodingOptions(sample_len=6))
    previous = {}
    for s in session:
        for row in s.rows:
            if row.stream in previous:
                assert row.fed.id == previous[row.stream]
            previous[row.stream] = row.token.id
            assert row.token.logprob <= 0.0
    assert set(session.results) == {"a", "b"}
    json.dumps([t.to_dict() for t in session.traces])  # JSON-able


def test_a_window_joins_mid_batch_with_its_own_options(model, mels):
    session = BatchDecodeSession(model, DecodingOptions(sample_len=8))
    session.add("first", mels[0])
    session.step()
    session.step()
    late = DecodingOptions(sample_len=5, prompt=[5, 6, 7], without_timestamps=True)
    session.add("late", mels[1], late)
    steps = session.run()
    assert set(steps) == {"first", "late"}
    assert session.results["first"].tokens == decode(model, mels[0], DecodingOptions(sample_len=8)).tokens
    assert session.results["late"].tokens == decode(model, mels[1], late).tokens
    joined = next(t for t in session.traces if any(r.stream == "late" for r in t.rows))
    positions = {r.stream: r.position for r in joined.rows}
    assert positions["late"] != positions["first"]  # ragged: each at its own position


def test_bad_uses_are_named(model, mels):
    session = BatchDecodeSession(model)
    with pytest.raises(StopIteration):
        session.step()
    session.add("x", mels[0], DecodingOptions(sample_len=3))
    with pytest.raises(ValueError, match="already in the session"):
        session.add("x", mels[1])
    with pytest.raises(ValueError, match="one window only"):
        decode_session(model, [mels[0]], record_attention=True)
    with pytest.raises(ValueError, match="lang_id"):
        BatchDecodeSession(model, DecodingOptions(task="lang_id"))
