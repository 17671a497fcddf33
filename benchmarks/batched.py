"""Batched transcription against the sequential run (and faster-whisper): many files, and one long file split.

Files: every English recording of the shared corpus (english_misc, librispeech_misc, longform; sorted by
folder and name), transcribed with tiny.en and the default options of `transcribe` (greedy with the
temperature fallback; `beam5`: beam_size=5), English. Modes, each (mode, run) a fresh subprocess so that its
peak RSS is its own; the model is loaded and a first file transcribed before the timed part:

- `sequential`: the files one after the other, `kvwhisper.transcribe(model, path)` each;
- `batched`: `kvwhisper.transcribe(model, paths, batch_size=B)`: the files' windows decoded together;
- `fw-int8`: faster-whisper (compute type int8, the same CTranslate2 weights) transcribing the files one by
  one (`--peers`; skipped with a message when it is not installed);
- `--long`: the >= 10-minute file of benchmarks/peers.py (common.build_long_file) transcribed sequentially,
  with `batch_size=B` (split at quiet points), and by faster-whisper's BatchedInferencePipeline (int8,
  batch_size B); WER against the clips' transcripts.

Modes alternate within each run; reported values are medians over runs, speed-ups the median of the per-run
ratios (sequential time / mode time). "same text" counts the files whose batched text equals the sequential
text of the same dtype and options.

    python benchmarks/batched.py                          # fp32, bf16, beam5; 3 runs
    python benchmarks/batched.py --configs fp32 --runs 1  # a quick check
    python benchmarks/batched.py --configs bf16 --peers --long

Output: a table on stdout, benchmarks/out/batched.json, and a final JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import common

FOLDERS = ("english_misc", "librispeech_misc", "longform")
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a"}
CONFIGS = {
    "fp32": {"dtype": "fp32", "beam_size": None},
    "bf16": {"dtype": "bf16", "beam_size": None},
    "beam5": {"dtype": "fp32", "beam_size": 5},
}


def corpus_files() -> list[Path]:
    speech = common.require_speech()
    files = []
    for folder in FOLDERS:
        files += sorted(p for p in (speech / folder).iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    return files


# ---------------------------------------------------------------------------------------------------------
# worker: one (mode, config) in a fresh process


def _kvwhisper(job: dict):
    import torch

    import kvwhisper

    torch.set_num_threads(job["threads"])
    model = kvwhisper.load_model("tiny.en", device="cpu", dtype=job["dtype"])
    options = {"language": "en", "beam_size": job["beam_size"]}
    if job["beam_size"]:
        options["best_of"] = 5
    kvwhisper.transcribe(model, job["warmup"], **options)  # first use: kernels, allocator
    files = job["files"]

    def run():
        if job["mode"] == "sequential":
            return [kvwhisper.transcribe(model, f, **options).text for f in files]
        if job.get("split"):  # one file, cut into up to batch_size parts
            return [kvwhisper.transcribe(model, files[0], batch_size=job["batch_size"], **options).text]
        return [r.text for r in kvwhisper.transcribe(model, files, batch_size=job["batch_size"], **options)]

    return run


def _faster_whisper(job: dict):
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    model = WhisperModel(
        job["ct2"], device="cpu", compute_type="int8", cpu_threads=job["threads"], num_workers=1
    )
    options = {
        "language": "en",
        "beam_size": job["beam_size"] or 1,
        "vad_filter": job["mode"] == "fw-batched",
    }
    if job["mode"] == "fw-batched":
        pipeline = BatchedInferencePipeline(model=model)

        def one(f):
            segments, _ = pipeline.transcribe(str(f), batch_size=job["batch_size"], **options)
            return "".join(s.text for s in segments)
    else:

        def one(f):
            segments, _ = model.transcribe(str(f), **options)
            return "".join(s.text for s in segments)

    one(job["warmup"])
    return lambda: [one(f) for f in job["files"]]


def worker(job: dict) -> dict:
    run = _faster_whisper(job) if job["mode"].startswith("fw") else _kvwhisper(job)
    t0, c0 = time.perf_counter(), time.process_time()
    texts = run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": common.peak_rss_mb(), "texts": texts}


def run_job(job: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(job)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(common.REPO)},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{job['mode']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------
# driver


def measure(base: dict, modes: list[str], runs: int) -> dict[str, list[dict]]:
    records: dict[str, list[dict]] = {m: [] for m in modes}
    for r in range(runs):
        for mode in modes:
            rec = run_job({**base, "mode": mode})
            records[mode].append(rec)
            common.log(f"run {r + 1}/{runs} {base['label']} {mode}: {rec['wall_s']:.1f} s")
    return records


def summarize(
    label: str, records: dict[str, list[dict]], seconds: float, reference: str | None
) -> list[dict]:
    seq = records["sequential"]
    rows = []
    for mode, recs in records.items():
        ratios = [s["wall_s"] / m["wall_s"] for s, m in zip(seq, recs)]
        row = {
            "config": label,
            "mode": mode,
            "wall_s": common.median([r["wall_s"] for r in recs]),
            "speedup": common.median(ratios),
            "rtf": seconds / common.median([r["wall_s"] for r in recs]),
            "peak_rss_mb": common.median([r["peak_rss_mb"] for r in recs]),
            "rss_ratio": common.median([m["peak_rss_mb"] / s["peak_rss_mb"] for s, m in zip(seq, recs)]),
            "same_text": sum(a == b for a, b in zip(recs[0]["texts"], seq[0]["texts"])),
            "files": len(seq[0]["texts"]),
        }
        row["wer"] = (
            float("nan") if reference is None else 100 * common.wer(reference, " ".join(recs[0]["texts"]))
        )
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--peers", action="store_true", help="faster-whisper int8, one file at a time")
    ap.add_argument("--long", action="store_true", help="one >= 10-minute file: split vs sequential vs peers")
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the --long file")
    ap.add_argument("--limit", type=int, default=None, help="only the first N files (a quick check)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0

    import soundfile

    files = corpus_files()[: args.limit]
    seconds = sum(soundfile.info(str(f)).duration for f in files if f.suffix != ".mp3")
    from kvwhisper import load_audio

    seconds += sum(len(load_audio(f)) / 16000 for f in files if f.suffix == ".mp3")
    common.log(f"{len(files)} files, {seconds / 60:.1f} minutes")
    have_fw = importlib.util.find_spec("faster_whisper") is not None
    if args.peers and not have_fw:
        common.log("faster-whisper is not installed: its modes are skipped")
    ct2 = None
    if have_fw and (args.peers or args.long):
        from kvwhisper.model.registry import packaged_model

        ct2 = str(packaged_model("tiny.en"))  # the CTranslate2 folder tiny.en is loaded from
    rows = []
    for name in args.configs:
        base = {
            "label": name,
            **CONFIGS[name],
            "threads": args.threads,
            "batch_size": args.batch_size,
            "files": [str(f) for f in files],
            "warmup": str(files[0]),
            "ct2": ct2,
        }
        modes = ["sequential", "batched"] + (["fw-int8"] if args.peers and have_fw else [])
        rows += summarize(name, measure(base, modes, args.runs), seconds, None)
        if args.long:
            long = common.build_long_file(args.minutes)
            base = {**base, "label": f"{name} long", "files": [str(long.path)], "split": True}
            modes = ["sequential", "batched"] + (["fw-batched"] if have_fw else [])
            rows += summarize(f"{name} long", measure(base, modes, args.runs), long.seconds, long.reference)
    columns = [
        ("config", "config", ""),
        ("mode", "mode", ""),
        ("wall_s", "wall s", ".1f"),
        ("speedup", "x sequential", ".2f"),
        ("rtf", "audio s / s", ".1f"),
        ("peak_rss_mb", "peak RSS MiB", ".0f"),
        ("rss_ratio", "RSS / sequential", ".2f"),
        ("same_text", "same text", "d"),
        ("files", "files", "d"),
    ]
    if args.long:
        columns.append(("wer", "WER %", ".2f"))
    title = f"Batched transcription, tiny.en, {len(files)} files ({seconds / 60:.1f} min), {args.runs} run(s)"
    return common.report("batched", title, rows, columns, common.OUT / "batched.json")


if __name__ == "__main__":
    sys.exit(main())
