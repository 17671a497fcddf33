"""Checkpoint formats <-> a reference-named state dict.

Every reader returns `Checkpoint(dims, state_dict, alignment_heads, tokenizer_path)` with the reference's
parameter names; every writer takes a loaded model. Formats:
- openai: the reference's `.pt`, `{"dims": {...}, "model_state_dict": {...}}`
- hf: a Hugging Face folder (`config.json` + `model.safetensors` or `pytorch_model.bin`)
- ct2: a CTranslate2 folder (`model.bin` + `config.json` + tokenizer file); fused QKV are split, int8 weights
  are dequantized with their per-row scales.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .dims import ModelDims
from .fields import ModelLoadError, alignment_heads, one_line, read_json


@dataclass
class Checkpoint:
    dims: ModelDims
    state_dict: dict[str, Tensor]  # reference names
    alignment_heads: list[tuple[int, int]] | None = None
    tokenizer_path: Path | None = None  # the checkpoint's own tokenizer file, when it ships one


def detect_format(path: Path) -> str:
    """'openai', 'hf' or 'ct2' for a file or folder; ModelLoadError when it is none of them."""
    if path.is_file():
        if path.name == "model.bin" and (path.parent / "config.json").exists():
            return "ct2"
        return "openai"
    if path.is_dir():
        if (path / "model.bin").exists():
            return "ct2"
        if (path / "model.safetensors").exists() or (path / "pytorch_model.bin").exists():
            return "hf"
        raise ModelLoadError(
            f"{path}: folder holds no model.bin (CTranslate2), model.safetensors or pytorch_model.bin (Hugging Face)"
        )
    raise ModelLoadError(f"{path}: no such file or folder")


def find_tokenizer_file(folder: Path) -> Path | None:
    for name in ("tokenizer.json", "vocab.json", "multilingual.tiktoken", "gpt2.tiktoken"):
        if (folder / name).exists():
            return folder / name if name != "vocab.json" else folder
    return None


# ---------------------------------------------------------------------------------------------------------
# openai .pt


def read_openai(path: Path) -> Checkpoint:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, pickle refused, ...
        raise ModelLoadError(f"{path}: not a readable PyTorch checkpoint ({one_line(e)})") from e
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        raise ModelLoadError(
            f"{path}: not a Whisper checkpoint (expected keys 'dims' and 'model_state_dict')"
        )
    try:
        dims = ModelDims(**ckpt["dims"])
    except TypeError as e:
        raise ModelLoadError(f"{path}: bad 'dims' ({e})") from e
    heads = ckpt.get("alignment_heads")  # written by `kvwhisper convert`; absent from the official files
    return Checkpoint(
        dims, dict(ckpt["model_state_dict"]), alignment_heads(heads, dims, f"{path}: 'alignment_heads'")
    )


def write_openai(model, path: Path) -> None:
    """The reference's layout; weights as they are in the model (fp32 unless it was loaded otherwise)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    heads = [tuple(map(int, hw)) for hw in model.alignment_heads.nonzero().tolist()]
    torch.save({"dims": model.dims.to_dict(), "model_state_dict": state, "alignment_heads": heads}, path)


# ---------------------------------------------------------------------------------------------------------
# Hugging Face

# reference name pattern -> HF name pattern ({i}: layer index)
_HF_BLOCK = {
    "attn.query": "self_attn.q_proj",
    "attn.key": "self_attn.k_proj",
    "attn.value": "self_attn.v_proj",
    "attn.out": "self_attn.out_proj",
    "attn_ln": "self_attn_layer_norm",
    "cross_attn.query": "encoder_attn.q_proj",
    "cross_attn.key": "encoder_attn.k_proj",
    "cross_attn.value": "encoder_attn.v_proj",
    "cross_attn.out": "encoder_attn.out_proj",
    "cross_attn_ln": "encoder_attn_layer_norm",
    "mlp.0": "fc1",
    "mlp.2": "fc2",
    "mlp_ln": "final_layer_norm",
}
_HF_TOP = {
    "encoder.conv1": "model.encoder.conv1",
    "encoder.conv2": "model.encoder.conv2",
    "encoder.positional_embedding": "model.encoder.embed_positions.weight",
    "encoder.ln_post": "model.encoder.layer_norm",
    "decoder.token_embedding": "model.decoder.embed_tokens",
    "decoder.positional_embedding": "model.decoder.embed_positions.weight",
    "decoder.ln": "model.decoder.layer_norm",
}


def reference_to_hf_name(name: str) -> str:
    m = re.match(r"(encoder|decoder)\.blocks\.(\d+)\.(.+)\.(weight|bias)$", name)
    if m:
        side, i, part, kind = m.groups()
        return f"model.{side}.layers.{i}.{_HF_BLOCK[part]}.{kind}"
    for ref, hf in _HF_TOP.items():
        if name == ref:
            return hf
        if name.startswith(ref + "."):
            return hf + name[len(ref) :]
    raise KeyError(name)


def _hf_dims(config: dict, path: Path) -> ModelDims:
    try:
        return ModelDims(
            n_mels=config["num_mel_bins"],
            n_audio_ctx=config["max_source_positions"],
            n_audio_state=config["d_model"],
            n_audio_head=config["encoder_attention_heads"],
            n_audio_layer=config["encoder_layers"],
            n_vocab=config["vocab_size"],
            n_text_ctx=config["max_target_positions"],
            n_text_state=config["d_model"],
            n_text_head=config["decoder_attention_heads"],
            n_text_layer=config["decoder_layers"],
        )
    except KeyError as e:
        raise ModelLoadError(f"{path}/config.json: missing Whisper field {e}") from e


def read_hf(folder: Path) -> Checkpoint:
    config = read_json(folder / "config.json")
    dims = _hf_dims(config, folder)
    if (folder / "model.safetensors").exists():
        from safetensors.torch import load_file

        try:
            hf_state = load_file(str(folder / "model.safetensors"))
        except Exception as e:
            raise ModelLoadError(f"{folder}/model.safetensors: unreadable ({one_line(e)})") from e
    else:
        try:
            hf_state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as e:
            raise ModelLoadError(f"{folder}/pytorch_model.bin: unreadable ({one_line(e)})") from e
    state = {}
    for name in _reference_names(dims):
        hf = reference_to_hf_name(name)
        if hf not in hf_state:
            raise ModelLoadError(f"{folder}: missing tensor {hf} (for {name})")
        state[name] = hf_state[hf]
    gen_path = folder / "generation_config.json"
    heads = read_json(gen_path).get("alignment_heads") if gen_path.exists() else None
    heads = alignment_heads(heads, dims, f"{gen_path}: field 'alignment_heads'")
    return Checkpoint(dims, state, heads, find_tokenizer_file(folder))


def write_hf(model, folder: Path) -> None:
    """A Hugging Face Whisper folder (config, safetensors, generation config, tokenizer, feature extractor)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    d = model.dims
    state = {reference_to_hf_name(k): v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    tok = model.tokenizer
    config = {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "num_mel_bins": d.n_mels,
        "max_source_positions": d.n_audio_ctx,
        "d_model": d.n_audio_state,
        "encoder_attention_heads": d.n_audio_head,
        "encoder_layers": d.n_audio_layer,
        "encoder_ffn_dim": 4 * d.n_audio_state,
        "vocab_size": d.n_vocab,
        "max_target_positions": d.n_text_ctx,
        "decoder_attention_heads": d.n_text_head,
        "decoder_layers": d.n_text_layer,
        "decoder_ffn_dim": 4 * d.n_text_state,
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "pad_token_id": tok.eot,
        "bos_token_id": tok.eot,
        "eos_token_id": tok.eot,
        "decoder_start_token_id": tok.sot,
        "begin_suppress_tokens": [tok.encode(" ")[0], tok.eot],
        "suppress_tokens": list(tok.non_speech_tokens),
        "torch_dtype": str(model.dtype).replace("torch.", ""),
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    heads = [list(map(int, hw)) for hw in model.alignment_heads.nonzero().tolist()]
    gen = {
        "alignment_heads": heads,
        "decoder_start_token_id": tok.sot,
        "eos_token_id": tok.eot,
        "pad_token_id": tok.eot,
        "bos_token_id": tok.eot,
        "begin_suppress_tokens": config["begin_suppress_tokens"],
        "suppress_tokens": config["suppress_tokens"],
        "no_timestamps_token_id": tok.no_timestamps,
        "max_initial_timestamp_index": 50,
        "max_length": d.n_text_ctx,
        "is_multilingual": model.is_multilingual,
        "forced_decoder_ids": None,
        "return_timestamps": False,
    }
    if model.is_multilingual:
        gen["lang_to_id"] = {f"<|{c}|>": t for c, t in zip(tok.all_language_codes, tok.all_language_tokens)}
        gen["task_to_id"] = {"transcribe": tok.transcribe, "translate": tok.translate}
    (folder / "generation_config.json").write_text(json.dumps(gen, indent=2))
    preproc = {
        "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": d.n_mels,
        "sampling_rate": 16000,
        "hop_length": 160,
        "n_fft": 400,
        "chunk_length": 30,
        "n_samples": 480000,
        "nb_max_frames": 3000,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": False,
        "processor_class": "WhisperProcessor",
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(preproc, indent=2))
    src = getattr(model, "tokenizer_path", None)
    if src is not None and Path(src).is_file() and Path(src).name == "tokenizer.json":
        (folder / "tokenizer.json").write_bytes(Path(src).read_bytes())


# ---------------------------------------------------------------------------------------------------------
# CTranslate2

# CTranslate2's DataType enum -> numpy dtype (bf16 is read as raw uint16 and widened below)
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}


def read_ct2_variables(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Parse a CTranslate2 `model.bin` (binary versions 3..6): {name: tensor}, {alias: target}."""
    data = path.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise ModelLoadError(f"{path}: truncated at byte {pos} of {len(data)}")
        out = struct.unpack_from(fmt, data, pos)
        pos += size
        return out[0] if len(out) == 1 else out

    def string() -> str:
        n = take("<H")
        s = take(f"<{n}s")
        return s.rstrip(b"\0").decode()

    version = take("<I")
    if not 3 <= version <= 6:
        raise ModelLoadError(f"{path}: unsupported CTranslate2 binary version {version} (this reads 3 to 6)")
    spec = string()
    if spec and spec != "WhisperSpec":
        raise ModelLoadError(f"{path}: a CTranslate2 {spec} model, not Whisper")
    take("<I")  # spec revision
    variables = {}
    for _ in range(take("<I")):
        name = string()
        rank = take("<B")
        shape = [take("<I") for _ in range(rank)]
        type_id = take("<B")
        n_bytes = take("<I")
        if type_id not in _CT2_DTYPES:
            raise ModelLoadError(f"{path}: variable {name} has unknown data type {type_id}")
        if pos + n_bytes > len(data):
            raise ModelLoadError(f"{path}: truncated in variable {name} (byte {pos} of {len(data)})")
        arr = np.frombuffer(
            data,
            dtype=_CT2_DTYPES[type_id],
            count=n_bytes // np.dtype(_CT2_DTYPES[type_id]).itemsize,
            offset=pos,
        ).reshape(shape)
        t = torch.from_numpy(arr.copy())
        if type_id == 5:  # bfloat16 bits -> float32
            t = (t.to(torch.int32) << 16).view(torch.float32)
        variables[name] = t
        pos += n_bytes
    aliases = {}
    for _ in range(take("<I")):
        alias = string()
        aliases[alias] = string()
    return variables, aliases


def _ct2_weight(variables: dict[str, Tensor], name: str, path: Path) -> Tensor:
    if name not in variables:
        raise ModelLoadError(f"{path}: missing variable {name}")
    w = variables[name]
    if w.dtype == torch.int8:  # int8 quantization: per-output-row scales, w_float = w_int8 / scale
        scale = variables.get(name + "_scale")
        if scale is None:
            raise ModelLoadError(f"{path}: int8 variable {name} has no {name}_scale")
        w = w.float() / scale.float().reshape(-1, *([1] * (w.dim() - 1)))
    elif not w.is_floating_point():
        raise ModelLoadError(f"{path}: variable {name} has integer type {w.dtype}")
    return w


def _ct2_dims(v: dict[str, Tensor], config: dict, path: Path) -> ModelDims:
    def count(prefix: str) -> int:
        return len(
            {k.split("/")[1] for k in v if k.startswith(prefix + "/layer_") and k.split("/")[1][6:].isdigit()}
        )

    try:
        conv1 = v["encoder/conv1/weight"]
        return ModelDims(
            n_mels=conv1.shape[1],
            n_audio_ctx=v["encoder/position_encodings/encodings"].shape[0],
            n_audio_state=conv1.shape[0],
            n_audio_head=int(v["encoder/num_heads"]),
            n_audio_layer=count("encoder"),
            n_vocab=v["decoder/embeddings/weight"].shape[0],
            n_text_ctx=v["decoder/position_encodings/encodings"].shape[0],
            n_text_state=v["decoder/embeddings/weight"].shape[1],
            n_text_head=int(v["decoder/num_heads"]),
            n_text_layer=count("decoder"),
        )
    except KeyError as e:
        raise ModelLoadError(f"{path}: missing variable {e}: not a CTranslate2 Whisper model") from e


def ct2_layout(dims: ModelDims) -> list[tuple[str, str, tuple[str, ...]]]:
    """The CTranslate2 Whisper layout, one entry per CTranslate2 variable group: (kind, its name, our names).

    kind: "linear" (`/weight`, `/bias` <- `.weight`, `.bias`), "norm" (`/gamma`, `/beta`), "fused" (a projection
    stacked along its outputs, [q; k; v] or [k; v]; the key has no bias and its part of `/bias` is zeros),
    "tensor" (the variable itself <- our parameter of the same meaning). Read by the loader, and by anything
    that writes the layout (the tests' writer)."""
    layout = []
    for side, n_layer in (("encoder", dims.n_audio_layer), ("decoder", dims.n_text_layer)):
        for i in range(n_layer):
            src, dst = f"{side}/layer_{i}", f"{side}.blocks.{i}"
            layout += [
                ("norm", f"{src}/self_attention/layer_norm", (f"{dst}.attn_ln",)),
                (
                    "fused",
                    f"{src}/self_attention/linear_0",
                    tuple(f"{dst}.attn.{p}" for p in ("query", "key", "value")),
                ),
                ("linear", f"{src}/self_attention/linear_1", (f"{dst}.attn.out",)),
            ]
            if side == "decoder":
                layout += [
                    ("norm", f"{src}/attention/layer_norm", (f"{dst}.cross_attn_ln",)),
                    ("linear", f"{src}/attention/linear_0", (f"{dst}.cross_attn.query",)),
                    (
                        "fused",
                        f"{src}/attention/linear_1",
                        (f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"),
                    ),
                    ("linear", f"{src}/attention/linear_2", (f"{dst}.cross_attn.out",)),
                ]
            layout += [
                ("norm", f"{src}/ffn/layer_norm", (f"{dst}.mlp_ln",)),
                ("linear", f"{src}/ffn/linear_0", (f"{dst}.mlp.0",)),
                ("linear", f"{src}/ffn/linear_1", (f"{dst}.mlp.2",)),
            ]
    return layout + [
        ("linear", "encoder/conv1", ("encoder.conv1",)),
        ("linear", "encoder/conv2", ("encoder.conv2",)),
        ("tensor", "encoder/position_encodings/encodings", ("encoder.positional_embedding",)),
        ("norm", "encoder/layer_norm", ("encoder.ln_post",)),
        ("tensor", "decoder/embeddings/weight", ("decoder.token_embedding.weight",)),
        ("tensor", "decoder/position_encodings/encodings", ("decoder.positional_embedding",)),
        ("norm", "decoder/layer_norm", ("decoder.ln",)),
    ]


def _ct2_state(v: dict[str, Tensor], dims: ModelDims, path: Path) -> dict[str, Tensor]:
    """Our state dict from CTranslate2 variables (`ct2_layout`)."""
    s: dict[str, Tensor] = {}
    for kind, src, dst in ct2_layout(dims):
        if kind == "tensor":
            s[dst[0]] = _ct2_weight(v, src, path)
        elif kind == "norm":
            s[f"{dst[0]}.weight"] = _ct2_weight(v, f"{src}/gamma", path)
            s[f"{dst[0]}.bias"] = _ct2_weight(v, f"{src}/beta", path)
        else:  # linear, fused: the parts' rows in order
            weight, bias = _ct2_weight(v, f"{src}/weight", path), _ct2_weight(v, f"{src}/bias", path)
            n = weight.shape[0] // len(dst)
            for name, w, b in zip(dst, weight.split(n), bias.split(n)):
                s[f"{name}.weight"] = w
                if not name.endswith(".key"):
                    s[f"{name}.bias"] = b
    return s


def read_ct2(folder: Path) -> Checkpoint:
    model_bin = folder / "model.bin" if folder.is_dir() else folder
    folder = model_bin.parent
    config = read_json(folder / "config.json") if (folder / "config.json").exists() else {}
    variables, aliases = read_ct2_variables(model_bin)
    dims = _ct2_dims(variables, config, model_bin)
    state = _ct2_state(variables, dims, model_bin)
    projection = aliases.get("decoder/projection/weight")
    if (
        projection is None and "decoder/projection/weight" in variables
    ):  # an untied copy: must equal the embedding
        if not torch.equal(variables["decoder/projection/weight"], variables["decoder/embeddings/weight"]):
            raise ModelLoadError(
                f"{model_bin}: output projection differs from the token embedding (not Whisper)"
            )
    heads = alignment_heads(
        config.get("alignment_heads"), dims, f"{folder / 'config.json'}: field 'alignment_heads'"
    )
    return Checkpoint(dims, state, heads, find_tokenizer_file(folder))


# ---------------------------------------------------------------------------------------------------------


def _reference_names(dims: ModelDims) -> list[str]:
    from .network import Whisper

    with torch.device("meta"):
        return list(Whisper(dims).state_dict().keys())


READERS = {"openai": read_openai, "hf": read_hf, "ct2": read_ct2}
