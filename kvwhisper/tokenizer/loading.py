"""Reading BPE vocabularies from the file formats Whisper checkpoints ship, and fitting them to a model.

Supported inputs (all byte-level BPE with GPT-2's byte-to-unicode alphabet, except `.tiktoken`):

- a Hugging Face `tokenizer.json` (fast tokenizer: `model.vocab`, `model.merges`, `added_tokens`);
- a Hugging Face `vocab.json` + `merges.txt` pair (slow tokenizer; `added_tokens.json` is used if present);
- a `.tiktoken` rank file (`<base64 bytes> <rank>` per line, the reference implementation's assets);
- a CTranslate2 `vocabulary.json` (JSON list) / `vocabulary.txt` (one token per line), id = position.

tiktoken only needs the ranks (bytes -> rank); merges are read solely to check they agree with the ranks,
which is what makes tiktoken's rank-driven merging produce the same tokens as the file's own BPE.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import tiktoken

from .errors import TokenizerError
from .languages import LANGUAGES
from .specials import (
    ALL_SPECIAL_NAMES,
    DEFAULT_NUM_LANGUAGES,
    ENGLISH_N_RANKS,
    MULTILINGUAL_N_RANKS,
    N_TIMESTAMPS,
    VocabLayout,
    build_encoding,
    canonical_special_name,
    language_token_name,
)

_BASE64_LINE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_LANGUAGE_TOKEN_NAMES = frozenset(language_token_name(code) for code in LANGUAGES)
# specials other than the language tokens: eot, sot, the six control tokens and the timestamps
_N_NON_LANGUAGE_SPECIALS = 2 + 6 + N_TIMESTAMPS


@dataclass(frozen=True)
class BpeVocabulary:
    """What one tokenizer file says: its BPE ranks and the special tokens (if any) it numbers itself."""

    source: Path
    format: str
    ranks: dict[bytes, int] = field(repr=False)
    # special token (canonical name) -> id, as declared by the file; empty for `.tiktoken` files
    specials: dict[str, int] = field(default_factory=dict, repr=False)
    # the total vocabulary size the file states outright (CTranslate2 lists), else None
    stated_n_vocab: int | None = None

    @property
    def implied_n_vocab(self) -> int | None:
        """The n_vocab of the model this file was made for, when the file says enough to tell."""
        if self.stated_n_vocab is not None:
            return self.stated_n_vocab
        num_languages = sum(name in _LANGUAGE_TOKEN_NAMES for name in self.specials)
        if num_languages == 0:
            return None
        return len(self.ranks) + _N_NON_LANGUAGE_SPECIALS + num_languages


# --- GPT-2's byte <-> unicode alphabet -------------------------------------------------------------------


@lru_cache(maxsize=1)
def gpt2_unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's `bytes_to_unicode`: the printable character that stands for each byte.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls, space, 0x7F-0xA0, 0xAD)
    are shifted to U+0100.. in byte order, so that every token string is printable and whitespace-free.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {chr(b): b for b in printable}
    shifted = (b for b in range(256) if b not in mapping.values())
    mapping.update({chr(256 + n): b for n, b in enumerate(shifted)})
    return mapping


def token_string_to_bytes(token: str, source: Path) -> bytes:
    table = gpt2_unicode_to_byte()
    try:
        return bytes(table[ch] for ch in token)
    except KeyError as e:
        raise TokenizerError(
            f"{source}: token {token!r} is not in GPT-2's byte-level alphabet (character {e.args[0]!r}); "
            "only byte-level BPE vocabularies are supported"
        ) from None


def _ranks_from_token_ids(token_ids: Iterable[tuple[str, int]], source: Path) -> dict[bytes, int]:
    """bytes -> rank for the non-special entries of a byte-level vocabulary, checked to be 0..n-1."""
    ranks: dict[bytes, int] = {}
    for token, token_id in token_ids:
        token_bytes = token_string_to_bytes(token, source)
        if token_bytes in ranks:
            raise TokenizerError(f"{source}: two tokens decode to the same bytes {token_bytes!r}")
        ranks[token_bytes] = token_id
    _check_contiguous(ranks.values(), source)
    return ranks


def _check_contiguous(ids: Iterable[int], source: Path) -> None:
    # tiktoken numbers ranks and specials in one id space, so a gap would shift every special token
    ordered = sorted(ids)
    if ordered != list(range(len(ordered))):
        first_gap = next(i for i, value in enumerate(ordered) if value != i)
        raise TokenizerError(
            f"{source}: BPE token ids are not 0..{len(ordered) - 1} without gaps (first gap at {first_gap})"
        )


def _check_merges(merges: Iterable[tuple[str, str]], vocab: Mapping[str, int], source: Path) -> None:
    """Each merge must produce a token ranked after its parts, and later merges must rank later.

    That is the property that lets tiktoken (which merges the lowest-ranked result first) reproduce a
    merges-driven BPE; GPT-2-derived vocabularies, Whisper's included, are built that way.
    """
    previous = -1
    for number, (left, right) in enumerate(merges, start=1):
        merged = vocab.get(left + right)
        if merged is None or left not in vocab or right not in vocab:
            raise TokenizerError(
                f"{source}: merge #{number} ({left!r} {right!r}) uses tokens not in the vocab"
            )
        if merged <= previous or merged <= vocab[left] or merged <= vocab[right]:
            raise TokenizerError(
                f"{source}: merge #{number} ({left!r} {right!r}) is out of rank order; "
                "tiktoken would not reproduce this tokenizer"
            )
        previous = merged


def _split_special_entries(vocab: Mapping[str, int], special_ids: set[int]) -> tuple[list, dict[str, int]]:
    """(ordinary (token, id) pairs, special name -> id) of a vocab that may list specials among its tokens."""
    ordinary, specials = [], {}
    for token, token_id in vocab.items():
        if token_id in special_ids or token in ALL_SPECIAL_NAMES:
            if token in ALL_SPECIAL_NAMES:
                specials[canonical_special_name(token)] = token_id
        else:
            ordinary.append((token, token_id))
    return ordinary, specials


# --- file formats ------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path}: not a valid JSON tokenizer file ({e})") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{path}: not a UTF-8 text file ({e})") from None


def read_tiktoken(path: Path) -> BpeVocabulary:
    """A `.tiktoken` rank file: `<base64 token bytes> <rank>` per line (blank lines ignored)."""
    ranks: dict[bytes, int] = {}
    for line_no, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not _BASE64_LINE.fullmatch(parts[0]) or not parts[1].isdigit():
            raise TokenizerError(f"{path}: line {line_no} is not '<base64 token> <rank>': {line[:80]!r}")
        try:
            # not strict mode: the multilingual file's last token is the empty string, written "="
            token = base64.b64decode(parts[0])
        except binascii.Error as e:
            raise TokenizerError(f"{path}: line {line_no}: bad base64 ({e})") from None
        if token in ranks:
            raise TokenizerError(f"{path}: line {line_no}: token {token!r} appears twice")
        ranks[token] = int(parts[1])
    if not ranks:
        raise TokenizerError(f"{path}: no BPE ranks in file")
    _check_contiguous(ranks.values(), path)
    return BpeVocabulary(source=path, format="tiktoken", ranks=ranks)


def read_hf_tokenizer_json(path: Path, data: Any | None = None) -> BpeVocabulary:
    """A Hugging Face fast-tokenizer `tokenizer.json` of a byte-level BPE model."""
    data = _read_json(path) if data is None else data
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("vocab"), dict):
        raise TokenizerError(f"{path}: not a Hugging Face tokenizer.json (no model.vocab)")
    if model.get("type", "BPE") != "BPE":
        raise TokenizerError(f"{path}: tokenizer model is {model.get('type')!r}, not BPE")
    added = data.get("added_tokens") or []
    try:
        added_ids = {int(entry["id"]): str(entry["content"]) for entry in added}
    except (KeyError, TypeError, ValueError):
        raise TokenizerError(f"{path}: malformed added_tokens") from None

    vocab = model["vocab"]
    ordinary, specials = _split_special_entries(vocab, set(added_ids))
    ranks = _ranks_from_token_ids(ordinary, path)
    _check_merges(_parse_merge_entries(model.get("merges") or [], path), dict(ordinary), path)
    for token_id, content in added_ids.items():
        if content in ALL_SPECIAL_NAMES:
            specials[canonical_special_name(content)] = token_id
    return BpeVocabulary(source=path, format="tokenizer.json", ranks=ranks, specials=specials)


def _parse_merge_entries(entries: Iterable[Any], source: Path) -> list[tuple[str, str]]:
    """Merges as `"a b"` strings (older files, merges.txt) or `["a", "b"]` pairs (tokenizers >= 0.20)."""
    merges = []
    for entry in entries:
        pair = entry.split(" ") if isinstance(entry, str) else entry
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise TokenizerError(f"{source}: malformed merge {entry!r}")
        merges.append((str(pair[0]), str(pair[1])))
    return merges


def read_vocab_and_merges(
    vocab_path: Path, merges_path: Path | None = None, vocab: Any | None = None
) -> BpeVocabulary:
    """A Hugging Face slow-tokenizer `vocab.json` (+ `merges.txt`, + `added_tokens.json` when present)."""
    vocab = _read_json(vocab_path) if vocab is None else vocab
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise TokenizerError(f"{vocab_path}: not a vocab.json (expected an object of token -> id)")
    added_path = vocab_path.with_name("added_tokens.json")
    added = _read_json(added_path) if added_path.is_file() else {}
    if not isinstance(added, dict):
        raise TokenizerError(f"{added_path}: expected an object of token -> id")

    ordinary, specials = _split_special_entries(vocab, set(added.values()))
    ranks = _ranks_from_token_ids(ordinary, vocab_path)
    if merges_path is not None:
        lines = [ln.rstrip("\r") for ln in _read_text(merges_path).split("\n")]
        lines = [ln for ln in lines if ln and not ln.startswith("#version")]
        _check_merges(_parse_merge_entries(lines, merges_path), dict(ordinary), merges_path)
    for content, token_id in added.items():
        if content in ALL_SPECIAL_NAMES:
            specials[canonical_special_name(content)] = int(token_id)
    return BpeVocabulary(source=vocab_path, format="vocab.json+merges.txt", ranks=ranks, specials=specials)


def read_ctranslate2_vocabulary(path: Path, data: Any | None = None) -> BpeVocabulary:
    """A CTranslate2 `vocabulary.json` (list) or `vocabulary.txt` (lines): id = position, specials too."""
    if data is None:
        if path.suffix == ".json":
            data = _read_json(path)
        else:
            # split on "\n" only: an empty line is a real (empty) token, and byte-level strings hold no "\n"
            data = _read_text(path).split("\n")
            if data and data[-1] == "":
                data.pop()
    if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
        raise TokenizerError(f"{path}: not a CTranslate2 vocabulary (expected a list of token strings)")
    ordinary = [(token, i) for i, token in enumerate(data) if token not in ALL_SPECIAL_NAMES]
    specials = {canonical_special_name(t): i for i, t in enumerate(data) if t in ALL_SPECIAL_NAMES}
    ranks = _ranks_from_token_ids(ordinary, path)
    return BpeVocabulary(
        source=path, format="ctranslate2 vocabulary", ranks=ranks, specials=specials, stated_n_vocab=len(data)
    )


def _read_json_file(path: Path) -> BpeVocabulary:
    """Dispatch a JSON file on its shape: tokenizer.json object, vocab.json object or CTranslate2 list."""
    data = _read_json(path)
    if isinstance(data, dict) and isinstance(data.get("model"), dict):  # GPT-2's vocab has a "model" token
        return read_hf_tokenizer_json(path, data)
    if isinstance(data, list):
        return read_ctranslate2_vocabulary(path, data)
    if isinstance(data, dict):
        merges = path.with_name("merges.txt")
        return read_vocab_and_merges(path, merges if merges.is_file() else None, data)
    raise TokenizerError(f"{path}: JSON file is neither a tokenizer.json, a vocab.json nor a vocabulary list")


def _read_unknown_file(path: Path) -> BpeVocabulary:
    """A file with an unfamiliar name: try it as JSON, then as a rank file, and report both failures."""
    errors = []
    for reader in (_read_json_file, read_tiktoken):
        try:
            return reader(path)
        except TokenizerError as e:
            errors.append(str(e).removeprefix(f"{path}: "))
    raise TokenizerError(f"{path}: not a recognised tokenizer file ({'; '.join(errors)})")


def locate_tokenizer_file(directory: Path) -> Path:
    """The tokenizer file inside a model directory, in order of preference."""
    candidates = [directory / "tokenizer.json"]
    if (directory / "merges.txt").is_file():
        candidates.append(directory / "vocab.json")  # read together with the merges.txt beside it
    candidates += [directory / "vocabulary.json", directory / "vocabulary.txt"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    rank_files = sorted(directory.glob("*.tiktoken"))
    if len(rank_files) == 1:
        return rank_files[0]
    raise TokenizerError(
        f"{directory}: no tokenizer found in directory (looked for tokenizer.json, vocab.json + merges.txt, "
        "vocabulary.json, vocabulary.txt, or a single *.tiktoken file)"
    )


def read_vocabulary(path: str | os.PathLike[str]) -> BpeVocabulary:
    """Read any supported tokenizer file, or the tokenizer inside a model directory."""
    path = Path(path)
    try:
        if path.is_dir():
            path = locate_tokenizer_file(path)
        if not path.exists():
            raise TokenizerError(f"{path}: tokenizer file not found")
        if path.suffix == ".tiktoken":
            return read_tiktoken(path)
        if path.name == "merges.txt":
            return read_vocab_and_merges(path.with_name("vocab.json"), path)
        if path.suffix == ".json":
            return _read_json_file(path)
        if path.name == "vocabulary.txt":
            return read_ctranslate2_vocabulary(path)
        return _read_unknown_file(path)
    except OSError as e:
        raise TokenizerError(f"{path}: cannot read tokenizer file ({e.strerror or e})") from None


# --- fitting a file to a model -----------------------------------------------------------------------------


def resolve_layout(vocab: BpeVocabulary, n_vocab: int | None = None) -> VocabLayout:
    """The layout for this vocabulary: from the model's `n_vocab` when given, else inferred from the file.

    Raises TokenizerError when the file cannot be the model's tokenizer: wrong number of BPE ranks for
    the layout, a different total size, or special tokens declared at other ids than the layout's.
    """
    implied = vocab.implied_n_vocab
    if n_vocab is None:
        if implied is not None:
            layout = _layout_or_error(vocab, implied)
        else:
            # a bare rank table says nothing about languages; every model but large-v3 has 99
            layout = VocabLayout(len(vocab.ranks) == MULTILINGUAL_N_RANKS, DEFAULT_NUM_LANGUAGES)
    else:
        layout = _layout_or_error(vocab, n_vocab)
        if implied is not None and implied != n_vocab:
            raise _mismatch(vocab, layout, "")
    if len(vocab.ranks) != layout.n_ranks:
        raise _mismatch(vocab, layout, f"that layout needs {layout.n_ranks} BPE tokens")
    _check_declared_specials(vocab, layout)
    return layout


def _layout_or_error(vocab: BpeVocabulary, n_vocab: int) -> VocabLayout:
    try:
        return VocabLayout.from_n_vocab(n_vocab)
    except TokenizerError as e:
        raise TokenizerError(f"{vocab.source}: {e}") from None


def _describe_file_size(vocab: BpeVocabulary) -> str:
    n_ranks = len(vocab.ranks)
    kinds = {ENGLISH_N_RANKS: "English-only", MULTILINGUAL_N_RANKS: "multilingual"}
    kind = kinds.get(n_ranks, "not Whisper's")
    implied = vocab.implied_n_vocab
    if implied is None:
        return f"{n_ranks} ({kind} BPE tokens; the file lists no special tokens)"
    return f"{implied} tokens ({n_ranks} BPE tokens, {kind})"


def _mismatch(vocab: BpeVocabulary, layout: VocabLayout, detail: str) -> TokenizerError:
    return TokenizerError(
        f"{vocab.source}: tokenizer does not match the model: the file's vocabulary size is "
        f"{_describe_file_size(vocab)} but the model's n_vocab is {layout.n_vocab} "
        f"({layout.describe()}){'; ' + detail if detail else ''}"
    )


def _check_declared_specials(vocab: BpeVocabulary, layout: VocabLayout) -> None:
    expected = layout.special_tokens
    for name, token_id in sorted(vocab.specials.items(), key=lambda item: item[1]):
        want = expected.get(name)
        if want == token_id or (want is None and token_id >= layout.n_vocab):
            continue  # agrees, or an extra token the model can never emit
        where = f"id {want}" if want is not None else "no slot"
        detail = f"special token {name} is id {token_id} in the file but has {where} there"
        raise _mismatch(vocab, layout, detail)


@lru_cache(maxsize=8)
def _cached_encoding(path: str, stamp: tuple[int, int], n_vocab: int | None) -> tuple[tiktoken.Encoding, int]:
    del stamp  # part of the cache key only: a rewritten file gets a fresh encoding
    vocab = read_vocabulary(path)
    layout = resolve_layout(vocab, n_vocab)
    name = f"{vocab.source.parent.name}/{vocab.source.name}"
    return build_encoding(name, vocab.ranks, layout), layout.num_languages


def load_encoding(path: str | os.PathLike[str], n_vocab: int | None = None) -> tuple[tiktoken.Encoding, int]:
    """(tiktoken encoding, num_languages) for a tokenizer file or model directory; cached per file version."""
    resolved = Path(path).expanduser().resolve()
    if resolved.is_dir():
        resolved = locate_tokenizer_file(resolved)  # so the cache key tracks the file, not the directory
    try:
        info = resolved.stat()
        stamp = (info.st_mtime_ns, info.st_size)
    except OSError:
        stamp = (0, 0)  # reading it will raise the proper error
    return _cached_encoding(str(resolved), stamp, n_vocab)
