"""What the KV cache buys: per-step decode latency of the three cache modes on a real 30-second window.

A thin front for `kvwhisper bench` (the measuring code lives in kvwhisper/cli/bench.py so the installed
command has it too). Defaults: the first 30 s of the shared LibriVox sonnets recording (continuous English
speech, so a window holds a full 224-token decode), outputs in benchmarks/out/kv_cache/.

    python benchmarks/kv_cache.py                                  # tiny.en, fp32 + bf16, greedy + beam 5
    python benchmarks/kv_cache.py --threads 1 --runs 3
    python benchmarks/kv_cache.py other.wav --windows 2 --dtype fp32 --beam-size 1

Every option of `kvwhisper bench` is accepted (see `kvwhisper bench --help`).
"""

from __future__ import annotations

import sys

from common import LONGFORM_WAV, OUT, require_speech


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        if "-h" not in argv and "--help" not in argv:
            require_speech()
        argv = [str(LONGFORM_WAV), *argv]
    if "--out" not in argv:
        argv += ["--out", str(OUT / "kv_cache")]
    from kvwhisper.cli.bench import main as bench_main

    return bench_main(argv)


if __name__ == "__main__":
    sys.exit(main())
