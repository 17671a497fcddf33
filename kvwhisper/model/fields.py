"""Reading a checkpoint's side files and fields, and the error every checkpoint problem raises."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .dims import ModelDims


class ModelLoadError(RuntimeError):
    """Weights that cannot be loaded: missing, truncated, wrong shapes, unknown format, tokenizer mismatch."""


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; ModelLoadError when it is missing, not JSON or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ModelLoadError(f"{path}: missing") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{path}: not valid JSON ({e})") from e
    except OSError as e:
        raise ModelLoadError(f"{path}: unreadable ({e.strerror or e})") from e
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object {{...}}, found a JSON {type(data).__name__}")
    return data


def alignment_heads(raw: object, dims: ModelDims, where: str) -> list[tuple[int, int]] | None:
    """A checkpoint's ``alignment_heads``: (layer, head) pairs inside the decoder; None when absent or empty.
    ModelLoadError naming ``where`` (the file and field) when malformed or out of range."""
    if raw is None or (isinstance(raw, list | tuple) and not raw):
        return None
    if not isinstance(raw, list | tuple):
        raise ModelLoadError(f"{where}: expected a list of [layer, head] pairs, found {type(raw).__name__}")
    heads = []
    for item in raw:
        ok = isinstance(item, list | tuple) and len(item) == 2
        ok = ok and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in item)
        if not ok:
            raise ModelLoadError(f"{where}: entry {item!r} is not a [layer, head] pair of integers")
        layer, head = int(item[0]), int(item[1])
        if not (0 <= layer < dims.n_text_layer and 0 <= head < dims.n_text_head):
            raise ModelLoadError(
                f"{where}: entry {[layer, head]} is outside the decoder's {dims.n_text_layer} layers "
                f"x {dims.n_text_head} heads"
            )
        heads.append((layer, head))
    return heads


def one_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's text (torch's load errors run to many lines), with its type."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
