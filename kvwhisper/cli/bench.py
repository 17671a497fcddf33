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

Warm-up decodes run before anything is timed. A table goes to stdout, everything to `OUT/kv_cache.json`, the
plot to `OUT/kv_cache.png`, and a last single JSON line sums up. The measuring functions here are what
`benchmarks/kv_cache.py` calls.
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
from dataclasses import dataclass
from pathlib import Path

from . import CLIError

MILESTONES = (50, 100, 200)  # generated tokens at which cumulative decode times are compared
WINDOW_SECONDS = 30


# ---------------------------------------------------------------------------------------------------------
# command line


def add_parser(sub) -> None:
    from ..engine.kv_cache import CACHE_MODES

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
    report = run_bench(config, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(args.out)
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


def _sync(device) -> Callable[[], None]:
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


# ---------------------------------------------------------------------------------------------------------
# windows and decodes


def load_windows(path: str, n: int, offset: float = 0.0):
    """The first `n` 30 s windows of a file from `offset` seconds: log-mel (80|128, 3000) each, on the CPU.

    A window must hold at least 5 s of audio (the last one is zero-padded to 30 s).
    """
    from ..audio import SAMPLE_RATE, load_audio, log_mel_spectrogram, pad_or_trim

    audio = load_audio(path)
    windows = []
    for i in range(n):
        start = int((offset + i * WINDOW_SECONDS) * SAMPLE_RATE)
        piece = audio[start : start + WINDOW_SECONDS * SAMPLE_RATE]
        if len(piece) < 5 * SAMPLE_RATE:
            raise CLIError(
                f"{path}: {len(audio) / SAMPLE_RATE:.1f} s of audio holds fewer than {n} window(s) from "
                f"{offset:g} s"
            )
        windows.append(
            {
                "index": i,
                "start_s": start / SAMPLE_RATE,
                "audio_s": len(piece) / SAMPLE_RATE,
                "mel": log_mel_spectrogram(pad_or_trim(piece)),
            }
        )
    return windows


def forced_options(model, mode: str, beam_size: int, sample_len: int, language: str | None):
    """Options that decode exactly `sample_len` steps: end-of-text suppressed, no timestamps."""
    from ..engine.decoding import DecodingOptions

    eot = model.tokenizer.eot
    return DecodingOptions(
        language=language if model.is_multilingual else None,
        kv_cache=mode,
        beam_size=beam_size if beam_size > 1 else None,
        without_timestamps=True,
        sample_len=sample_len,
        suppress_tokens=f"-1,{eot}",
    )


def natural_options(model, mode: str, beam_size: int, language: str | None):
    """Options of an ordinary decode (timestamps on, stop at end-of-text), as long-form transcription uses."""
    from ..engine.decoding import DecodingOptions

    return DecodingOptions(
        language=language if model.is_multilingual else None,
        kv_cache=mode,
        beam_size=beam_size if beam_size > 1 else None,
    )


@dataclass
class StepTimes:
    start_s: float  # DecodingTask.start: cache allocation (+ cross K/V for "full")
    steps_s: list[float]  # one per step
    prefix: int  # initial tokens fed at the first step

    def cumulative(self, n: int) -> float | None:
        """Seconds from the start of the decode (after the encoder) until `n` tokens are generated."""
        if n > len(self.steps_s):
            return None
        return self.start_s + sum(self.steps_s[:n])


def time_steps(model, audio_features, options) -> StepTimes:
    """One decode of already-encoded features, every step timed."""
    import torch

    from ..engine.decoding import DecodingTask

    sync = _sync(model.device)
    with torch.no_grad():
        task = DecodingTask(model, options)
        tokens = torch.tensor([task.initial_tokens])
        sync()
        t0 = time.perf_counter()
        state = task.start(audio_features, tokens)
        sync()
        start_s = time.perf_counter() - t0
        steps = []
        while not state.completed:
            t0 = time.perf_counter()
            task.step(state)
            sync()
            steps.append(time.perf_counter() - t0)
    return StepTimes(start_s, steps, len(task.initial_tokens))


def time_encoder(model, mel) -> tuple[float, object]:
    import torch

    sync = _sync(model.device)
    with torch.no_grad():
        sync()
        t0 = time.perf_counter()
        features = model.embed_audio(mel[None])
        sync()
    return time.perf_counter() - t0, features


def time_natural(model, mel, options) -> tuple[float, int]:
    """An ordinary decode of one window, encoder included: (seconds, tokens generated)."""
    import torch

    sync = _sync(model.device)
    with torch.no_grad():
        sync()
        t0 = time.perf_counter()
        result = model.decode(mel, options)
        sync()
    return time.perf_counter() - t0, len(result.tokens)


# ---------------------------------------------------------------------------------------------------------
# where a step's time goes


class _Timers:
    """Wraps callables on given objects (instance attributes, restored afterwards) and sums their time."""

    def __init__(self, sync: Callable[[], None]):
        self.sync = sync
        self.total: dict[str, float] = {}
        self._patched: list[tuple[object, str, bool, Callable]] = []

    def wrap(self, obj, attr: str, name: str) -> None:
        inner = getattr(obj, attr)
        had_own = attr in getattr(obj, "__dict__", {})

        def timed(*args, **kwargs):
            self.sync()
            t0 = time.perf_counter()
            out = inner(*args, **kwargs)
            self.sync()
            self.total[name] = self.total.get(name, 0.0) + time.perf_counter() - t0
            return out

        setattr(obj, attr, timed)
        self._patched.append((obj, attr, had_own, inner))

    def restore(self, keep: int = 0) -> None:
        """Undo the wraps made after the first `keep` ones (all of them by default)."""
        while len(self._patched) > keep:
            obj, attr, had_own, inner = self._patched.pop()
            if had_own:
                setattr(obj, attr, inner)
            else:
                delattr(obj, attr)


def step_breakdown(model, audio_features, options, runs: int = 1) -> dict:
    """Milliseconds per step spent in each part of a decode step (means over `runs` forced decodes).

    Parts: decoder self-attention / cross-attention / MLP (all layers), the rest of the blocks (LayerNorms,
    residual adds), token + position embedding, final LayerNorm, output projection and glue (the decoder
    forward minus all of those: mostly the (B, C) x (C, n_vocab) logits matmul), the cache-mode work around
    the decoder (cross K/V refills when not "full"), each logits processor, the chooser, cache reordering
    (beam search) and the step's own bookkeeping (everything else in `DecodingTask.step`). The model is
    left as it was.
    """
    import torch

    from ..engine.decoding import DecodingTask

    sync = _sync(model.device)
    timers = _Timers(sync)
    dec = model.decoder
    step_total, n_steps, start_total = 0.0, 0, 0.0
    try:
        for block in dec.blocks:
            timers.wrap(block, "decode", "blocks")
            timers.wrap(block.attn, "cached", "self_attention")
            timers.wrap(block.cross_attn, "cross", "cross_attention")
            timers.wrap(block.mlp, "forward", "mlp")
        timers.wrap(dec, "forward", "decoder_forward")
        timers.wrap(dec.token_embedding, "forward", "embedding")
        timers.wrap(dec.ln, "forward", "final_layernorm")
        model_wraps = len(timers._patched)
        with torch.no_grad():
            for _ in range(runs):
                task = DecodingTask(model, options)
                for p in task.processors:
                    timers.wrap(p, "apply", f"processor:{p.name}")
                timers.wrap(task.chooser, "update", "chooser")
                tokens = torch.tensor([task.initial_tokens])
                sync()
                t0 = time.perf_counter()
                state = task.start(audio_features, tokens)
                sync()
                start_total += time.perf_counter() - t0
                timers.wrap(state.runner, "logits", "runner_logits")
                timers.wrap(state.runner, "reorder", "cache_reorder")
                while not state.completed:
                    t0 = time.perf_counter()
                    task.step(state)
                    sync()
                    step_total += time.perf_counter() - t0
                    n_steps += 1
                timers.restore(keep=model_wraps)  # this task's wraps
    finally:
        timers.restore()

    t = timers.total

    def ms(x: float) -> float:
        return 1000 * x / max(n_steps, 1)

    blocks = t.get("blocks", 0.0)
    inner = t.get("self_attention", 0.0) + t.get("cross_attention", 0.0) + t.get("mlp", 0.0)
    forward = t.get("decoder_forward", 0.0)
    head = forward - blocks - t.get("embedding", 0.0) - t.get("final_layernorm", 0.0)
    processors = {k: v for k, v in t.items() if k.startswith("processor:")}
    accounted = (
        t.get("runner_logits", 0.0)
        + sum(processors.values())
        + t.get("chooser", 0.0)
        + t.get("cache_reorder", 0.0)
    )
    parts = {
        "self_attention": ms(t.get("self_attention", 0.0)),
        "cross_attention": ms(t.get("cross_attention", 0.0)),
        "mlp": ms(t.get("mlp", 0.0)),
        "block_layernorms_residuals": ms(blocks - inner),
        "embedding": ms(t.get("embedding", 0.0)),
        "final_layernorm": ms(t.get("final_layernorm", 0.0)),
        "output_projection_and_glue": ms(head),
        "cache_mode_work": ms(t.get("runner_logits", 0.0) - forward),
        **{k: ms(v) for k, v in processors.items()},
        "chooser": ms(t.get("chooser", 0.0)),
        "cache_reorder": ms(t.get("cache_reorder", 0.0)),
        "step_bookkeeping": ms(step_total - accounted),
    }
    return {
        "mode": options.kv_cache,
        "beam_size": options.beam_size or 1,
        "steps": n_steps,
        "step_ms": ms(step_total),
        "start_ms": 1000 * start_total / max(runs, 1),
        "parts_ms": parts,
    }


# ---------------------------------------------------------------------------------------------------------
# the benchmark


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def default_dtypes(device) -> tuple[str, ...]:
    import torch

    return ("fp32", "fp16") if torch.device(device).type == "cuda" else ("fp32", "bf16")


def run_bench(config: BenchConfig, log: Callable[[str], None] = lambda msg: None) -> dict:
    """Time every (dtype, beam size, window, mode) and return the report (see the module docstring)."""
    import torch

    from ..engine import load_model

    if config.threads:
        torch.set_num_threads(config.threads)
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = config.dtypes or default_dtypes(device)
    windows = load_windows(config.file, config.windows, config.offset)
    models = {dt: load_model(config.model, device=device, dtype=dt) for dt in dtypes}
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

    # warm-up, untimed: the encoder once per dtype, a short decode per (dtype, beam, mode)
    log(
        f"warm-up ({len(dtypes)} dtype(s), {len(config.beam_sizes)} beam size(s), {len(config.modes)} mode(s))"
    )
    features: dict[tuple[str, int], object] = {}
    with torch.no_grad():
        for dt, model in models.items():
            for w in windows:
                features[dt, w["index"]] = time_encoder(model, w["mel"])[1]
            for b in config.beam_sizes:
                for m in config.modes:
                    time_steps(model, features[dt, 0], forced_options(model, m, b, 8, config.language))
                    if config.natural:
                        model.decode(windows[0]["mel"], natural_options(model, m, b, config.language))

    encoder_s: dict[tuple[str, int], list[float]] = {}
    steps: dict[tuple, list[StepTimes]] = {c: [] for c in configs}
    natural: dict[tuple, list[tuple[float, int]]] = {c: [] for c in configs}
    for r in range(config.runs):
        t_run = time.perf_counter()
        for dt, model in models.items():
            for w in windows:
                encoder_s.setdefault((dt, w["index"]), []).append(time_encoder(model, w["mel"])[0])
        for c in configs:  # modes alternate inside every (dtype, beam, window)
            dt, b, wi, m = c
            model = models[dt]
            steps[c].append(
                time_steps(
                    model, features[dt, wi], forced_options(model, m, b, config.sample_len, config.language)
                )
            )
            if config.natural:
                natural[c].append(
                    time_natural(model, windows[wi]["mel"], natural_options(model, m, b, config.language))
                )
        log(f"run {r + 1}/{config.runs}: {time.perf_counter() - t_run:.1f} s")

    results = []
    for c in configs:
        dt, b, wi, m = c
        runs = steps[c]
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
            "encoder_s": _median(encoder_s[dt, wi]),
            "start_s": _median([s.start_s for s in runs]),
            "step_ms": per_step,
            "step_ms_median": _median(per_step),
            "cumulative_s": cumulative,
            "total_s": cumulative[str(n)],
        }
        if config.natural:
            entry["natural_s"] = _median([x[0] for x in natural[c]])
            entry["natural_tokens"] = natural[c][0][1]
        results.append(entry)

    speedups = []
    by_key = {(e["dtype"], e["beam_size"], e["window"], e["mode"]): e for e in results}
    if "full" in config.modes:
        for dt in dtypes:
            for b in config.beam_sizes:
                for w in windows:
                    full = by_key[dt, b, w["index"], "full"]
                    for m in config.modes:
                        if m == "full":
                            continue
                        other = by_key[dt, b, w["index"], m]
                        s = {
                            "dtype": dt,
                            "beam_size": b,
                            "window": w["index"],
                            "vs": m,
                            "at": {
                                k: (other["cumulative_s"][k] / full["cumulative_s"][k])
                                if other["cumulative_s"][k] and full["cumulative_s"][k]
                                else None
                                for k in full["cumulative_s"]
                            },
                        }
                        if config.natural:
                            s["natural"] = other["natural_s"] / full["natural_s"]
                        speedups.append(s)

    breakdown = []
    if config.breakdown:
        log("breakdown of cached steps")
        for dt, model in models.items():
            for b in config.beam_sizes:
                opts = forced_options(model, "full", b, config.sample_len, config.language)
                step_breakdown(model, features[dt, 0], opts, runs=1)  # warm the wrappers
                bd = step_breakdown(model, features[dt, 0], opts, runs=max(1, min(config.runs, 3)))
                bd["dtype"] = dt
                bd["encoder_ms"] = 1000 * _median(encoder_s[dt, 0])
                breakdown.append(bd)

    return {
        "benchmark": "kv_cache",
        "machine": machine_info(),
        "model": config.model,
        "device": str(device),
        "file": str(config.file),
        "windows": [{k: v for k, v in w.items() if k != "mel"} for w in windows],
        "runs": config.runs,
        "sample_len": config.sample_len,
        "milestones": list(config.milestones),
        "note": "forced decodes: end-of-text suppressed, no timestamps; cumulative times exclude the encoder",
        "results": results,
        "speedups": speedups,
        "breakdown": breakdown,
    }


# ---------------------------------------------------------------------------------------------------------
# output


def format_table(rows: list[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """A Markdown table: columns are (key, header, format spec); None and missing values print as '-'."""

    def cell(row, key, spec):
        v = row.get(key)
        if v is None:
            return "-"
        return format(v, spec) if spec else str(v)

    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |"]
    lines.append("|" + "|".join("---" if not spec else "---:" for _, _, spec in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(cell(row, k, s) for k, _, s in columns) + " |")
    return "\n".join(lines)


def format_report(report: dict) -> str:
    ms = report["milestones"]
    rows = []
    for e in report["results"]:
        row = {
            "config": f"{e['dtype']} beam {e['beam_size']} w{e['window']}",
            "mode": e["mode"],
            "enc": 1000 * e["encoder_s"],
            "start": 1000 * e["start_s"],
            "first": e["step_ms"][0],
            "step": e["step_ms_median"],
            "last": e["step_ms"][-1],
            "total": e["total_s"],
            "natural": e.get("natural_s"),
            "ntok": e.get("natural_tokens"),
        }
        for k in ms:
            row[f"t{k}"] = e["cumulative_s"].get(str(k))
        rows.append(row)
    cols = [
        ("config", "config", ""),
        ("mode", "cache", ""),
        ("enc", "encoder ms", ".0f"),
        ("start", "setup ms", ".1f"),
        ("first", "step 0 ms", ".1f"),
        ("step", "median step ms", ".1f"),
        ("last", "last step ms", ".1f"),
        *[(f"t{k}", f"to {k} tok s", ".3f") for k in ms],
        ("total", f"{report['sample_len']} steps s", ".3f"),
        ("natural", "natural decode s", ".3f"),
        ("ntok", "natural tokens", ""),
    ]
    parts = [
        f"kvwhisper bench: {report['model']} on {report['device']} ({report['machine']['cpu']}, "
        f"{report['machine']['torch_threads']} threads), {report['runs']} runs, median; {report['file']}",
        "",
        format_table(rows, cols),
    ]
    if report["speedups"]:
        srows = []
        for s in report["speedups"]:
            row = {"config": f"{s['dtype']} beam {s['beam_size']} w{s['window']}", "vs": s["vs"]}
            for k in ms:
                row[f"x{k}"] = s["at"].get(str(k))
            row["xall"] = s["at"].get(str(report["sample_len"]))
            row["xnat"] = s.get("natural")
            srows.append(row)
        scols = [
            ("config", "config", ""),
            ("vs", "full is faster than", ""),
            *[(f"x{k}", f"x at {k} tok", ".2f") for k in ms],
            ("xall", f"x at {report['sample_len']} tok", ".2f"),
            ("xnat", "x natural decode", ".2f"),
        ]
        parts += [
            "",
            "Speed-up of the full cache (time of the other mode / time of full):",
            "",
            format_table(srows, scols),
        ]
    if report["breakdown"]:
        names = list(report["breakdown"][0]["parts_ms"])
        brows = []
        for bd in report["breakdown"]:
            row = {
                "config": f"{bd['dtype']} beam {bd['beam_size']}",
                "step": bd["step_ms"],
                "enc": bd["encoder_ms"],
            }
            for n in names:
                v = bd["parts_ms"].get(n)
                row[n] = v
                row[n + "%"] = 100 * v / bd["step_ms"] if v is not None and bd["step_ms"] else None
            brows.append(row)
        bcols = [("config", "part of a cached step (ms, % of step)", "")] + [
            (r["config"], r["config"], "") for r in brows
        ]
        table_rows = []
        for n in [*names, "step"]:
            line = {"config": n if n != "step" else "whole step"}
            for r in brows:
                v = r[n]
                pct = r.get(n + "%")
                line[r["config"]] = f"{v:.2f}" + (f" ({pct:.0f}%)" if pct is not None else "")
            table_rows.append(line)
        enc = {"config": "encoder, once per window"}
        for r in brows:
            enc[r["config"]] = f"{r['enc']:.0f}"
        table_rows.append(enc)
        parts += ["", "Where a cached (full) step's time goes:", "", format_table(table_rows, bcols)]
    return "\n".join(parts)


def summary_line(report: dict, json_path: Path | None = None, png_path: Path | None = None) -> dict:
    """The last line: speed-ups of full over none / self_only at each milestone, per dtype and beam size."""
    out = {"benchmark": "kv_cache", "model": report["model"], "device": report["device"]}
    for s in report["speedups"]:
        key = f"{s['dtype']}_beam{s['beam_size']}_w{s['window']}_full_vs_{s['vs']}"
        out[key] = {k: (round(v, 2) if v else None) for k, v in s["at"].items()}
    for e in report["results"]:
        if e["mode"] == "full":
            out[f"{e['dtype']}_beam{e['beam_size']}_w{e['window']}_full_step_ms"] = round(
                e["step_ms_median"], 2
            )
    if json_path:
        out["json"] = str(json_path)
    if png_path:
        out["png"] = str(png_path)
    return out


def plot_latency(report: dict, path: Path) -> Path:
    """Per-step latency against tokens generated, one line per cache mode; one panel per dtype x beam size."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    panels = list(dict.fromkeys((e["dtype"], e["beam_size"]) for e in report["results"]))
    dtypes = list(dict.fromkeys(p[0] for p in panels))
    beams = list(dict.fromkeys(p[1] for p in panels))
    fig = Figure(figsize=(5.5 * len(beams), 3.8 * len(dtypes)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(dtypes), len(beams), squeeze=False, sharex=True)
    colors = {"full": "tab:green", "self_only": "tab:orange", "none": "tab:red"}
    for i, dt in enumerate(dtypes):
        for j, b in enumerate(beams):
            ax = axes[i][j]
            for mode in dict.fromkeys(e["mode"] for e in report["results"]):
                curves = [
                    e["step_ms"]
                    for e in report["results"]
                    if (e["dtype"], e["beam_size"], e["mode"]) == (dt, b, mode)
                ]
                if not curves:
                    continue
                n = min(len(c) for c in curves)
                y = [statistics.median(c[k] for c in curves) for k in range(n)]
                ax.plot(range(n), y, label=mode, color=colors.get(mode), linewidth=1.2)
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
            ax.set_title(f"{report['model']} {dt}, " + ("greedy" if b == 1 else f"beam {b}"), fontsize=10)
            ax.set_xlabel("tokens generated before the step")
            ax.set_ylabel("ms per step (median)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(
        f"decode step latency by KV-cache mode ({report['device']}, {report['machine']['torch_threads']} threads)",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def main(argv: list[str] | None = None) -> int:
    """`kvwhisper bench ...` as a function (benchmarks/kv_cache.py calls this)."""
    from . import main as cli_main

    return cli_main(["bench", *(argv or [])])
