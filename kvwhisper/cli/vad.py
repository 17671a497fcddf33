"""`kvwhisper vad FILE...`: the speech regions the VAD finds (what `--vad-filter` would decode), optionally drawn."""

from __future__ import annotations

import json
import sys

from . import CLIError
from .checks import add_vad_arguments, check_vad, vad_parameters


def add_parser(sub) -> None:
    p = sub.add_parser(
        "vad",
        help="print the speech regions of audio files (silero VAD)",
        description="Speech regions of each file, as transcribe --vad-filter True finds them: one line per "
        "region (start --> end, seconds), then how much of the file is speech.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (any format FFmpeg reads)")
    add_vad_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object per file instead")
    p.add_argument(
        "--plot", metavar="PNG", help="draw the regions over the waveform (one file) into this PNG"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from ..audio import SAMPLE_RATE, AudioError, load_audio
    from ..audio.vad import VadOptions, speech_samples
    from ..transcribe.writers import format_timestamp

    check_vad(args)
    if args.plot and len(args.files) != 1:
        raise CLIError("--plot draws one file: give one FILE")
    options = VadOptions.from_parameters(vad_parameters(args))
    status = 0
    for path in args.files:
        try:
            waveform = load_audio(path)
        except AudioError as e:
            print(f"kvwhisper: {path}: {e.cause}", file=sys.stderr, flush=True)
            status = 1
            continue
        regions = speech_samples(waveform, options)
        seconds = [(a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in regions]
        total = len(waveform) / SAMPLE_RATE
        speech = sum(b - a for a, b in seconds)
        if args.json:
            print(json.dumps({"file": path, "duration": total, "speech": speech, "regions": seconds}))
        else:
            if len(args.files) > 1:
                print(f"{path}:")
            for a, b in seconds:
                print(f"[{format_timestamp(a)} --> {format_timestamp(b)}] {b - a:.2f} s")
            share = speech / total if total else 0.0
            print(f"{len(seconds)} region(s), {speech:.1f} s of speech in {total:.1f} s ({share:.0%})")
        if args.plot:
            _plot(waveform, seconds, args.plot, path)
    return status


def _plot(waveform, regions, out: str, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CLIError("--plot needs matplotlib: pip install 'kvwhisper[plots]'") from None
    import numpy as np

    from ..audio import SAMPLE_RATE

    t = np.arange(len(waveform)) / SAMPLE_RATE
    step = max(1, len(waveform) // 200_000)  # a drawable number of points
    fig, ax = plt.subplots(figsize=(12, 3))
    ax.plot(t[::step], waveform[::step], linewidth=0.3, color="0.3")
    for a, b in regions:
        ax.axvspan(a, b, color="tab:green", alpha=0.3)
    ax.set_xlabel("seconds")
    ax.set_title(f"{title}: speech regions (green)")
    ax.set_xlim(0, max(t[-1] if len(t) else 0.0, 1e-3))
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"wrote {out}")
