"""Test helpers: tiny random-weight models (ours and the reference's with the same numbers)."""

from __future__ import annotations

import torch

from kvwhisper import cpu
from kvwhisper.model import ModelDims, Whisper

# every field of a StepTrace record (session.step().to_dict() and a `kvwhisper trace --json` line)
STEP_TRACE_KEYS = {
    "step",
    "position",
    "fed",
    "fed_text",
    "n_fed",
    "cache",
    "top_k",
    "processors",
    "token",
    "forced",
    "cumulative_logprob",
    "finished",
    "stop_reason",
    "time_ms",
    "beams",
    "beam_finished",
    "no_speech_prob",
    "activations",
    "attention_peak_s",
}

N_VOCAB_EN = 51864
N_VOCAB_MULTI = 51865


def tiny_dims(n_vocab: int = N_VOCAB_EN, n_mels: int = 80) -> ModelDims:
    """Small widths, the real vocabulary and context sizes (the tokenizer and mel frames stay real)."""
    return ModelDims(
        n_mels=n_mels,
        n_audio_ctx=1500,
        n_audio_state=64,
        n_audio_head=2,
        n_audio_layer=2,
        n_vocab=n_vocab,
        n_text_ctx=448,
        n_text_state=64,
        n_text_head=4,
        n_text_layer=2,
    )


def tiny_random_model(
    seed: int = 0, n_vocab: int = N_VOCAB_EN, dtype: torch.dtype = torch.float32, accelerate: bool = True
) -> Whisper:
    """A Whisper of tiny_dims with random weights scaled so that logits are peaked (decodes are not all ties),
    with kvwhisper.cpu's speed-ups as load_model gives them on CPU (`accelerate=False`: the plain network)."""
    torch.manual_seed(seed)
    model = Whisper(tiny_dims(n_vocab))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("positional_embedding"):
                p.normal_(0, 0.5)
            elif p.dim() >= 2:
                p.normal_(0, 1.0 / p.shape[-1] ** 0.5 * (4.0 if "token_embedding" in name else 1.0))
            elif name.endswith("bias"):
                p.normal_(0, 0.02)
    model = model.set_dtype(dtype).eval()
    return cpu.accelerate(model) if accelerate else model


def tiny_fp16_valued_model(seed: int = 3) -> Whisper:
    """The tiny random model with fp16 numbers as weights (as every Whisper checkpoint has): the decoder's
    products go through the kernel that computes each row on its own."""
    model = tiny_random_model(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    return model


def random_mel(seed: int = 0, n: int = 1, n_mels: int = 80) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, n_mels, 3000, generator=g) * 0.5


def reference_copy(model: Whisper):
    """The reference's Whisper (openai-whisper) holding exactly our weights and alignment heads."""
    import whisper.model

    ref = whisper.model.Whisper(whisper.model.ModelDimensions(**model.dims.to_dict()))
    ref.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    return with_our_alignment_heads(ref.eval(), model)


def with_our_alignment_heads(ref, model: Whisper):
    """Give the reference model our alignment heads (a .pt without them gets the reference's all-last-half
    default; loaded by name, the reference would use the official heads, which our checkpoints carry)."""
    ref.register_buffer("alignment_heads", model.alignment_heads.clone().to_sparse(), persistent=False)
    return ref


# -- a CTranslate2 model.bin writer (tests only: the loader must read what the real converter writes) -------

_CT2_TYPE = {"float32": 0, "int8": 1, "int16": 2, "float16": 4}


def _ct2_string(s: str) -> bytes:
    import struct

    b = s.encode() + b"\0"
    return struct.pack("<H", len(b)) + b


def _ct2_variables(model: Whisper) -> dict:
    """CTranslate2 names -> tensors (the loader's `ct2_layout`), with fused [q; k; v] / [k; v] projections
    (key bias zeros)."""
    from kvwhisper.model.checkpoints import ct2_layout

    s = {k: v.detach().float() for k, v in model.state_dict().items()}
    out = {}
    for kind, dst, src in ct2_layout(model.dims):
        if kind == "tensor":
            out[dst] = s[src[0]]
        elif kind == "norm":
            out[f"{dst}/gamma"], out[f"{dst}/beta"] = s[f"{src[0]}.weight"], s[f"{src[0]}.bias"]
        else:
            out[f"{dst}/weight"] = torch.cat([s[f"{p}.weight"] for p in src])
            biases = [s.get(f"{p}.bias", torch.zeros(s[f"{p}.weight"].shape[0])) for p in src]
            out[f"{dst}/bias"] = torch.cat(biases)
    return out


def write_ct2(model: Whisper, folder, dtype: str = "float16", tokenizer_json=None) -> None:
    """Write `model` as a CTranslate2 folder (binary version 6). dtype: float32, float16 or int8 (per-row scales)."""
    import json
    import shutil
    import struct
    from pathlib import Path

    import numpy as np

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []  # (name, array, type name)
    for name, t in _ct2_variables(model).items():
        if dtype == "int8" and name.endswith("/weight") and t.dim() == 2 and "embeddings" not in name:
            scale = 127.0 / t.abs().amax(dim=1).clamp(min=1e-8)
            entries.append((name, torch.round(t * scale[:, None]).to(torch.int8).numpy(), "int8"))
            entries.append((name + "_scale", scale.numpy().astype(np.float32), "float32"))
        else:
            np_dtype = np.float16 if dtype == "float16" else np.float32
            entries.append((name, t.numpy().astype(np_dtype), "float16" if dtype == "float16" else "float32"))
    entries.append(("encoder/num_heads", np.array(model.dims.n_audio_head, dtype=np.int16), "int16"))
    entries.append(("decoder/num_heads", np.array(model.dims.n_text_head, dtype=np.int16), "int16"))
    blob = (
        struct.pack("<I", 6)
        + _ct2_string("WhisperSpec")
        + struct.pack("<I", 3)
        + struct.pack("<I", len(entries))
    )
    for name, arr, type_name in entries:
        raw = np.ascontiguousarray(arr).tobytes()
        blob += (
            _ct2_string(name)
            + struct.pack("<B", arr.ndim)
            + b"".join(struct.pack("<I", x) for x in arr.shape)
        )
        blob += struct.pack("<B", _CT2_TYPE[type_name]) + struct.pack("<I", len(raw)) + raw
    blob += (
        struct.pack("<I", 1)
        + _ct2_string("decoder/projection/weight")
        + _ct2_string("decoder/embeddings/weight")
    )
    (folder / "model.bin").write_bytes(blob)
    heads = model.alignment_heads.nonzero().tolist()
    (folder / "config.json").write_text(
        json.dumps({"alignment_heads": heads, "lang_ids": [], "suppress_ids": []})
    )
    if tokenizer_json is not None:
        shutil.copy(tokenizer_json, folder / "tokenizer.json")
