"""Where a job's files are transcribed: in this process (`local_rows`), or on a Ray cluster (`ray_rows`,
Ray Data's `map_batches` with an actor per worker that loads the model once). Both yield each file's results
row as it is done; the job records it."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import replace

from .inputs import Entry
from .work import JobSpec, Transcriber


class EngineUnavailableError(RuntimeError):
    """The engine asked for cannot run here (Ray is not installed, or its cluster cannot be reached)."""


def local_rows(spec: JobSpec, entries: list[Entry]) -> Iterator[dict]:
    """The files in this process, ``spec.batch_size`` of them decoded together."""
    yield from Transcriber(spec).rows((e.path, e.name) for e in entries)


class RayWorker:
    """A Ray Data actor: a Transcriber made once; each batch of files yields one JSON row per file as it is
    done (JSON, so that rows with and without a result need no common column types)."""

    def __init__(self, spec: JobSpec):
        self.transcriber = Transcriber(spec)

    def __call__(self, batch: dict) -> Iterator[dict]:
        pairs = zip((str(p) for p in batch["path"]), (str(n) for n in batch["name"]))
        for row in self.transcriber.rows(pairs):
            yield {"row": [json.dumps(row, ensure_ascii=False)]}


def ray_rows(
    spec: JobSpec, entries: list[Entry], *, workers: int, threads_per_worker: int, address: str | None
) -> Iterator[dict]:
    """The files on Ray: ``workers`` actors of ``threads_per_worker`` CPUs each, given ``spec.batch_size``
    files at a time (fewer when there are not enough to give every worker some). ``address``: an existing
    cluster's (``ray start --head`` prints it; "auto" finds one running here); None: the cluster in
    RAY_ADDRESS when it is set, else a new cluster on this machine for the job. A worker that dies is
    restarted by Ray and its batch done again."""
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")  # not its plan and timings on the job's terminal
    ray = _import_ray()
    started = _connect(ray, address, workers * threads_per_worker)
    try:
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        items = [{"path": e.path, "name": e.name} for e in entries]
        # files per call: a worker decodes up to batch_size together, and every worker gets some; one call
        # at a time per worker, so that calls go to free workers and a dead worker had only one to redo
        per_call = max(1, min(spec.batch_size, -(-len(items) // workers)))
        dataset = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // per_call)))
        done = dataset.map_batches(
            RayWorker,
            fn_constructor_kwargs={"spec": replace(spec, threads=threads_per_worker)},
            batch_size=per_call,
            compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
            num_cpus=threads_per_worker,
        )
        for record in done.iter_rows():
            yield json.loads(record["row"])
    finally:
        if started:
            ray.shutdown()


def _import_ray():
    try:
        import ray
    except ImportError:
        raise EngineUnavailableError(
            "the ray engine needs Ray: pip install 'kvwhisper[ray]' (or use the local engine)"
        ) from None
    return ray


def _connect(ray, address: str | None, cpus: int) -> bool:
    """Join the cluster at ``address``, or start one here; True when this call started (or joined) it."""
    if ray.is_initialized():
        return False
    logging.getLogger("ray").setLevel(logging.ERROR)
    settings = dict(logging_level=logging.ERROR, log_to_driver=False, configure_logging=True)
    try:
        if address is None:
            # "local": a new cluster, not one `ray start` left running here (RAY_ADDRESS, when set, still wins)
            ray.init(
                address="local", num_cpus=max(os.cpu_count() or 1, cpus), include_dashboard=False, **settings
            )
        else:
            ray.init(address=address, **settings)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise EngineUnavailableError(f"cannot start or reach {where}: {' '.join(str(e).split())}") from e
    return True
