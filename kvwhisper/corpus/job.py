"""A corpus job from start to end: inputs found, files already done skipped, the rest sent to an engine, each
row recorded as it arrives, a summary at the end."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import tqdm

from .engines import local_rows, ray_rows
from .inputs import Entry, InputError, find_inputs, name_clashes
from .table import ResultsTable, Source, is_current, output_paths
from .work import JobSpec

ENGINES = ("local", "ray")


@dataclass
class Summary:
    """What a job did: files done now, skipped (done before, or failed before and not retried), failed now.
    ``failed_before``: the skipped files whose row is an error. ``audio_seconds`` / ``seconds``: audio done
    now and the job's wall time. ``table``: the results table's path."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    failed_before: int = 0
    audio_seconds: float = 0.0
    seconds: float = 0.0
    table: str = ""
    errors: dict[str, str] = field(default_factory=dict)  # path -> why, of the files that failed now

    @property
    def ok(self) -> bool:
        """No file of the job is in error, now or from before."""
        return self.failed == 0 and self.failed_before == 0

    def line(self, retry: str = "retry_errors=True") -> str:
        """The summary in a line; ``retry``: how the caller asks for failed files to be redone."""
        before = f" ({self.failed_before} of them failed before: {retry} redoes them)"
        return (
            f"{self.done} done, {self.skipped} skipped{before if self.failed_before else ''}, "
            f"{self.failed} failed; {self.audio_seconds / 3600:.2f} h of audio in {self.seconds:.1f} s; "
            f"results: {self.table}"
        )


def run(
    inputs: list[str] | str,
    output_dir: str,
    *,
    engine: str = "local",
    workers: int = 2,
    threads_per_worker: int = 1,
    address: str | None = None,
    retry_errors: bool = False,
    progress: bool | None = False,
    on_row: Callable[[dict], None] | None = None,
    **spec,
) -> Summary:
    """Transcribe every file of ``inputs`` (files, folders, manifests) into ``output_dir``, skipping those done
    by an earlier run with the same settings (JobSpec's fields: model, options, output_format, batch_size,
    verify, ...). ``engine="ray"`` runs the files on Ray (``workers`` actors of ``threads_per_worker``
    CPUs, on the cluster at ``address`` or on one started here). ``progress``: a bar on stderr (None: when
    it is a terminal). ``on_row(row)`` is called with each row as it is recorded. Returns the Summary; each file's row is in ``<output_dir>/results.jsonl``."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    start = time.perf_counter()
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    entries = find_inputs(inputs)
    if not entries:
        raise InputError(f"no audio or video files in {', '.join(inputs)}")
    os.makedirs(output_dir, exist_ok=True)
    spec = JobSpec(output_dir=output_dir, **spec)
    summary = Summary(table=os.path.join(output_dir, "results.jsonl"))
    with ResultsTable(output_dir) as table:
        sized = plan(table, entries, spec, retry_errors, summary)
        todo = [entry for _, entry in sized]
        if not todo:  # all done before: no model to load, no cluster to start
            rows = iter(())
        elif engine == "local":
            rows = local_rows(spec, todo)
        else:
            rows = ray_rows(
                spec, todo, workers=workers, threads_per_worker=threads_per_worker, address=address
            )
        record(table, rows, summary, Progress(len(todo), sum(n for n, _ in sized), progress), on_row)
    summary.seconds = time.perf_counter() - start
    return summary


def plan(
    table: ResultsTable, entries: list[Entry], spec: JobSpec, retry_errors: bool, summary: Summary
) -> list[tuple[int, Entry]]:
    """The entries still to do with their sizes in bytes, the largest files first. Skipped: a file whose row
    is current (same source and settings) and either
    done with every output present, or an error (unless ``retry_errors``). A file whose outputs would
    overwrite another's gets an error row here."""
    clashes = name_clashes(entries)
    todo: list[tuple[int, Entry]] = []  # (bytes, entry)
    for entry in entries:
        try:
            source = Source.of(entry.path, spec.verify)
        except OSError:
            todo.append((0, entry))  # its worker records why it cannot be read
            continue
        row = table.rows.get(entry.path)
        if entry.path in clashes:
            if not is_current(row, source, spec.settings):
                owner = clashes[entry.path]
                why = f"its outputs would overwrite those of {owner}: give it another output folder"
                table.add(clash_row(entry, source, spec, why))
                summary.failed += 1
                summary.errors[entry.path] = why
            else:
                summary.skipped += 1
                summary.failed_before += 1
        elif not is_current(row, source, spec.settings):
            todo.append((source.size, entry))
        elif row["status"] == "done" and all(
            map(os.path.exists, output_paths(spec.output_dir, entry.name, spec.formats))
        ):
            summary.skipped += 1
        elif row["status"] == "error" and not retry_errors:
            summary.skipped += 1
            summary.failed_before += 1
        else:
            todo.append((source.size, entry))
    # the largest first: a long file started last would leave the other workers idle at the end
    return sorted(todo, key=lambda t: -t[0])


def clash_row(entry: Entry, source: Source, spec: JobSpec, why: str) -> dict:
    return {
        "path": entry.path,
        "output": entry.name,
        "size": source.size,
        "mtime_ns": source.mtime_ns,
        "sha256": source.sha256,
        "duration": None,
        "language": None,
        "text": None,
        "segments": None,
        "seconds": 0.0,
        "status": "error",
        "error": why,
        "warning": None,
        "settings": spec.settings,
        "worker": None,
    }


def record(table: ResultsTable, rows: Iterator[dict], summary: Summary, bar: Progress, on_row) -> None:
    """Each row into the table as it comes, counted once per file however often an engine retried it."""
    counted: dict[str, str] = {}
    with bar:
        for row in rows:
            table.add(row)
            if on_row is not None:
                on_row(row)
            previous = counted.get(row["path"])
            counted[row["path"]] = row["status"]
            if previous is None:
                bar.update(row)
            if previous != "done" and row["status"] == "done":
                summary.audio_seconds += row["duration"] or 0.0
    for path, status in counted.items():
        if status == "done":
            summary.done += 1
        else:
            summary.failed += 1
            summary.errors[path] = table.rows[path]["error"]


class Progress:
    """Files done of the job's, hours of audio, speed (audio seconds per wall second), and the time left
    estimated from the bytes done (the largest files go first, so files done would misjudge it)."""

    FORMAT = "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} files [{elapsed}{postfix}]"

    def __init__(self, files: int, size: int, enabled: bool | None):
        disable = None if enabled is None else not enabled
        self.bar = tqdm.tqdm(
            total=files, bar_format=self.FORMAT, disable=disable, file=sys.stderr, dynamic_ncols=True
        )
        self.size, self.done_bytes, self.audio = size, 0, 0.0
        self.start = time.perf_counter()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def update(self, row: dict) -> None:
        self.audio += row.get("duration") or 0.0
        self.done_bytes += max(row.get("size") or 0, 0)
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        left = elapsed * (self.size - self.done_bytes) / self.done_bytes if self.done_bytes else None
        eta = "?" if left is None else tqdm.tqdm.format_interval(max(left, 0.0))
        postfix = f"{self.audio / 3600:.2f} h audio, {self.audio / elapsed:.1f}x real time, ETA {eta}"
        self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.update(1)
