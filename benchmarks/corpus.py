"""The corpus job's throughput: the local engine against Ray on the same machine (Ray's overhead).

Files: every English recording of the shared corpus (english_misc, librispeech_misc, longform: 49 files,
10.9 min), transcribed by `kvwhisper corpus` with tiny.en, greedy (`--beam-size None`), json outputs, into
a fresh output folder per run. Engines, each run a whole command in a fresh process, alternated:

- `local`: `--batch-size 8 --threads 2`, one process;
- `ray`: `--engine ray --workers 2 --threads-per-worker 1 --batch-size 8`, starting a Ray cluster on this
  machine for the job, as a user without a cluster does;
- `ray-joined` (`--joined`): the same job joining a Ray cluster started once beforehand (`ray start
  --head`), so Ray's own start-up is not in the time.

Reported: wall time (median), the ratio to `local` (the median of per-run ratios; above 1: slower than
local), audio speed (audio seconds per wall second), the audio seconds per second a worker spends on files
(from results.jsonl: what one more worker adds) and the share of the workers' wall time spent on files. Every run's outputs are
compared with the first local run's: "same" must be all files.

    python benchmarks/corpus.py                   # 3 runs
    python benchmarks/corpus.py --runs 1 --joined
    python benchmarks/corpus.py --copies 3 --joined   # a 147-file job: Ray's start-up spread over more work

Output: a table on stdout, benchmarks/out/corpus.json, and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

FOLDERS = ("english_misc", "librispeech_misc", "longform")
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a"}
COMMON = [
    "--model",
    "tiny.en",
    "--beam-size",
    "None",
    "--language",
    "en",
    "-f",
    "json",
    "--progress",
    "False",
]
RAY = str(Path(sys.executable).parent / "ray")  # the ray command of this environment
ENGINES = {
    "local": ["--batch-size", "8", "--threads", "2"],
    "ray": ["--engine", "ray", "--workers", "2", "--threads-per-worker", "1", "--batch-size", "8"],
}


def corpus_files() -> list[Path]:
    speech = common.require_speech()
    return [
        p
        for folder in FOLDERS
        for p in sorted((speech / folder).iterdir())
        if p.suffix.lower() in AUDIO_SUFFIXES
    ]


def run_job(manifest: Path, out: Path, engine_args: list[str]) -> float:
    command = [
        sys.executable,
        "-m",
        "kvwhisper",
        "corpus",
        str(manifest),
        "-o",
        str(out),
        *COMMON,
        *engine_args,
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
    return seconds


def outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*.json")}


def worker_load(out: Path) -> tuple[float, int]:
    """The seconds the workers spent on files (from results.jsonl; start-up excluded) and their number."""
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return sum(row["seconds"] for row in rows), len({row["worker"] for row in rows})


def _link(source: Path, link: Path) -> Path:
    link.symlink_to(source)
    return link


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--joined", action="store_true", help="also Ray joining a cluster started beforehand")
    parser.add_argument("--copies", type=int, default=1, help="the file list this many times (a larger job)")
    args = parser.parse_args()
    files = corpus_files()
    work = Path(tempfile.mkdtemp(prefix="kvwhisper-corpus-bench-"))
    if args.copies > 1:  # links under other names: each copy is a file of its own
        links = work / "links"
        links.mkdir()
        files = [_link(f, links / f"{k}-{f.parent.name}-{f.name}") for k in range(args.copies) for f in files]
    manifest = work / "files.txt"
    manifest.write_text("".join(f"{f}\n" for f in files))
    engines = dict(ENGINES)
    if args.joined:
        subprocess.run(
            [RAY, "start", "--head", "--num-cpus", "2", "--disable-usage-stats"],
            check=True,
            capture_output=True,
        )
        engines["ray-joined"] = [*ENGINES["ray"], "--address", "auto"]
    try:
        results = measure(engines, manifest, work, args.runs)
    finally:
        if args.joined:
            subprocess.run([RAY, "stop", "--force"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    rows = summarize(results, len(files))
    columns = [
        ("engine", "engine", "s"), ("files", "files", "d"), ("audio_min", "audio min", ".1f"),
        ("wall_s", "wall s (median)", ".1f"), ("vs_local", "time / local", ".3f"),
        ("speed", "audio s / s", ".1f"), ("worker_speed", "audio s / worker busy s", ".1f"),
        ("busy", "workers busy", ".0%"),
        ("same", "same outputs", "s"),
    ]  # fmt: skip
    return common.report(
        "corpus",
        "kvwhisper corpus: local engine vs Ray (tiny.en, greedy)",
        rows,
        columns,
        common.OUT / "corpus.json",
    )


def measure(engines: dict[str, list[str]], manifest: Path, work: Path, runs: int) -> dict[str, list[dict]]:
    reference = None
    results: dict[str, list[dict]] = {name: [] for name in engines}
    for r in range(runs):
        for name, engine_args in engines.items():
            out = work / f"{name}-{r}"
            seconds = run_job(manifest, out, engine_args)
            rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
            got = outputs(out)
            reference = reference or got
            same = sum(reference.get(k) == v for k, v in got.items())
            busy, workers = worker_load(out)
            results[name].append(
                {"wall_s": seconds, "audio_s": sum(row["duration"] or 0 for row in rows), "same": same,
                 "busy_s": busy, "workers": workers}
            )  # fmt: skip
            shutil.rmtree(out)
            common.log(f"run {r + 1}/{runs}: {name} {seconds:.1f} s, same outputs {same}/{len(got)}")
    return results


def summarize(results: dict[str, list[dict]], n_files: int) -> list[dict]:
    local = [run["wall_s"] for run in results["local"]]
    rows = []
    for name, runs in results.items():
        walls = [run["wall_s"] for run in runs]
        audio = runs[0]["audio_s"]
        rows.append({
            "engine": name,
            "files": n_files,
            "audio_min": audio / 60,
            "wall_s": common.median(walls),
            "vs_local": common.median([w / lw for w, lw in zip(walls, local)]),
            "speed": audio / common.median(walls),
            # audio seconds per second a worker spends on files: what one more worker adds
            "worker_speed": common.median([run["audio_s"] / run["busy_s"] for run in runs]),
            # the share of the workers' wall time spent on files (the rest: start-up, waiting, Ray)
            "busy": common.median([run["busy_s"] / (run["workers"] * run["wall_s"]) for run in runs]),
            "same": f"{min(run['same'] for run in runs)}/{n_files}",
            "walls": walls,
        })  # fmt: skip
    return rows


if __name__ == "__main__":
    sys.exit(main())
