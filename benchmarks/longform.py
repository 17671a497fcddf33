"""Long-form transcription: wall time, real-time factor and peak RSS for 10 and 60 minutes of speech.

    python benchmarks/longform.py                      # 10 and 60 minutes, tiny.en, default transcribe() options
    python benchmarks/longform.py --minutes 1 5 --threads 1 --word-timestamps

The audio is real English speech: the shared corpus' english_misc, librispeech_misc and longform clips
decoded once, put back to back in a fixed order and repeated up to the length (the bundled tests/data clips
when the corpus is absent). Each length runs in a fresh subprocess, so its peak RSS (getrusage ru_maxrss,
which includes loading the model) is its own. Prints a table, then one JSON line; the check is
peak RSS(longest) < 1.5 x peak RSS(shortest): the whole-file mel (80 x 100 frames/s fp32, 115 MB for
an hour) and the samples are the only things that grow with the length.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_SPEECH = (ROOT / ".." / "shared" / "data" / "speech").resolve()
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus"}
RSS_RATIO_LIMIT = 1.5


def clip_paths() -> list[Path]:
    folders = [SHARED_SPEECH / f for f in ("english_misc", "librispeech_misc", "longform")]
    paths = [
        p for d in folders if d.is_dir() for p in sorted(d.iterdir()) if p.suffix.lower() in AUDIO_SUFFIXES
    ]
    if not paths:  # a bare clone: the bundled English clips
        paths = [ROOT / "tests" / "data" / n for n in ("jfk.flac", "common_voice_en_22058267.mp3")]
    return paths


def build_audio(minutes: float):
    """``minutes`` of speech, float32 at 16 kHz, written into one preallocated array (no per-copy growth)."""
    import numpy as np

    from kvwhisper.audio import SAMPLE_RATE, load_audio

    clips = [load_audio(p) for p in clip_paths()]
    total = int(minutes * 60 * SAMPLE_RATE)
    audio = np.empty(total, dtype=np.float32)
    filled = 0
    while filled < total:
        for clip in clips:
            n = min(len(clip), total - filled)
            audio[filled : filled + n] = clip[:n]
            filled += n
            if filled == total:
                break
    return audio, len(clips)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(args) -> None:
    import torch

    import kvwhisper
    from kvwhisper.audio import SAMPLE_RATE
    from kvwhisper.transcribe import transcribe

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = kvwhisper.load_model(args.model, device=args.device)
    load_s = time.perf_counter() - t0
    rss_after_load = peak_rss_mb()
    audio, n_clips = build_audio(args.worker)
    duration = len(audio) / SAMPLE_RATE
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    result = transcribe(model, audio, word_timestamps=args.word_timestamps)
    wall = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "minutes": args.worker,
                "audio_s": round(duration, 2),
                "clips": n_clips,
                "wall_s": round(wall, 2),
                "rtf": round(wall / duration, 4),
                "x_realtime": round(duration / wall, 1),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "peak_rss_before_transcribe_mb": round(rss_before, 1),
                "peak_rss_after_load_mb": round(rss_after_load, 1),
                "model_load_s": round(load_s, 2),
                "segments": len(result.segments),
                "windows": len({s.seek for s in result.segments}),
                "fallbacks": sum(s.temperature > 0 for s in result.segments),
                "words": len(result.text.split()),
                "threads": torch.get_num_threads(),
            }
        )
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[10, 60])
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--word-timestamps", action="store_true")
    p.add_argument("--worker", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker is not None:
        worker(args)
        return 0

    runs = []
    for minutes in args.minutes:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            str(minutes),
            "--model",
            args.model,
            "--device",
            args.device,
            "--threads",
            str(args.threads),
        ] + (["--word-timestamps"] if args.word_timestamps else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = runs[-1]
        print(
            f"... {minutes:g} min: {r['wall_s']:.1f} s ({r['x_realtime']}x real time), "
            f"peak RSS {r['peak_rss_mb']:.0f} MB",
            file=sys.stderr,
            flush=True,
        )

    header = (
        f"{'audio':>9} {'wall s':>8} {'RTF':>7} {'x RT':>6} {'peak RSS MB':>12} {'RSS before MB':>14} "
        f"{'segments':>9} {'fallbacks':>9}"
    )
    print(header)
    for r in runs:
        print(
            f"{r['minutes']:>7g} m {r['wall_s']:>8.1f} {r['rtf']:>7.4f} {r['x_realtime']:>6.1f} "
            f"{r['peak_rss_mb']:>12.0f} {r['peak_rss_before_transcribe_mb']:>14.0f} {r['segments']:>9} "
            f"{r['fallbacks']:>9}"
        )
    ratio = runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"] if len(runs) > 1 else None
    ok = ratio is None or ratio < RSS_RATIO_LIMIT
    summary = {
        "benchmark": "longform",
        "model": args.model,
        "device": args.device,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}",
        "cpu_load_1min": round(os.getloadavg()[0], 2),
        "runs": runs,
        "rss_ratio": round(ratio, 3) if ratio else None,
        "rss_ratio_limit": RSS_RATIO_LIMIT,
        "rss_check": "pass" if ok else "FAIL",
    }
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
