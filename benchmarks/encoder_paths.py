"""The encoder's CPU code paths side by side: what the head-by-head self-attention and the fused products buy.

- sdpa: self-attention through `scaled_dot_product_attention` (the CPU flash kernel), products unfused
  (the first encoder path);
- sdpa+fused: q/k/v as one product, GELU and residual adds fused into the oneDNN calls (packed.FUSE);
- self_attend+fused: also the self-attention head by head in fp32 through oneDNN (`CPUOps.self_attend`; the
  default for fp32, and for bf16 on a CPU without AMX);
- amx+fused (bf16, AMX CPUs): the self-attention through the AMX kernel (kvwhisper/cpu/amx.py; the default for
  bf16 there); amx-split+fused: the same with the probabilities as hi + lo bf16 (`amx.SPLIT`).

The paths alternate round by round in one process (the machine is shared and noisy); each round encodes one
real 30 s window; the table gives the median time per path and the median per-round ratio to `sdpa`.

    python benchmarks/encoder_paths.py [--threads 2] [--rounds 8] [--dtype fp32 bf16]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import common
import torch
import torch.nn.functional as F

import kvwhisper
from kvwhisper.audio import load_audio, log_mel_spectrogram, pad_or_trim
from kvwhisper.cpu import amx, packed
from kvwhisper.cpu.ops import CPUOps

JFK = common.REPO / "tests" / "data" / "jfk.flac"
SELF_ATTEND = CPUOps.self_attend


def _sdpa(self, q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


PATHS = {  # name: (encoder self-attention, fused products, AMX kernel, AMX probabilities split)
    "sdpa": (_sdpa, False, False, False),
    "sdpa+fused": (_sdpa, True, False, False),
    "self_attend+fused": (SELF_ATTEND, True, False, False),
    "amx+fused": (SELF_ATTEND, True, True, False),
    "amx-split+fused": (SELF_ATTEND, True, True, True),
}


def encoder_times(model_name: str, dtype: str, rounds: int) -> dict[str, list[float]]:
    model = kvwhisper.load_model(model_name, device="cpu", dtype=dtype)
    mel = log_mel_spectrogram(pad_or_trim(load_audio(JFK)))[None]
    has_amx = amx.available() and dtype == "bf16"
    paths = {name: p for name, p in PATHS.items() if has_amx or not p[2]}
    times: dict[str, list[float]] = {name: [] for name in paths}
    try:
        with torch.inference_mode():
            for r in range(rounds + 1):
                for name, (attend, fuse, on, split) in paths.items():
                    CPUOps.self_attend, packed.FUSE = attend, fuse
                    amx.ENABLED, amx.SPLIT = on, split
                    t0 = time.perf_counter()
                    model.embed_audio(mel)
                    if r:  # round 0 is the warm-up (packing, oneDNN primitives)
                        times[name].append((time.perf_counter() - t0) * 1e3)
    finally:
        CPUOps.self_attend, packed.FUSE = SELF_ATTEND, True
        amx.ENABLED, amx.SPLIT = True, False
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--dtype", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--out", default=str(common.OUT / "encoder_paths.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for dtype in args.dtype:
        t = encoder_times(args.model, dtype, args.rounds)
        base = t["sdpa"]
        for name, v in t.items():
            speedup = statistics.median(b / x for b, x in zip(base, v))
            rows.append({"dtype": dtype, "path": name, "ms": statistics.median(v), "speedup": speedup})
            common.log(f"{rows[-1]}")
    title = f"Encoder, one 30 s window, {args.model}, {args.threads} threads, median of {args.rounds} rounds"
    cols = [
        ("dtype", "dtype", ""),
        ("path", "path", ""),
        ("ms", "ms", ".1f"),
        ("speedup", "x vs sdpa", ".2f"),
    ]
    return common.report("encoder_paths", title, rows, cols, Path(args.out))


if __name__ == "__main__":
    raise SystemExit(main())
