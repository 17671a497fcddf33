"""The job's record in its output folder: ``results.jsonl``, one row per file, and the lock that keeps a
second job off the same folder.

A row is appended (and fsync'ed) when a file's outputs are all written, so a row says its outputs are whole.
A file killed between its outputs and its row is simply done again (its outputs are replaced whole). The
table is rewritten with one row per file (the newest) when a job opens and closes it, by a rename, so it is
never seen half-written; a last line cut short by a kill is dropped when the table is read.

Rows are JSON Lines rather than Parquet: a line can be appended as each file finishes, and the local engine
needs no dependency. ``pandas.read_json(path, lines=True)`` or ``pyarrow.json.read_json`` load it as a table.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..transcribe.writers import atomic_open

TABLE_NAME = "results.jsonl"
LOCK_NAME = ".kvwhisper-corpus.lock"
# a temporary file of atomic_open (`.<name>.<8 hex digits>.tmp`): what a killed writer leaves behind
TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")
COLUMNS = (
    "path",  # the source file, absolute
    "output",  # its outputs: <output_dir>/<output>.<ext>
    "size",  # bytes of the source when it was done
    "mtime_ns",  # its modification time then
    "sha256",  # its hash (with verify), else null
    "duration",  # seconds of audio
    "language",
    "text",
    "segments",  # number of segments
    "seconds",  # wall seconds its worker spent on it (files decoded together share the time)
    "status",  # "done" or "error"
    "error",  # why it failed, one line; null when done
    "warning",  # damage found and skipped in its audio, else null
    "settings",  # fingerprint of the model and options that made the outputs
    "worker",  # host:pid of the process that did it
)


class CorpusLockedError(RuntimeError):
    """Another job is running on the same output folder."""


@dataclass(frozen=True)
class Source:
    """What a file was when it was done: its size and mtime, and its hash when the job verifies."""

    size: int
    mtime_ns: int
    sha256: str | None = None

    @classmethod
    def of(cls, path: str, verify: bool = False) -> Source:
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, file_hash(path) if verify else None)


def file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class ResultsTable:
    """``results.jsonl`` of ``output_dir``, open for one job (a context manager): locked, cleared of
    temporary files a killed job left, read into ``rows`` (path -> its newest row, `brief`)."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, TABLE_NAME)
        self.rows: dict[str, dict] = {}
        self._lock = None
        self._file = None

    def __enter__(self) -> ResultsTable:
        self._lock = open(os.path.join(self.output_dir, LOCK_NAME), "a")  # noqa: SIM115 (held until exit)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise CorpusLockedError(f"another corpus job is writing to {self.output_dir}") from None
        self.removed = remove_temporary_files(self.output_dir)
        self.rewrite()
        self.rows = {path: brief(row) for _, row in _lines(self.path) if (path := row["path"])}
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (appended to until exit)
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        with contextlib.suppress(OSError):
            self.rewrite()
        self._lock.close()

    def add(self, row: dict) -> None:
        """Append ``row`` (a file's outputs are whole) and make it durable."""
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.rows[row["path"]] = brief(row)

    def rewrite(self) -> None:
        """The table as one row per file (each file's newest, in the order they were added), replaced whole.
        Streamed from the file, so memory holds a line number per file, not the rows."""
        last: dict[str, int] = {}
        for number, row in _lines(self.path):
            last[row["path"]] = number
        keep = set(last.values())
        with atomic_open(self.path) as f:
            for number, row in _lines(self.path):
                if number in keep:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")


def brief(row: dict) -> dict:
    """What a job keeps of a row in memory: all but the transcript (an hour of speech is ~50 kB of text)."""
    return {key: value for key, value in row.items() if key != "text"}


def _lines(path: str) -> Iterator[tuple[int, dict]]:
    """(line number, row) of a results table's whole rows (a missing table: none); a line that is not a row
    (the last one, cut short by a kill) is skipped."""
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
        for number, line in enumerate(f):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("path"), str):
                yield number, row


def read_rows(path: str) -> dict[str, dict]:
    """path -> the newest row of a results table (a missing table: none), in the order they were added. A
    line that is not a whole row (the last one, cut short by a kill) is skipped."""
    rows: dict[str, dict] = {}
    for _, row in _lines(path):
        rows.pop(row["path"], None)  # the newest row goes last, keeping the job's order
        rows[row["path"]] = row
    return rows


def remove_temporary_files(output_dir: str) -> list[str]:
    """Delete the temporary files (TEMPORARY) under ``output_dir``: outputs a killed job did not finish."""
    removed = []
    for root, _, files in os.walk(output_dir):
        for name in files:
            if TEMPORARY.match(name):
                path = os.path.join(root, name)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    removed.append(path)
    return removed


def output_paths(output_dir: str, name: str, formats: Iterable[str]) -> list[str]:
    return [os.path.join(output_dir, f"{name}.{ext}") for ext in formats]


def is_current(row: dict | None, source: Source, settings: str) -> bool:
    """Whether ``row`` was made from this source (its hash when both have one, else its size and mtime) with
    these settings."""
    if row is None or row.get("settings") != settings:
        return False
    if source.sha256 is not None:
        return row.get("sha256") == source.sha256
    return row.get("size") == source.size and row.get("mtime_ns") == source.mtime_ns
