"""Word timing pieces against the reference's whisper.timing: DTW, median filter, punctuation merging,
alignment and the word-timestamp heuristics (on a tiny random-weight model, so no download is needed)."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from helpers import random_mel, reference_copy, tiny_random_model

from kvwhisper.timing import (
    WordTiming,
    add_word_timestamps,
    dtw,
    find_alignment,
    median_filter,
    merge_punctuations,
)
from kvwhisper.tokenizer import get_tokenizer

wt = pytest.importorskip("whisper.timing")
whisper_tokenizer = pytest.importorskip("whisper.tokenizer")


def ref_dtw(x: np.ndarray) -> np.ndarray:
    return wt.dtw_cpu(np.ascontiguousarray(x, dtype=np.float64))


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (2, 2), (3, 17), (17, 3), (40, 300), (120, 750)])
def test_dtw_path_equals_reference(shape):
    rng = np.random.default_rng(sum(shape))
    for x in (rng.standard_normal(shape), np.round(rng.standard_normal(shape)), np.zeros(shape)):  # ties too
        text_idx, time_idx = dtw(x)
        expected = ref_dtw(x)
        np.testing.assert_array_equal(np.stack([text_idx, time_idx]), expected)


def test_dtw_cost_precision_equals_reference():
    """Values that differ only beyond float32 precision: the reference's (numba) cost table is float64."""
    rng = np.random.default_rng(7)
    x = 1.0 + rng.integers(0, 3, (30, 80)) * 1e-9 + rng.integers(0, 2, (30, 80)) * 0.25
    np.testing.assert_array_equal(np.stack(dtw(x)), ref_dtw(x))


def test_dtw_is_fast_enough_for_a_full_window():
    x = np.random.default_rng(0).standard_normal((224, 1500))
    t0 = time.perf_counter()
    path = dtw(x)
    elapsed = time.perf_counter() - t0
    np.testing.assert_array_equal(np.stack(path), ref_dtw(x))
    assert elapsed < 2.0, f"DTW of 224 x 1500 took {elapsed:.2f} s"


@pytest.mark.parametrize(
    "shape,width",
    [
        ((10,), 7),
        ((3,), 7),
        ((4,), 7),
        ((5, 50), 7),
        ((2, 6, 40), 7),
        ((2, 3, 5, 30), 5),
        ((6, 100), 1),
        ((8,), 3),
    ],
)
def test_median_filter_equals_reference(shape, width):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(width + len(shape)))
    assert torch.equal(median_filter(x, width), wt.median_filter(x, width))


def test_median_filter_refuses_even_width():
    with pytest.raises(ValueError):
        median_filter(torch.zeros(3, 20), 4)


SENTENCES = [
    ' "Hello," she said (quietly) -- and left. ¿Qué? «Non» [sic] {x} it\'s 3.5% "done".',
    " Well... I mean — right?! (Yes.) 'Quoted' words, and: colons; semicolons.",
    " - A dash first, then “curly quotes” and 、 Japanese comma。",
]


@pytest.mark.parametrize("text", SENTENCES)
def test_merge_punctuations_equals_reference(text):
    tok = get_tokenizer(multilingual=False)
    tokens = tok.encode(text)
    words, word_tokens = tok.split_to_word_tokens(tokens + [tok.eot])
    ours = [WordTiming(w, t, i * 0.1, i * 0.1 + 0.1, 0.5) for i, (w, t) in enumerate(zip(words, word_tokens))]
    ref = [
        wt.WordTiming(w, list(t), i * 0.1, i * 0.1 + 0.1, 0.5)
        for i, (w, t) in enumerate(zip(words, word_tokens))
    ]
    prepend, append = "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、"
    merge_punctuations(ours, prepend, append)
    wt.merge_punctuations(ref, prepend, append)
    assert [(w.word, w.tokens) for w in ours] == [(w.word, w.tokens) for w in ref]
    assert any(w.word == "" for w in ours)  # something was merged


# ---------------------------------------------------------------------------------------------------------
# alignment on a tiny random-weight model, ours vs the reference's on the same weights


@pytest.fixture(scope="module")
def models():
    model = tiny_random_model(seed=3)
    return model, reference_copy(model)


@pytest.fixture(scope="module")
def tokenizers():
    return get_tokenizer(multilingual=False), whisper_tokenizer.get_tokenizer(False)


TEXT = " And so, my fellow Americans: ask not what your country can do for you. Ask what you can do."


@pytest.mark.parametrize("num_frames", [3000, 1100, 9])
def test_find_alignment_equals_reference(models, tokenizers, num_frames):
    model, ref = models
    tok, ref_tok = tokenizers
    mel = random_mel(seed=num_frames)[0]
    text_tokens = tok.encode(TEXT)
    with torch.no_grad():
        features = model.embed_audio(mel[None])
    ours = find_alignment(model, tok, text_tokens, features, num_frames)
    expected = wt.find_alignment(ref, ref_tok, text_tokens, mel, num_frames)
    assert [w.word for w in ours] == [w.word for w in expected]
    assert [w.tokens for w in ours] == [w.tokens for w in expected]
    np.testing.assert_allclose([w.start for w in ours], [w.start for w in expected], atol=0.02 + 1e-9)
    np.testing.assert_allclose([w.end for w in ours], [w.end for w in expected], atol=0.02 + 1e-9)
    same = np.mean([(a.start, a.end) == (b.start, b.end) for a, b in zip(ours, expected)])
    assert same >= 0.9, f"only {same:.0%} of the words have exactly the reference's times"
    np.testing.assert_allclose([w.probability for w in ours], [w.probability for w in expected], rtol=1e-4)


def test_find_alignment_of_nothing(models, tokenizers):
    model, _ = models
    assert find_alignment(model, tokenizers[0], [], torch.zeros(1, 1500, 64), 3000) == []


@dataclass
class _Seg:
    seek: int
    start: float
    end: float
    tokens: list
    words: list | None = None


def test_add_word_timestamps_equals_reference(models, tokenizers):
    model, ref = models
    tok, ref_tok = tokenizers
    mel = random_mel(seed=11)[0]
    tb = tok.timestamp_begin
    pieces = [" And so, my fellow Americans:", " ask not what your country can do for you.", " Ask what."]
    seek, segments, t = 1234, [], 0
    for text in pieces:
        tokens = [tb + t, *tok.encode(text), tb + t + 150]
        segments.append(
            {"seek": seek, "start": 12.34 + t * 0.02, "end": 12.34 + (t + 150) * 0.02, "tokens": tokens}
        )
        t += 150
    ref_segments = copy.deepcopy(segments)
    ours = [_Seg(**s) for s in segments]
    with torch.no_grad():
        features = model.embed_audio(mel[None])
    for last_speech in (0.0, 12.0):
        add_word_timestamps(
            segments=ours,
            model=model,
            tokenizer=tok,
            mel=features,
            num_frames=3000,
            last_speech_timestamp=last_speech,
        )
        wt.add_word_timestamps(
            segments=ref_segments,
            model=ref,
            tokenizer=ref_tok,
            mel=mel,
            num_frames=3000,
            last_speech_timestamp=last_speech,
        )
        for a, b in zip(ours, ref_segments):
            assert (a.start, a.end) == pytest.approx((b["start"], b["end"]), abs=0.021)
            assert [w["word"] for w in a.words] == [w["word"] for w in b["words"]]
            for wa, wb in zip(a.words, b["words"]):
                assert (wa["start"], wa["end"]) == pytest.approx((wb["start"], wb["end"]), abs=0.021)
                assert wa["probability"] == pytest.approx(wb["probability"], rel=1e-4)
        for s, r in zip(ours, segments):  # reset for the second round
            s.start, s.end, s.words = r["start"], r["end"], None
        ref_segments = copy.deepcopy(segments)
