"""Long-form transcription against the peers: kvwhisper, openai-whisper, faster-whisper, transformers.

One >= 10-minute English recording (the shared corpus' English clips and the LibriVox sonnets, concatenated at
16 kHz in a fixed order, cached in benchmarks/out/; its reference transcript is the clips' transcripts joined),
transcribed by every engine with the same weights and the same options:

- weights: kvwhisper loads the tiny.en CTranslate2 package; openai-whisper the same numbers written as a
  reference .pt (`write_openai`); transformers the same written as a Hugging Face folder (`write_hf`);
  faster-whisper reads the CTranslate2 folder itself (compute types float32 and int8);
- options: English, greedy or beam 5, timestamps on, the default temperature fallback (0, 0.2, ..., 1.0; one
  sample per temperature), compression-ratio 2.4 (transformers: 1.35, its token-level equivalent),
  log-prob -1, no-speech 0.6, condition_on_previous_text, no VAD;
- threads: --threads (default 2) for every engine (torch.set_num_threads; faster-whisper cpu_threads).

Each (engine, run) is a fresh subprocess, so peak RSS is that engine's own (imports, weights, activations);
model loading and a warm-up transcription of the first 30 s happen before the timed transcription. Engines
alternate within each run; reported values are medians over the runs, and "time / kvwhisper" is the median
over runs of (engine wall time / kvwhisper wall time in the same run); "CPU / kvwhisper" the same for CPU
time (user + system of the transcription), which a loaded machine disturbs less than wall time.

    python benchmarks/peers.py                                # everything, 3 runs of greedy, 1 of beam 5
    python benchmarks/peers.py --minutes 2 --runs 1 --configs greedy    # a quick check
    python benchmarks/peers.py --engines kvwhisper faster-whisper:int8 --threads 1

Missing peers are skipped with a message. Output: a table on stdout, benchmarks/out/peers/peers.json (every
run, transcripts included), and a final JSON line.
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

TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
CONFIGS = {"greedy": 1, "beam5": 5}
# engine id -> (python module it needs, precision label)
ENGINES = {
    "kvwhisper": ("kvwhisper", "fp32"),
    "kvwhisper:bf16": ("kvwhisper", "bf16"),
    "kvwhisper:int8": ("kvwhisper", "int8"),
    "openai-whisper": ("whisper", "fp32"),
    "faster-whisper:float32": ("faster_whisper", "float32"),
    "faster-whisper:int8": ("faster_whisper", "int8"),
    "transformers": ("transformers", "fp32"),
}
DEFAULT_ENGINES = (
    "kvwhisper",
    "kvwhisper:bf16",
    "openai-whisper",
    "faster-whisper:float32",
    "faster-whisper:int8",
    "transformers",
)
WARMUP_SECONDS = 30


# ---------------------------------------------------------------------------------------------------------
# worker: one engine, one transcription, in its own process


def _torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_kvwhisper(job: dict, audio):
    import kvwhisper

    _torch_threads(job["threads"])
    t0 = time.perf_counter()
    model = kvwhisper.load_model(job["model"], device="cpu", dtype=job["precision"])
    load_s = time.perf_counter() - t0
    if not hasattr(model, "transcribe"):
        raise RuntimeError("this kvwhisper has no long-form transcribe() yet")
    opts = {
        "language": "en",
        "temperature": TEMPERATURES,
        "beam_size": job["beam_size"] if job["beam_size"] > 1 else None,
        "condition_on_previous_text": True,
    }

    def transcribe(x):
        result = model.transcribe(x, **opts)
        segments = result.segments if hasattr(result, "segments") else result["segments"]
        text = result.text if hasattr(result, "text") else result["text"]
        tokens = sum(len(s.tokens if hasattr(s, "tokens") else s["tokens"]) for s in segments)
        return text, tokens

    return load_s, transcribe


def run_openai_whisper(job: dict, audio):
    import whisper

    _torch_threads(job["threads"])
    t0 = time.perf_counter()
    model = whisper.load_model(job["weights"]["openai"], device="cpu")
    load_s = time.perf_counter() - t0
    opts = {
        "language": "en",
        "temperature": TEMPERATURES,
        "beam_size": job["beam_size"] if job["beam_size"] > 1 else None,
        "condition_on_previous_text": True,
        "fp16": False,
    }

    def transcribe(x):
        result = model.transcribe(x, **opts)
        return result["text"], sum(len(s["tokens"]) for s in result["segments"])

    return load_s, transcribe


def run_faster_whisper(job: dict, audio):
    from faster_whisper import WhisperModel

    t0 = time.perf_counter()
    model = WhisperModel(
        job["weights"]["ct2"],
        device="cpu",
        compute_type=job["precision"],
        cpu_threads=job["threads"],
        num_workers=1,
    )
    load_s = time.perf_counter() - t0
    opts = {
        "language": "en",
        "task": "transcribe",
        "beam_size": job["beam_size"],
        "best_of": 1,
        "patience": 1.0,
        "temperature": list(TEMPERATURES),
        "compression_ratio_threshold": 2.4,
        "log_prob_threshold": -1.0,
        "no_speech_threshold": 0.6,
        "condition_on_previous_text": True,
        "without_timestamps": False,
        "vad_filter": False,
    }

    def transcribe(x):
        segments, _ = model.transcribe(x, **opts)
        segments = list(segments)  # the generator does the work
        return "".join(s.text for s in segments), sum(len(s.tokens) for s in segments)

    return load_s, transcribe


def run_transformers(job: dict, audio):
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    _torch_threads(job["threads"])
    folder = job["weights"]["hf"]
    t0 = time.perf_counter()
    model = WhisperForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    features = WhisperFeatureExtractor.from_pretrained(folder)
    # write_hf's generation config has no prev_sot_token_id, and its suppress_tokens lack the special tokens;
    # transformers then takes suppress_tokens[-2] as <|startofprev|>, so every conditioned window gets a
    # garbage prompt (WER ~50% on the long file). Set both as in OpenAI's own HF checkpoints.
    gen = model.generation_config
    if getattr(gen, "prev_sot_token_id", None) is None:
        gen.prev_sot_token_id = job["sot_prev"]
    gen.suppress_tokens = sorted(set(gen.suppress_tokens or []) | set(job["special_suppress"]))
    load_s = time.perf_counter() - t0
    eot, timestamp_begin = job["eot"], job["timestamp_begin"]

    def transcribe(x):
        inputs = features(
            x,
            sampling_rate=16000,
            return_tensors="pt",
            truncation=False,
            padding="longest",
            return_attention_mask=True,
        )
        if inputs.input_features.shape[-1] < 3000:  # short-form input must be exactly 30 s
            inputs = features(x, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
        with torch.inference_mode():
            out = model.generate(
                inputs.input_features,
                attention_mask=inputs.attention_mask,
                return_timestamps=True,
                condition_on_prev_tokens=True,
                temperature=TEMPERATURES,
                compression_ratio_threshold=1.35,
                logprob_threshold=-1.0,
                no_speech_threshold=0.6,
                num_beams=job["beam_size"],
                do_sample=False,
            )
        sequence = (out["sequences"] if isinstance(out, dict) else out)[0].tolist()
        kept = [t for t in sequence if t < eot or t >= timestamp_begin]  # text and timestamp tokens
        text_tokens = [t for t in kept if t < eot]
        return {"token_ids": text_tokens}, len(kept)

    return load_s, transcribe


RUNNERS = {
    "kvwhisper": run_kvwhisper,
    "whisper": run_openai_whisper,
    "faster_whisper": run_faster_whisper,
    "transformers": run_transformers,
}


def worker(job: dict) -> dict:
    """Load, warm up on the first 30 s, then time one transcription of the whole file."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(job["threads"])
    audio = common.read_wav(Path(job["audio"]))
    module, _ = ENGINES[job["engine"]]
    load_s, transcribe = RUNNERS[module](job, audio)
    t0 = time.perf_counter()
    transcribe(audio[: WARMUP_SECONDS * common.SAMPLE_RATE])
    warmup_s = time.perf_counter() - t0
    load_before = os.getloadavg()[0]
    cpu0 = os.times()
    t0 = time.perf_counter()
    text, tokens = transcribe(audio)
    wall_s = time.perf_counter() - t0
    cpu1 = os.times()
    return {
        "load_s": load_s,
        "warmup_s": warmup_s,
        "wall_s": wall_s,
        "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "loadavg": [load_before, os.getloadavg()[0]],
        "tokens": tokens,
        "text": text,
        "peak_rss_mb": common.peak_rss_mb(),
    }


# ---------------------------------------------------------------------------------------------------------
# parent: prepare weights, run the matrix, report


def prepare_weights(model_name: str, out: Path) -> dict:
    """The same weights in every engine's format: CT2 folder (as packaged), reference .pt, HF folder."""
    import kvwhisper
    from kvwhisper.model.checkpoints import write_hf, write_openai
    from kvwhisper.model.registry import packaged_model

    model = kvwhisper.load_model(model_name, device="cpu", dtype="fp32")
    ct2 = packaged_model(model_name)
    folder = out / "models"
    folder.mkdir(parents=True, exist_ok=True)
    pt, hf = folder / f"{model_name}.pt", folder / f"{model_name}-hf"
    if not pt.is_file():
        write_openai(model, pt)
    if not (hf / "model.safetensors").is_file():
        write_hf(model, hf)
    tok = model.tokenizer
    return {
        "weights": {"ct2": str(ct2) if ct2 else None, "openai": str(pt), "hf": str(hf)},
        "eot": tok.eot,
        "timestamp_begin": tok.timestamp_begin,
        "sot_prev": tok.sot_prev,
        # what the reference suppresses at every step besides the non-speech symbols
        "special_suppress": [
            t
            for t in (tok.translate, tok.transcribe, tok.sot, tok.sot_prev, tok.sot_lm, tok.no_speech)
            if t is not None
        ],
    }


def available(engines: list[str], weights: dict) -> tuple[list[str], dict[str, str]]:
    usable, skipped = [], {}
    for e in engines:
        module, _ = ENGINES[e]
        if importlib.util.find_spec(module) is None:
            hint = {"whisper": "openai-whisper", "faster_whisper": "faster-whisper"}.get(module, module)
            skipped[e] = f"{module} is not installed (pip install {hint})"
        elif module == "faster_whisper" and not weights["weights"]["ct2"]:
            skipped[e] = "no CTranslate2 folder for this model"
        elif module == "kvwhisper" and importlib.util.find_spec("kvwhisper.transcribe.seek") is None:
            skipped[e] = "kvwhisper has no long-form transcribe (kvwhisper/transcribe/seek.py) yet"
        else:
            usable.append(e)
    return usable, skipped


def run_job(job: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    env = {**os.environ, "OMP_NUM_THREADS": str(job["threads"]), "MKL_NUM_THREADS": str(job["threads"])}
    env["TOKENIZERS_PARALLELISM"] = "false"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def text_of(record: dict, tokenizer) -> str:
    text = record["text"]
    if isinstance(text, dict):  # transformers: token ids, decoded with the shared tokenizer
        return tokenizer.decode(text["token_ids"])
    return text


def profile_kvwhisper(model_name: str, dtype: str, beam_size: int, threads: int, audio_path: Path) -> dict:
    """Where kvwhisper's long-form time goes: one timed transcription with timers around the engine's parts.

    Class-level wrappers (removed afterwards) time the whole-file mel, the encoder, the cross-attention K/V
    fill, the decoder forward (its blocks, and the rest: embeddings, final LayerNorm, output projection), the
    logits processors, the chooser, beam reordering, and the per-decode ranking; what is left of the
    transcription is the seek loop's own work (fallback decisions, segment cutting, tokenizer, prompts).
    """
    import torch

    import kvwhisper
    from kvwhisper.cli.bench_breakdown import _Timers

    # modules by their full names (kvwhisper exports a `transcribe` function too)
    choosers, decoding, kv_cache, logits, model_mod, transcribe_mod = (
        importlib.import_module(f"kvwhisper.{m}")
        for m in (
            "decoding.choosers",
            "decoding.loop",
            "model.kv_cache",
            "decoding.logits",
            "model.network",
            "transcribe.seek",
        )
    )

    torch.set_num_threads(threads)
    model = kvwhisper.load_model(model_name, device="cpu", dtype=dtype)
    audio = common.read_wav(audio_path)
    opts = {
        "language": "en",
        "temperature": TEMPERATURES,
        "beam_size": beam_size if beam_size > 1 else None,
        "condition_on_previous_text": True,
    }
    model.transcribe(audio[: WARMUP_SECONDS * common.SAMPLE_RATE], **opts)  # warm-up
    timers = _Timers(lambda: None)
    counts: dict[str, int] = {}

    def count(cls, attr, label):
        inner = getattr(cls, attr)

        def counted(*args, **kwargs):
            counts[label] = counts.get(label, 0) + 1
            return inner(*args, **kwargs)

        setattr(cls, attr, counted)
        timers._patched.append((cls, attr, True, inner))

    parts = [
        (model_mod.Whisper, "embed_audio", "encoder"),
        (model_mod.Whisper, "fill_cross", "cross K/V fill"),
        (model_mod.TextDecoder, "forward", "decoder forward"),
        (model_mod.ResidualAttentionBlock, "decode", "decoder blocks"),
        (logits.SuppressBlank, "apply", "processors"),
        (logits.SuppressTokens, "apply", "processors"),
        (logits.ApplyTimestampRules, "apply", "processors"),
        (logits.FusedProcessors, "apply", "processors"),  # with greedy's choice, when they are fused
        (choosers.GreedyChooser, "update", "chooser"),
        (choosers.BeamSearchChooser, "update", "chooser"),
        (kv_cache.KVCache, "reorder", "cache reorder"),
        (decoding.DecodingTask, "finish", "ranking + text of each decode"),
        (decoding.DecodingTask, "step", "decode steps"),
    ]
    mel_owner = importlib.import_module("kvwhisper.audio.features")
    try:
        for cls, attr, label in parts:
            timers.wrap(cls, attr, label)
        if mel_owner is not None:
            timers.wrap(mel_owner, "whole_file_mel", "whole-file mel")
        count(model_mod.Whisper, "decode", "decodes (windows x temperatures)")
        count(model_mod.Whisper, "embed_audio", "encoder runs")
        count(decoding.DecodingTask, "step", "steps")
        t0 = time.perf_counter()
        result = model.transcribe(audio, **opts)
        total = time.perf_counter() - t0
    finally:
        timers.restore()
    t = timers.total
    rows = [
        ("whole-file mel", t.get("whole-file mel", 0.0)),
        ("encoder (once per window, fallbacks reuse it)", t.get("encoder", 0.0)),
        ("cross K/V fill", t.get("cross K/V fill", 0.0)),
        ("decoder blocks (attention, MLP)", t.get("decoder blocks", 0.0)),
        (
            "decoder rest: embeddings, final LN, output projection",
            t.get("decoder forward", 0.0) - t.get("decoder blocks", 0.0),
        ),
        ("logits processors", t.get("processors", 0.0)),
        ("chooser", t.get("chooser", 0.0)),
        ("cache reorder (beam)", t.get("cache reorder", 0.0)),
        (
            "rest of the decode steps (bookkeeping)",
            t.get("decode steps", 0.0)
            - t.get("decoder forward", 0.0)
            - t.get("processors", 0.0)
            - t.get("chooser", 0.0)
            - t.get("cache reorder", 0.0),
        ),
        ("ranking + text of each decode", t.get("ranking + text of each decode", 0.0)),
    ]
    accounted = sum(v for _, v in rows)
    rows.append(("seek loop and everything else", total - accounted))
    segments = result.segments if hasattr(result, "segments") else result["segments"]
    return {
        "total_s": total,
        "parts": [{"part": k, "seconds": v, "percent": 100 * v / total} for k, v in rows],
        "counts": {**counts, "segments": len(segments)},
        "dtype": dtype,
        "beam_size": beam_size,
        "threads": threads,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--engines", nargs="+", default=list(DEFAULT_ENGINES), choices=list(ENGINES))
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--runs", type=int, default=3, help="timed runs of greedy (default: 3)")
    p.add_argument("--beam-runs", type=int, default=1, help="timed runs of beam 5 (default: 1)")
    p.add_argument("--minutes", type=float, default=None, help="use only the first N minutes of clips")
    p.add_argument("--threads", type=int, default=2, help="threads for every engine (default: 2)")
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per transcription (default: 3600)")
    p.add_argument("--out", default=str(common.OUT / "peers"))
    p.add_argument(
        "--profile",
        action="store_true",
        help="instead: one kvwhisper transcription of the file with its time split by engine part",
    )
    p.add_argument("--dtype", default="fp32", help="with --profile: kvwhisper's dtype (default: fp32)")
    p.add_argument("--beam-size", type=int, default=1, help="with --profile: 1 = greedy (default)")
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    if args.profile:
        long = common.build_long_file(args.minutes, common.OUT)
        prof = profile_kvwhisper(args.model, args.dtype, args.beam_size, args.threads, long.path)
        prof["audio"] = long.summary()
        tag = f"{args.dtype}_beam{args.beam_size}_t{args.threads}"
        path = common.save_json(Path(args.out) / f"profile_{tag}.json", prof)
        print(
            f"kvwhisper long-form profile: {args.model} {args.dtype}, "
            + ("greedy" if args.beam_size == 1 else f"beam {args.beam_size}")
            + f", {args.threads} threads, {long.seconds / 60:.1f} min: {prof['total_s']:.1f} s\n"
        )
        print(
            common.format_table(
                prof["parts"], [("part", "part", ""), ("seconds", "s", ".2f"), ("percent", "%", ".0f")]
            )
        )
        print("\n" + ", ".join(f"{k}: {v}" for k, v in prof["counts"].items()))
        print(f"\nJSON: {path}")
        common.final_line(
            {"benchmark": "peers-profile", "total_s": round(prof["total_s"], 2), "json": str(path)}
        )
        return 0

    out = Path(args.out)
    long = common.build_long_file(args.minutes, common.OUT)
    common.log(f"audio: {long.path} ({long.seconds / 60:.1f} min, {len(long.clips)} clips)")
    weights = prepare_weights(args.model, common.OUT)
    engines, skipped = available(args.engines, weights)
    for e, why in skipped.items():
        print(f"skipped {e}: {why}", file=sys.stderr)
    if not engines:
        sys.exit("no engine to run")
    baseline = next((e for e in engines if e.startswith("kvwhisper")), engines[0])
    if not baseline.startswith("kvwhisper"):
        print(f"kvwhisper is not in this run: ratios are to {baseline}", file=sys.stderr)

    import kvwhisper

    tokenizer = kvwhisper.load_model(args.model, device="cpu").tokenizer
    records = []
    started = time.perf_counter()
    for config in args.configs:
        runs = args.runs if config == "greedy" else args.beam_runs
        for r in range(runs):
            for engine in engines:
                job = {
                    "engine": engine,
                    "precision": ENGINES[engine][1],
                    "model": args.model,
                    "beam_size": CONFIGS[config],
                    "threads": args.threads,
                    "audio": str(long.path),
                    **weights,
                }
                res = run_job(job, args.timeout)
                rec = {"config": config, "engine": engine, "precision": job["precision"], "run": r, **res}
                if "error" not in res:
                    rec["text"] = text_of(res, tokenizer)
                    rec["wer"] = common.wer(long.reference, rec["text"])
                    common.log(
                        f"[{time.perf_counter() - started:7.0f} s] {config} run {r + 1}/{runs} {engine}: "
                        f"{res['wall_s']:.1f} s (CPU {res['cpu_s']:.1f} s, load {res['loadavg'][0]:.1f}), "
                        f"WER {100 * rec['wer']:.1f}%, RSS {res['peak_rss_mb']:.0f} MiB"
                    )
                else:
                    common.log(f"{config} run {r + 1}/{runs} {engine}: FAILED {res['error']}")
                records.append(rec)
                common.save_json(out / "peers.partial.json", {"runs": records})

    rows = summarize(records, engines, args.configs, baseline, long.seconds)
    report = {
        "benchmark": "peers",
        "machine": {**common.machine_info(), "threads": args.threads},
        "model": args.model,
        "audio": long.summary(),
        "baseline": baseline,
        "skipped": skipped,
        "options": {
            "language": "en",
            "temperature": TEMPERATURES,
            "condition_on_previous_text": True,
            "timestamps": True,
            "configs": {c: CONFIGS[c] for c in args.configs},
        },
        "summary": rows,
        "runs": records,
    }
    json_path = common.save_json(out / "peers.json", report)
    cols = [
        ("config", "config", ""),
        ("engine", "engine", ""),
        ("precision", "precision", ""),
        ("runs", "runs", ""),
        ("wall_s", "wall s", ".1f"),
        ("rtf", "RTF", ".3f"),
        ("tok_s", "tokens/s", ".1f"),
        ("rss", "peak RSS MiB", ".0f"),
        ("wer", "WER %", ".2f"),
        ("ratio", f"time / {baseline}", ".2f"),
        ("cpu_s", "CPU s", ".1f"),
        ("cpu_ratio", f"CPU / {baseline}", ".2f"),
        ("load_s", "load s", ".2f"),
        ("same_text", "same text as openai-whisper", ""),
    ]
    print(
        f"Long-form transcription, {args.model}, {long.seconds / 60:.1f} min of English "
        f"({len(long.clips)} clips), {args.threads} threads, {common.machine_info()['cpu']}; medians\n"
    )
    print(common.format_table(rows, cols))
    for e, why in skipped.items():
        print(f"\nskipped {e}: {why}")
    print(f"\nJSON: {json_path}")
    common.final_line(
        {
            "benchmark": "peers",
            "audio_min": round(long.seconds / 60, 2),
            "threads": args.threads,
            "rows": [
                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k != "same_text"}
                for row in rows
            ],
            "skipped": list(skipped),
            "json": str(json_path),
        }
    )
    return 0


def summarize(records: list[dict], engines: list[str], configs: list[str], baseline: str, seconds: float):
    rows = []
    for config in configs:
        ok = [r for r in records if r["config"] == config and "error" not in r]
        base = {r["run"]: r for r in ok if r["engine"] == baseline}
        ref_text = next((r["text"] for r in ok if r["engine"] == "openai-whisper"), None)
        for engine in engines:
            mine = [r for r in ok if r["engine"] == engine]
            failed = [r for r in records if r["config"] == config and r["engine"] == engine and "error" in r]
            if not mine:
                rows.append(
                    {"config": config, "engine": engine, "precision": ENGINES[engine][1], "runs": 0}
                    | ({"same_text": "failed: " + failed[0]["error"][:60]} if failed else {})
                )
                continue
            wall = common.median([r["wall_s"] for r in mine])
            ratios = [r["wall_s"] / base[r["run"]]["wall_s"] for r in mine if r["run"] in base]
            cpu_ratios = [r["cpu_s"] / base[r["run"]]["cpu_s"] for r in mine if r["run"] in base]
            same = None
            if ref_text is not None and engine != "openai-whisper":
                same = "yes" if all(r["text"] == ref_text for r in mine) else "no"
            rows.append(
                {
                    "config": config,
                    "engine": engine,
                    "precision": ENGINES[engine][1],
                    "runs": len(mine),
                    "wall_s": wall,
                    "rtf": wall / seconds,
                    "tok_s": common.median([r["tokens"] / r["wall_s"] for r in mine]),
                    "rss": common.median([r["peak_rss_mb"] for r in mine]),
                    "wer": 100 * common.median([r["wer"] for r in mine]),
                    "ratio": common.median(ratios) if ratios else None,
                    "cpu_s": common.median([r["cpu_s"] for r in mine]),
                    "cpu_ratio": common.median(cpu_ratios) if cpu_ratios else None,
                    "load_s": common.median([r["load_s"] for r in mine]),
                    "same_text": same,
                }
            )
    return rows


if __name__ == "__main__":
    sys.exit(main())
