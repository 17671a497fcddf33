"""What a corpus job reads: input files, folders and manifests expanded into entries, each with the name its
outputs get under the output folder."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass

# files a folder contributes: audio and the video containers PyAV reads (the audio stream is transcribed)
AUDIO_EXTENSIONS = frozenset(
    ".aac .aif .aiff .amr .au .caf .flac .m4a .mka .mp2 .mp3 .oga .ogg .opus .wav .weba .webm .wma "
    ".3gp .avi .flv .m4v .mkv .mov .mp4 .mpeg .mpg .ts .wmv".split()
)
# files read as lists of paths (one per line), or as tables with a `path` column
MANIFEST_EXTENSIONS = frozenset({".txt", ".lst", ".csv", ".tsv", ".jsonl"})


class InputError(ValueError):
    """An input cannot be read as files, a folder or a manifest (a missing path, a manifest without paths)."""


@dataclass(frozen=True)
class Entry:
    """One file of the job. ``path``: absolute; ``name``: where its outputs go, ``<output_dir>/<name>.<ext>``
    (the path relative to the folder it was found in, or to the manifest's common folder, less its
    extension; a file given by itself: its base name)."""

    path: str
    name: str


def find_inputs(inputs: list[str]) -> list[Entry]:
    """The entries of ``inputs`` (files, folders searched recursively for AUDIO_EXTENSIONS, manifests), in
    the order given, folders sorted; a file given twice counts once. InputError for a missing input."""
    entries: list[Entry] = []
    for given in inputs:
        path = os.path.abspath(os.path.expanduser(given))
        if os.path.isdir(path):
            entries += _folder(path)
        elif not os.path.exists(path):
            raise InputError(f"{given}: no such file or folder")
        elif os.path.splitext(path)[1].lower() in MANIFEST_EXTENSIONS:
            entries += _named_by_common_folder(read_manifest(path))
        else:
            entries.append(Entry(path, _stem(os.path.basename(path))))
    unique: dict[str, Entry] = {}
    for entry in entries:
        unique.setdefault(entry.path, entry)
    return list(unique.values())


def name_clashes(entries: list[Entry]) -> dict[str, str]:
    """Entries whose outputs would overwrite an earlier entry's (the same name): path -> that earlier path."""
    first: dict[str, str] = {}
    clashes: dict[str, str] = {}
    for entry in entries:
        owner = first.setdefault(entry.name, entry.path)
        if owner != entry.path:
            clashes[entry.path] = owner
    return clashes


def read_manifest(path: str) -> list[str]:
    """The absolute paths a manifest lists: a text file of paths (one per line; blank lines and lines starting
    with # are skipped), or a CSV / TSV / JSONL table with a ``path`` column. Relative paths are relative to
    the manifest's folder."""
    ext = os.path.splitext(path)[1].lower()
    with open(path, encoding="utf-8", newline="") as f:
        if ext == ".jsonl":
            paths = [_jsonl_path(line, path, n) for n, line in enumerate(f, 1) if line.strip()]
        elif ext in (".csv", ".tsv"):
            reader = csv.DictReader(f, delimiter="\t" if ext == ".tsv" else ",")
            if "path" not in (reader.fieldnames or ()):
                raise InputError(f"{path}: a manifest table needs a 'path' column, found {reader.fieldnames}")
            paths = [row["path"] for row in reader if (row["path"] or "").strip()]
        else:
            paths = [s for line in f if (s := line.strip()) and not s.startswith("#")]
    folder = os.path.dirname(path)
    return [os.path.abspath(os.path.join(folder, os.path.expanduser(p.strip()))) for p in paths]


def _jsonl_path(line: str, manifest: str, n: int) -> str:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"{manifest}, line {n}: not JSON ({e.msg})") from None
    if not isinstance(row, dict) or not isinstance(row.get("path"), str):
        raise InputError(f"{manifest}, line {n}: expected an object with a 'path' string")
    return row["path"]


def _folder(folder: str) -> list[Entry]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS:
                path = os.path.join(root, name)
                found.append(Entry(path, _stem(os.path.relpath(path, folder))))
    return found


def _named_by_common_folder(paths: list[str]) -> list[Entry]:
    if not paths:
        return []
    common = os.path.commonpath([os.path.dirname(p) for p in paths])
    return [Entry(p, _stem(os.path.relpath(p, common))) for p in paths]


def _stem(relative: str) -> str:
    return os.path.splitext(relative)[0]
