"""`kvwhisper bench FILE`: what the KV cache buys, timed step by step on real 30-second windows.

For each dtype x beam size x window, the three cache modes ("full": self K/V cached and cross K/V computed once
per window; "self_only": cross K/V recomputed every step; "none": the whole prefix and the cross K/V recomputed
every step) decode the same window, alternated run after run, with end-of-text suppressed so that every decode
runs to `--sample-len` (224) steps whatever the audio says. Reported, as medians over `--runs`:

- per-step latency against the number of tokens generated so far (0..223): JSON and a PNG, one line per mode;
- the cumulative decode time to reach 50, 100 and 200 tokens (the cache set-up included, the encoder not: it
  is the same for every mode and reported on its own), and the speed-up of "full" over the other modes there;
- a natural decode of the window (timestamps on, stopping at end-of-text, encoder included), per mode;
- with `--breakdown`, where the time of a cached ("full") step goes: decoder blocks (self-attention,
  cross-attention, MLP), output projection, logits processors, the chooser, cache reordering, bookkeeping.

Warm-up decodes run before anything is timed. While it runs, a line per phase (model loading, warm-up, each
configuration of each run, the breakdowns) goes to stderr after the seconds elapsed. A table goes to stdout,
everything to `OUT/kv_cache.json`, the plot to `OUT/kv_cache.png`, and a last single JSON line sums up.
`benchmarks/kv_cache.py` runs this command. The timed decodes are in `bench_decode.py`, the step breakdown in
`bench_breakdown.py`, the tables and the plot in `bench_report.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import CLIError
from .bench_breakdown import step_breakdown
from .bench_decode import (
    StepTimes,
    forced_options,
    load_windows,
    natural_options,
    time_encoder,
    time_natural,
    time_steps,
)
from .bench_report import format_report, format_table, plot_latency, summary_line

__all__ = ["BenchConfig", "format_table", "machine_info", "run_bench", "step_breakdown"]

MILESTONES = (50, 100, 200)  # generated tokens at which cumulative decode times are compared


# ---------------------------------------------------------------------------------------------------------
# command line


def add_parser(sub) -> None:
    from ..model.kv_cache import CACHE_MODES

    p = sub.add_parser("bench", help="time decode steps with and without the KV cache on real windows")
    p.add_argument("file", help="audio file; its first --windows 30 s windows (from --offset) are decoded")
    p.add_argument("--model", default="tiny.en", help="model name or checkpoint path (default: tiny.en)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--dtype",
        nargs="+",
        default=None,
        choices=("fp32", "fp16", "bf16"),
        help="precisions to time (default: fp32 bf16 on CPU, fp32 fp16 on CUDA)",
    )
    p.add_argument("--beam-size", nargs="+", type=int, default=[1, 5], help="1 = greedy (default: 1 5)")
    p.add_argument("--modes", nargs="+", choices=CACHE_MODES, default=list(CACHE_MODES))
    p.add_argument("--windows", type=int, default=1, help="30 s windows to decode (default: 1)")
    p.add_argument("--offset", type=float, default=0.0, help="start of the first window, seconds")
    p.add_argument("--runs", type=int, default=3, help="timed runs per configuration (median; default: 3)")
    p.add_argument("--sample-len", type=int, default=224, help="steps per forced decode (default: 224)")
    p.add_argument("--language", default="en", help="language of multilingual models (default: en)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument(
        "--breakdown",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the parts of a cached step (default: on; --no-breakdown to skip)",
    )
    p.add_argument("--no-natural", action="store_true", help="skip the natural (stop at eot) decodes")
    p.add_argument("--out", default="kvwhisper-bench", help="output folder (default: ./kvwhisper-bench)")
    p.add_argument("--no-plot", action="store_true", help="do not draw the PNG")
    p.set_defaults(func=run)


def run(args) -> int:
    if not os.path.exists(args.file):
        raise CLIError(f"{args.file}: no such file")
    for name in ("windows", "runs", "sample_len"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1")
    if any(b < 1 for b in args.beam_size):
        raise CLIError("--beam-size values must be >= 1")
    config = BenchConfig(
        file=args.file,
        model=args.model,
        device=args.device,
        dtypes=tuple(args.dtype) if args.dtype else None,
        beam_sizes=tuple(dict.fromkeys(args.beam_size)),
        modes=tuple(dict.fromkeys(args.modes)),
        windows=args.windows,
        offset=args.offset,
        runs=args.runs,
        sample_len=args.sample_len,
        language=args.language,
        threads=args.threads,
        breakdown=args.breakdown,
        natural=not args.no_natural,
    )
    log = _progress_log()
    report = run_bench(config, log=log)
    out = Path(args.out)
    log(f"writing {out}")
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "kv_cache.json"
    json_path.write_text(json.dumps(report, indent=1))
    png_path = None
    if not args.no_plot:
        try:
            png_path = plot_latency(report, out / "kv_cache.png")
        except ImportError as e:
            print(f"kvwhisper bench: no plot ({e})", file=sys.stderr)
    print(format_report(report))
    print(f"\nJSON: {json_path}" + (f"\nplot: {png_path}" if png_path else ""))
    print(json.dumps(summary_line(report, json_path, png_path)))
    return 0


def _progress_log(stream=None) -> Callable[[str], None]:
    """A `log` for `run_bench` that prints each message on one line of `stream` (stderr by default), after
    the seconds elapsed since the log was made."""
    t0 = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f} s] {msg}", file=stream or sys.stderr, flush=True)

    return log


# ---------------------------------------------------------------------------------------------------------
# configuration and machine


@dataclass
class BenchConfig:
    file: str
    model: str = "tiny.en"
    device: str | None = None
    dtypes: tuple[str, ...] | None = None  # None: fp32 bf16 on CPU, fp32 fp16 on CUDA
    beam_sizes: tuple[int, ...] = (1, 5)
    modes: tuple[str, ...] = ("full", "self_only", "none")
    windows: int = 1
    offset: float = 0.0
    runs: int = 3
    sample_len: int = 224
    language: str | None = "en"
    threads: int | None = None
    breakdown: bool = True
    natural: bool = True
    milestones: tuple[int, ...] = MILESTONES


def machine_info() -> dict:
    """CPU model, cores, load, library versions: what a timing needs next to it."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ---------------------------------------------------------------------------------------------------------
# the benchmark


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def default_dtypes(device) -> tuple[str, ...]:
    import torch

    return ("fp32", "fp16") if torch.device(device).type == "cuda" else ("fp32", "bf16")


_Config = tuple[str, int, int, str]  # (dtype, beam size, window index, cache mode)


@dataclass
class _Bench:
    """What the phases share: the windows (log-mel on the CPU), one model per dtype, the encoded windows per
    (dtype, window index), and the configurations in the order they are timed."""

    config: BenchConfig
    device: str
    dtypes: tuple[str, ...]
    windows: list[dict]
    models: dict[str, object]
    configs: list[_Config]
    features: dict[tuple[str, int], object] = field(default_factory=dict)


@dataclass
class _Timings:
    """Every timed run's measurements: encoder seconds per (dtype, window index), forced decodes and natural
    decodes (seconds, tokens) per configuration."""

    encoder_s: dict[tuple[str, int], list[float]]
    steps: dict[_Config, list[StepTimes]]
    natural: dict[_Config, list[tuple[float, int]]]


def _prepare(config: BenchConfig, log: Callable[[str], None]) -> _Bench:
    """Threads, device and dtypes settled, the windows and the models loaded, the sample length checked."""
    import torch

    from ..model import load_model

    if config.threads:
        torch.set_num_threads(config.threads)
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = config.dtypes or default_dtypes(device)
    log(f"loading {config.file}: {config.windows} window(s) from {config.offset:g} s")
    windows = load_windows(config.file, config.windows, config.offset)
    models = {}
    for dt in dtypes:
        log(f"loading {config.model} {dt} on {device}")
        models[dt] = load_model(config.model, device=device, dtype=dt)
    any_model = next(iter(models.values()))
    if config.sample_len > any_model.dims.n_text_ctx // 2:
        raise CLIError(f"--sample-len must be at most {any_model.dims.n_text_ctx // 2}")
    configs = [
        (dt, b, w["index"], m)
        for dt in dtypes
        for b in config.beam_sizes
        for w in windows
        for m in config.modes
    ]
    return _Bench(config, device, dtypes, windows, models, configs)


def _warm_up(bench: _Bench) -> None:
    """Untimed: the encoder once per dtype and window (its output kept for the forced decodes), and a short
    decode per (dtype, beam size, mode)."""
    import torch

    config = bench.config
    with torch.no_grad():
        for dt, model in bench.models.items():
            for w in bench.windows:
                bench.features[dt, w["index"]] = time_encoder(model, w["mel"])[1]
            for b in config.beam_sizes:
                for m in config.modes:
                    time_steps(model, bench.features[dt, 0], forced_options(model, m, b, 8, config.language))
                    if config.natural:
                        model.decode(bench.windows[0]["mel"], natural_options(model, m, b, config.language))


def _time_config(bench: _Bench, c: _Config, timings: _Timings) -> None:
    """One forced decode of a configuration, and its natural decode unless those are off."""
    config = bench.config
    dt, b, wi, m = c
    model = bench.models[dt]
    options = forced_options(model, m, b, config.sample_len, config.language)
    timings.steps[c].append(time_steps(model, bench.features[dt, wi], options))
    if config.natural:
        options = natural_options(model, m, b, config.language)
        timings.natural[c].append(time_natural(model, bench.windows[wi]["mel"], options))


def _config_line(bench: _Bench, c: _Config) -> str:
    """What timing a configuration decodes, in a few words."""
    config = bench.config
    dt, b, wi, m = c
    natural = ", then a natural decode" if config.natural else ""
    return (
        f"{dt} beam {b}, mode {m}: window {wi + 1}/{len(bench.windows)}, {config.sample_len} tokens{natural}"
    )


def _time_runs(bench: _Bench, log: Callable[[str], None]) -> _Timings:
    """`--runs` runs, each timing every window's encoder per dtype, then every configuration (so the modes
    alternate inside every (dtype, beam size, window))."""
    config = bench.config
    timings = _Timings({}, {c: [] for c in bench.configs}, {c: [] for c in bench.configs})
    for r in range(config.runs):
        label = f"run {r + 1}/{config.runs}"
        t_run = time.perf_counter()
        log(f"{label}: encoder, {len(bench.windows)} window(s) x {len(bench.models)} dtype(s)")
        for dt, model in bench.models.items():
            for w in bench.windows:
                timings.encoder_s.setdefault((dt, w["index"]), []).append(time_encoder(model, w["mel"])[0])
        for c in bench.configs:
            log(f"{label}: {_config_line(bench, c)}")
            _time_config(bench, c, timings)
        log(f"{label} done in {time.perf_counter() - t_run:.1f} s")
    return timings


def _result(config: BenchConfig, c: _Config, timings: _Timings) -> dict:
    """A configuration's entry of the report: medians over the runs, step by step and at each milestone."""
    dt, b, wi, m = c
    runs = timings.steps[c]
    n = min(len(s.steps_s) for s in runs)
    per_step = [_median([s.steps_s[i] for s in runs]) * 1000 for i in range(n)]
    cumulative = {}
    for k in (*config.milestones, n):
        vals = [s.cumulative(k) for s in runs]
        cumulative[str(k)] = None if None in vals else _median(vals)
    entry = {
        "dtype": dt,
        "beam_size": b,
        "window": wi,
        "mode": m,
        "prefix_tokens": runs[0].prefix,
        "steps": n,
        "encoder_s": _median(timings.encoder_s[dt, wi]),
        "start_s": _median([s.start_s for s in runs]),
        "step_ms": per_step,
        "step_ms_median": _median(per_step),
        "cumulative_s": cumulative,
        "total_s": cumulative[str(n)],
    }
    if config.natural:
        entry["natural_s"] = _median([x[0] for x in timings.natural[c]])
        entry["natural_tokens"] = timings.natural[c][0][1]
    return entry


def _speedup(config: BenchConfig, full: dict, other: dict) -> dict:
    """How many times faster "full" is than `other` (same dtype, beam size and window) at each milestone."""
    s = {
        "dtype": full["dtype"],
        "beam_size": full["beam_size"],
        "window": full["window"],
        "vs": other["mode"],
        "at": {
            k: (other["cumulative_s"][k] / full["cumulative_s"][k])
            if other["cumulative_s"][k] and full["cumulative_s"][k]
            else None
            for k in full["cumulative_s"]
        },
    }
    if config.natural:
        s["natural"] = other["natural_s"] / full["natural_s"]
    return s


def _speedups(bench: _Bench, results: list[dict]) -> list[dict]:
    """Speed-ups of "full" over each other mode timed, per (dtype, beam size, window); none without "full"."""
    config = bench.config
    if "full" not in config.modes:
        return []
    by_key = {(e["dtype"], e["beam_size"], e["window"], e["mode"]): e for e in results}
    return [
        _speedup(config, by_key[dt, b, wi, "full"], by_key[dt, b, wi, m])
        for dt, b, wi, m in bench.configs
        if m != "full"
    ]


def _breakdowns(bench: _Bench, timings: _Timings, log: Callable[[str], None]) -> list[dict]:
    """With `--breakdown`: where the time of a cached step goes, per (dtype, beam size), on window 0."""
    config = bench.config
    if not config.breakdown:
        return []
    breakdown = []
    for dt, model in bench.models.items():
        for b in config.beam_sizes:
            log(f"breakdown of cached steps: {dt} beam {b}, {config.sample_len} tokens")
            opts = forced_options(model, "full", b, config.sample_len, config.language)
            step_breakdown(model, bench.features[dt, 0], opts, runs=1)  # warm the wrappers
            bd = step_breakdown(model, bench.features[dt, 0], opts, runs=max(1, min(config.runs, 3)))
            bd["dtype"] = dt
            bd["encoder_ms"] = 1000 * _median(timings.encoder_s[dt, 0])
            breakdown.append(bd)
    return breakdown


def run_bench(config: BenchConfig, log: Callable[[str], None] = lambda msg: None) -> dict:
    """Time every (dtype, beam size, window, mode) and return the report (see the module docstring)."""
    bench = _prepare(config, log)
    sizes = (
        f"{len(bench.dtypes)} dtype(s) x {len(config.beam_sizes)} beam size(s) x {len(config.modes)} mode(s)"
    )
    log(f"warm-up: {sizes}")
    _warm_up(bench)
    timings = _time_runs(bench, log)
    results = [_result(config, c, timings) for c in bench.configs]
    speedups = _speedups(bench, results)
    breakdown = _breakdowns(bench, timings, log)
    return {
        "benchmark": "kv_cache",
        "machine": machine_info(),
        "model": config.model,
        "device": str(bench.device),
        "file": str(config.file),
        "windows": [{k: v for k, v in w.items() if k != "mel"} for w in bench.windows],
        "runs": config.runs,
        "sample_len": config.sample_len,
        "milestones": list(config.milestones),
        "note": "forced decodes: end-of-text suppressed, no timestamps; cumulative times exclude the encoder",
        "results": results,
        "speedups": speedups,
        "breakdown": breakdown,
    }


def main(argv: list[str] | None = None) -> int:
    """`kvwhisper bench ...` as a function (benchmarks/kv_cache.py calls this)."""
    from . import main as cli_main

    return cli_main(["bench", *(argv or [])])
