"""Shared test fixtures: where the real speech lives, and skips that say why."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
DATA_DIR = TESTS_DIR / "data"  # the few clips the core tests need, copied with attribution (SOURCES.md)
REPO_ROOT = TESTS_DIR.parent
SHARED_SPEECH = (REPO_ROOT / ".." / "shared" / "data" / "speech").resolve()

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".mp4", ".webm", ".mkv"}


def shared_speech_available() -> bool:
    return SHARED_SPEECH.is_dir()


def require_shared_speech() -> Path:
    """The shared corpus, or a skip that says it is missing (CI has it; a bare clone may not)."""
    if not shared_speech_available():
        pytest.skip(f"shared speech corpus not found at {SHARED_SPEECH}: wider sweep skipped")
    return SHARED_SPEECH


def shared_audio_files(*folders: str) -> list[Path]:
    """Every audio file under the given folders of the shared corpus (all folders when none given)."""
    if not shared_speech_available():
        return []
    dirs = [SHARED_SPEECH / f for f in folders] if folders else sorted(p for p in SHARED_SPEECH.iterdir())
    return sorted(p for d in dirs if d.is_dir() for p in d.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)


def read_transcripts(folder: Path) -> dict[str, str]:
    """`file<TAB>reference` rows of a folder's transcripts.tsv."""
    path = folder / "transcripts.tsv"
    if not path.exists():
        return {}
    with open(path, encoding="utf-8", newline="") as f:
        return {
            row[0]: row[1] for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if len(row) >= 2
        }


def all_shared_transcripts() -> dict[str, str]:
    """`folder/file -> reference text` over the whole shared corpus (empty when it is absent)."""
    if not shared_speech_available():
        return {}
    out = {}
    for d in sorted(SHARED_SPEECH.iterdir()):
        if d.is_dir():
            out.update({f"{d.name}/{k}": v for k, v in read_transcripts(d).items()})
    return out


@pytest.fixture(scope="session")
def jfk_path() -> Path:
    return DATA_DIR / "jfk.flac"
