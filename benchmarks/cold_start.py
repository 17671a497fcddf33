"""Cold start: `kvwhisper transcribe CLIP` against openai-whisper's `whisper CLIP`, each a fresh process.

Both transcribe `tests/data/jfk.flac` (11 s) with their CLI defaults (beam search of 5, temperature fallback)
in English, tiny.en, on the CPU, on the same weights (`kvwhisper convert`'s reference .pt for `whisper
--model`). Each command's time to its first printed segment and to its exit are taken from outside
(PYTHONUNBUFFERED, lines timestamped as they arrive), the commands alternated run by run. Also shown:
`python -c "import kvwhisper"` and `import whisper`, the imports alone.

    python benchmarks/cold_start.py --runs 7

Output: a table on stdout, benchmarks/out/cold_start.json, and a final JSON line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import common
from peers import prepare_weights

CLIP = common.REPO / "tests" / "data" / "jfk.flac"


def ffmpeg_on_path(folder: Path) -> dict:
    """An environment whose PATH has an `ffmpeg` (imageio-ffmpeg's binary): the reference's load_audio runs it."""
    import imageio_ffmpeg

    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "ffmpeg"
    if not link.exists():
        link.symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}


def timed(command: list[str], env: dict) -> tuple[float, float, str]:
    """Seconds to the first line that starts with "[" (a segment), seconds to exit, that line."""
    start = time.perf_counter()
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    first, line = float("nan"), ""
    for out in job.stdout:
        if out.startswith("[") and first != first:
            first, line = time.perf_counter() - start, out.strip()
    job.wait()
    total = time.perf_counter() - start
    if job.returncode != 0:
        sys.exit(f"{' '.join(command)} exited with {job.returncode}")
    return first, total, line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    weights = prepare_weights("tiny.en", common.OUT)["weights"]["openai"]
    env = ffmpeg_on_path(common.OUT / "bin")
    bin_dir = Path(sys.executable).parent
    commands = {
        "kvwhisper transcribe": [str(bin_dir / "kvwhisper"), "transcribe", str(CLIP), "--language", "en"],
        "whisper (openai-whisper)": [
            str(bin_dir / "whisper"), str(CLIP), "--model", weights, "--language", "en", "--device", "cpu",
            "--output_dir", str(common.OUT / "cold_start_reference"), "--output_format", "txt",
        ],
        "import kvwhisper": [sys.executable, "-c", "import kvwhisper"],
        "import whisper": [sys.executable, "-c", "import whisper"],
    }  # fmt: skip
    for command in commands.values():  # once each, untimed: files into the page cache
        timed(command, env)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for r in range(args.runs):
        for name, command in commands.items():
            first, total, _ = timed(command, env)
            times[name].append((first, total))
        common.log(
            f"run {r + 1}/{args.runs}: " + ", ".join(f"{n} {t[-1][1]:.2f} s" for n, t in times.items())
        )
    reference = times["whisper (openai-whisper)"]
    rows = []
    for name, runs in times.items():
        firsts = [f for f, _ in runs]
        totals = [t for _, t in runs]
        rows.append({
            "command": name,
            "first_segment_s": common.median(firsts) if firsts[0] == firsts[0] else None,
            "exit_s": common.median(totals),
            "vs_reference": common.median([t / rt for (_, t), (_, rt) in zip(runs, reference)])
            if name.endswith(")") or name.startswith("kvwhisper") else None,
            "totals": totals,
        })  # fmt: skip
    columns = [
        ("command", "command", "s"), ("first_segment_s", "first segment s", ".2f"), ("exit_s", "exit s", ".2f"),
        ("vs_reference", "time / reference's", ".3f"),
    ]  # fmt: skip
    return common.report("cold_start", "Cold start (tiny.en, jfk.flac, CPU)", rows, columns,
                         common.OUT / "cold_start.json")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
