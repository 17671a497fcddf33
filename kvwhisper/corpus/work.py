"""A corpus worker: the model loaded once, files transcribed together with the batched engine, each file's
outputs written whole, one results row per file. The local engine runs one in the job's process; the Ray
engine runs one per actor."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..audio import SAMPLE_RATE, AudioDamageWarning, AudioError, load_audio
from ..transcribe import TranscriptionResult, transcribe_iter
from ..transcribe.checks import english_only
from ..transcribe.writers import FORMATS, get_writer
from ..utils import error_cause as cause
from .table import Source, file_hash

DEFAULT_BATCH_SIZE = 8


@dataclass(frozen=True)
class JobSpec:
    """What every worker of a job needs: the model, the transcribe options and how outputs are written.

    ``options`` are `transcribe`'s keyword arguments; ``writer_options`` the subtitle writers' (max_line_width,
    ...). ``threads``: torch CPU threads of each worker (0: torch's default)."""

    output_dir: str
    model: str = "tiny.en"
    device: str | None = None
    dtype: str | None = None
    download_root: str | None = None
    output_format: str = "all"
    options: dict = field(default_factory=dict)
    writer_options: dict = field(default_factory=dict)
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: int = 0
    verify: bool = False

    @property
    def formats(self) -> tuple[str, ...]:
        return FORMATS if self.output_format == "all" else (self.output_format,)

    @property
    def settings(self) -> str:
        """A fingerprint of what decides the outputs' bytes (not the batch size or threads, which do not)."""
        what = [self.model, self.dtype, self.options, self.writer_options]
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Transcriber:
    """Loads the job's model once; `rows(entries)` transcribes them and yields each file's results row."""

    def __init__(self, spec: JobSpec):
        import torch

        from ..model import load_model

        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.spec = spec
        self.model = load_model(
            spec.model, device=spec.device, dtype=spec.dtype, download_root=spec.download_root
        )
        language = english_only(spec.options.get("language"), self.model, spec.model)
        self.options = {**spec.options, "language": language}
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def rows(self, entries: Iterable[tuple[str, str]]) -> Iterator[dict]:
        """(path, name) pairs -> their rows, as each file finishes (files are decoded together)."""
        opened: dict[int, _Opened] = {}  # transcribe_iter's index -> the file, until it is done
        failed: list[dict] = []

        def waveforms() -> Iterator[np.ndarray]:
            for path, name in entries:
                item = self._open(path, name)
                if isinstance(item, dict):
                    failed.append(item)
                else:
                    opened[len(opened) + done] = item
                    yield item.samples

        clock, done = time.perf_counter(), 0
        options = {**self.options, "batch_size": self.spec.batch_size}
        for index, result in transcribe_iter(self.model, waveforms(), **options):
            while failed:
                yield failed.pop()
            item, now = opened.pop(index), time.perf_counter()
            done += 1
            yield self._finish(item, result, now - clock)
            clock = now
        yield from failed

    def _open(self, path: str, name: str) -> _Opened | dict:
        """A file's samples and source record, or its error row."""
        start = time.perf_counter()
        try:
            source = Source.of(path)
        except OSError as e:
            return self._row(path, name, Source(-1, -1), 0.0, error=cause(e))
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", AudioDamageWarning)
                samples = load_audio(path)
            if self.spec.verify:
                source = Source(source.size, source.mtime_ns, file_hash(path))
        except (AudioError, OSError) as e:
            return self._row(path, name, source, time.perf_counter() - start, error=cause(e))
        damage = [str(w.message) for w in caught if issubclass(w.category, AudioDamageWarning)]
        return _Opened(path, name, source, samples, "; ".join(damage) or None)

    def _finish(self, item: _Opened, result: TranscriptionResult | Exception, seconds: float) -> dict:
        if isinstance(result, Exception):
            return self._row(item.path, item.name, item.source, seconds, error=cause(result))
        folder = os.path.join(self.spec.output_dir, os.path.dirname(item.name))
        try:
            os.makedirs(folder, exist_ok=True)
            get_writer(self.spec.output_format, folder)(result, item.path, **self.spec.writer_options)
        except OSError as e:
            return self._row(item.path, item.name, item.source, seconds, error=cause(e))
        return self._row(
            item.path,
            item.name,
            item.source,
            seconds,
            result=result,
            duration=item.duration,
            warning=item.warning,
        )

    def _row(
        self,
        path,
        name,
        source: Source,
        seconds: float,
        *,
        result=None,
        error=None,
        duration=None,
        warning=None,
    ) -> dict:
        return {
            "path": path,
            "output": name,
            "size": source.size,
            "mtime_ns": source.mtime_ns,
            "sha256": source.sha256,
            "duration": None if duration is None else round(duration, 3),
            "language": None if result is None else result.language,
            "text": None if result is None else result.text,
            "segments": None if result is None else len(result.segments),
            "seconds": round(seconds, 3),
            "status": "error" if error else "done",
            "error": error,
            "warning": warning,
            "settings": self.spec.settings,
            "worker": self.worker,
        }


@dataclass
class _Opened:
    path: str
    name: str
    source: Source
    samples: np.ndarray | None
    warning: str | None

    def __post_init__(self) -> None:
        self.duration = len(self.samples) / SAMPLE_RATE
