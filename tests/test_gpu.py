"""GPU checks (fp16 on CUDA by default). They skip without CUDA; run them whenever a GPU is available and record
the results in benchmarks/RESULTS.md."""

from __future__ import annotations

import pytest
import torch

import kvwhisper
from kvwhisper.audio import load_audio, log_mel_spectrogram, pad_or_trim
from kvwhisper.decoding import DecodingOptions

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def models():
    return kvwhisper.load_model("tiny.en", device="cpu"), kvwhisper.load_model("tiny.en", device="cuda")


def test_cuda_default_dtype_is_fp16(models):
    _, gpu = models
    assert gpu.dtype == torch.float16 and gpu.device.type == "cuda"
    assert gpu.decoder.ln.weight.dtype == torch.float32  # LayerNorm stays fp32


@pytest.mark.parametrize("beam_size", [None, 5])
def test_fp16_cuda_decode_matches_fp32_cpu(models, jfk_path, beam_size):
    cpu, gpu = models
    mel = log_mel_spectrogram(pad_or_trim(load_audio(jfk_path)))
    a = cpu.decode(mel, DecodingOptions(beam_size=beam_size))
    b = gpu.decode(mel.cuda(), DecodingOptions(beam_size=beam_size))
    assert b.text == a.text


@pytest.mark.parametrize("mode", ["self_only", "none"])
def test_cache_modes_identical_on_cuda(models, jfk_path, mode):
    _, gpu = models
    mel = log_mel_spectrogram(pad_or_trim(load_audio(jfk_path)), device="cuda")
    assert gpu.decode(mel, kv_cache=mode).tokens == gpu.decode(mel).tokens
