"""Bad inputs and options at the library's edge (transcribe, decode, detect_language, decode_session,
log_mel_spectrogram): a ValueError (OptionError for options) saying what was expected, raised before any work,
never a failure deep inside torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kvwhisper
from kvwhisper import DecodingOptions
from kvwhisper.decoding import OptionError

N = 3000


@pytest.fixture(scope="module")
def model():
    return kvwhisper.load_model("tiny.en", device="cpu")


@pytest.fixture(scope="module")
def mel(model, jfk_path):
    return kvwhisper.log_mel_spectrogram(kvwhisper.pad_or_trim(kvwhisper.load_audio(jfk_path)))


def _nan_mel(mel):
    bad = mel.clone()
    bad[3, 7] = float("nan")
    return bad


WAVE = torch.zeros(16000)
BAD = [
    # (id, call(model, mel), exception, message fragment)
    ("decode transposed", lambda m, x: m.decode(x.T), ValueError, "transposed?"),
    ("decode 128 bins", lambda m, x: m.decode(torch.zeros(128, N)), ValueError, "takes 80 mel bins"),
    ("decode short mel", lambda m, x: m.decode(x[:, :1000]), ValueError, "a window is 3000 frames"),
    ("decode 1-D", lambda m, x: m.decode(x[0]), ValueError, "got shape (3000,)"),
    ("decode 4-D", lambda m, x: m.decode(x[None, None]), ValueError, "got shape (1, 1, 80, 3000)"),
    ("decode empty batch", lambda m, x: m.decode(torch.zeros(0, 80, N)), ValueError, "the batch is empty"),
    ("decode NaN mel", lambda m, x: m.decode(_nan_mel(x)), ValueError, "NaN or infinite"),
    ("decode Inf mel", lambda m, x: m.decode(x + float("inf")), ValueError, "NaN or infinite"),
    ("decode int mel", lambda m, x: m.decode(x.to(torch.int32)), ValueError, "floating-point"),
    ("decode a list", lambda m, x: m.decode(x.tolist()), ValueError, "tensor or numpy array"),
    ("decode beam 0", lambda m, x: m.decode(x, DecodingOptions(beam_size=0)), OptionError, "beam_size: must be >= 1"),
    ("decode best_of at T=0", lambda m, x: m.decode(x, best_of=2), OptionError, "best_of: not compatible"),
    ("decode T NaN", lambda m, x: m.decode(x, temperature=float("nan")), OptionError, "temperature: must be a finite"),
    ("decode suppress abc", lambda m, x: m.decode(x, suppress_tokens="abc"), OptionError, "suppress_tokens: expected"),
    ("decode suppress past vocab", lambda m, x: m.decode(x, suppress_tokens=[10**6]), OptionError, "must be < 51864"),
    ("decode language xx", lambda m, x: m.decode(x, language="xx"), OptionError, "language: Unsupported language"),
    ("decode patience 0", lambda m, x: m.decode(x, beam_size=2, patience=0.0), OptionError, "patience: must be > 0"),
    ("detect_language on tiny.en", lambda m, x: m.detect_language(x), ValueError, "English-only"),
    ("session transposed", lambda m, x: m.decode_session(x.T), ValueError, "transposed?"),
    ("session batch", lambda m, x: m.decode_session(x[None].repeat(2, 1, 1)), ValueError, "one window"),
    ("session NaN", lambda m, x: m.decode_session(_nan_mel(x)), ValueError, "NaN or infinite"),
    ("transcribe NaN wave", lambda m, x: m.transcribe(torch.full((16000,), float("nan"))), ValueError, "NaN or infinite"),
    ("transcribe Inf numpy wave", lambda m, x: m.transcribe(np.full(16000, np.inf, np.float32)), ValueError, "NaN or infinite"),
    ("transcribe stereo", lambda m, x: m.transcribe(torch.zeros(2, 16000)), ValueError, "downmix"),
    ("transcribe clip inf", lambda m, x: m.transcribe(WAVE, clip_timestamps="inf"), OptionError, "clip_timestamps: must be a finite"),
    ("transcribe clip abc", lambda m, x: m.transcribe(WAVE, clip_timestamps="abc"), OptionError, "clip_timestamps: expected"),
    ("transcribe T -1", lambda m, x: m.transcribe(WAVE, temperature=-1.0), OptionError, "temperature: must be >= 0"),
    ("transcribe beam 0", lambda m, x: m.transcribe(WAVE, beam_size=0), OptionError, "beam_size: must be >= 1"),
    ("transcribe no-speech 2", lambda m, x: m.transcribe(WAVE, no_speech_threshold=2.0), OptionError, "between 0 and 1"),
    ("transcribe bad keyword", lambda m, x: m.transcribe(WAVE, beam=3), TypeError, "beam"),
    ("log-mel NaN", lambda m, x: kvwhisper.log_mel_spectrogram(torch.tensor([0.0, float("nan")] * 400)), ValueError, "NaN"),
    ("log-mel empty", lambda m, x: kvwhisper.log_mel_spectrogram(np.zeros(0, np.float32)), ValueError, "empty"),
    ("log-mel 2-D", lambda m, x: kvwhisper.log_mel_spectrogram(torch.zeros(2, 800)), ValueError, "mono waveform"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "error", "fragment"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_api_call_is_a_named_error(model, mel, call, error, fragment):
    with pytest.raises(error) as e:
        call(model, mel)
    assert fragment in str(e.value)


def test_the_table_is_large_enough():
    assert len(BAD) >= 20


def test_option_errors_come_before_the_audio_is_read(model, monkeypatch):
    """transcribe() checks its options first: a missing file with a bad option reports the option."""
    with pytest.raises(OptionError, match="beam_size"):
        model.transcribe("/no/such/file.wav", beam_size=0)


def test_numpy_mels_are_taken(model, mel):
    """numpy in, the tensor's tokens out (decode, detect_language's check, a session)."""
    options = DecodingOptions(sample_len=5, without_timestamps=True)
    assert model.decode(mel.numpy(), options).tokens == model.decode(mel, options).tokens
    batch = model.decode(np.stack([mel.numpy()] * 2), options)
    assert len(batch) == 2 and batch[0].tokens == batch[1].tokens
