"""`kvwhisper trace FILE`: decode one 30-second window step by step and show what every step did.

One table row per step: what was fed to the decoder, the KV cache length, the token taken and its log-prob,
the raw top-k (before the logits processors: `*` marks the token taken, `x` a token a processor removed) and
what each processor did. `--json` writes the same as one JSON record per step; `--plot` / `--mel-plot` draw
the cross-attention map and the window's spectrogram (matplotlib).
"""

from __future__ import annotations

import json
import os
import sys
import time

from . import CLIError, UsageError
from .checks import (
    check_count,
    check_device,
    check_language,
    check_model,
    check_output_file,
    flag,
    usage_error,
)


def add_parser(sub) -> None:
    p = sub.add_parser("trace", help="decode one window step by step, showing each step")
    p.add_argument("file")
    p.add_argument("--model", default="tiny.en", help="model name or checkpoint path (default: tiny.en)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=("fp32", "fp16", "bf16"))
    p.add_argument(
        "--window",
        type=int,
        default=None,
        metavar="N",
        help="the N-th 30 s window of the file, cut as long-form transcription does "
        "(default: the first 30 s, as `transcribe` reads them)",
    )
    p.add_argument("--top-k", type=int, default=5, help="raw candidates shown per step (default: 5)")
    p.add_argument("--beam-size", type=int, default=None)
    p.add_argument("--language", default=None)
    p.add_argument("--sample-len", type=int, default=None, help="at most this many steps (default: 224)")
    p.add_argument("--no-cache", action="store_true", help="no KV cache: feed the whole prefix at every step")
    p.add_argument("--json", metavar="OUT.jsonl", default=None, help="write one JSON record per step")
    p.add_argument("--plot", metavar="OUT.png", default=None, help="draw the cross-attention map")
    p.add_argument("--mel-plot", metavar="OUT.png", default=None, help="draw the log-mel spectrogram")
    p.set_defaults(func=run)


def check_args(args):
    """Every option before the model is loaded: UsageError (exit status 2) for the first bad one; the
    DecodingOptions of the session."""
    from ..decoding import DecodingOptions, OptionError, check_options

    check_count("--top-k", args.top_k)
    check_count("--window", args.window, 0)
    check_model(args.model)
    check_device(args.device)
    check_language(args.language)
    for option in ("json", "plot", "mel_plot"):
        check_output_file(flag(option), getattr(args, option))
    options = DecodingOptions(
        language=args.language,
        beam_size=args.beam_size,
        sample_len=args.sample_len,
        kv_cache="none" if args.no_cache else "full",
    )
    try:
        check_options(options)
    except OptionError as e:
        raise usage_error(e) from None
    if args.plot or args.mel_plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as e:
            raise UsageError("--plot and --mel-plot need matplotlib: pip install matplotlib") from e
    if not os.path.exists(args.file):
        raise CLIError(f"{args.file}: no such file")
    return options


def run(args) -> int:
    from ..inspection import decode_session
    from ..model import load_model

    options = check_args(args)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    session = decode_session(model, args.file, options, top_k=args.top_k, window=args.window)
    out = print
    out(header(args, model, session))
    out(TABLE_HEADER)
    jsonl = open(args.json, "w", encoding="utf-8") if args.json else None
    start = time.perf_counter()
    try:
        for trace in session:
            out(format_step(trace))
            if trace.beams is not None and session.is_beam_search:
                for line in format_beams(trace):
                    out(line)
            if jsonl is not None:
                jsonl.write(json.dumps(trace.to_dict(), ensure_ascii=False) + "\n")
                jsonl.flush()
    finally:
        if jsonl is not None:
            jsonl.close()
    total = time.perf_counter() - start
    result = session.result
    last = session.traces[-1]
    out(
        f"\n{len(session.traces)} steps in {total:.2f} s, stopped by {last.stop_reason}; "
        f"avg log-prob {result.avg_logprob:.3f}, no-speech {result.no_speech_prob:.3f}, "
        f"compression {result.compression_ratio:.2f}"
    )
    out(f"text: {model.tokenizer.decode_with_timestamps(result.tokens)}")
    if args.mel_plot and session.mel is not None:
        from ..inspection.plots import plot_mel

        offset = (args.window or 0) * 30.0
        plot_mel(
            session.mel,
            args.mel_plot,
            title=title(args, "log-mel"),
            audio_seconds=session.audio_seconds,
            offset_seconds=offset,
        )
        out(f"wrote {args.mel_plot}")
    if args.plot:
        from ..inspection.plots import plot_cross_attention

        weights, labels = session.attention_map("alignment")
        plot_cross_attention(
            weights,
            labels,
            args.plot,
            title=title(args, "cross-attention, alignment heads"),
            audio_seconds=session.audio_seconds,
        )
        out(f"wrote {args.plot}")
    if args.json:
        out(f"wrote {args.json}")
    sys.stdout.flush()
    return 0


def title(args, what: str) -> str:
    window = "first 30 s" if args.window is None else f"window {args.window}"
    return f"{args.file} ({window}): {what}"


def header(args, model, session) -> str:
    opts = session.options
    mode = f"beam search ({opts.beam_size})" if session.is_beam_search else "greedy"
    if args.window is None:
        where = "first 30 s"
    else:
        where = f"window {args.window} ({args.window * 30:.0f}-{args.window * 30 + 30:.0f} s)"
    audio = "" if session.audio_seconds is None else f", {session.audio_seconds:.2f} s of audio"
    prompt = " ".join(_show(model.tokenizer.decode_with_timestamps([t])) for t in session.initial_tokens)
    return (
        f"{args.file}: {model.name or args.model}, {where}{audio}; {mode}, kv_cache={opts.kv_cache}\n"
        f"initial tokens: {prompt}"
    )


TABLE_HEADER = (
    f"{'step':>4} {'pos':>4} {'fed':<26} {'cache':>5}  {'token':<18} {'logp':>7} {'cum':>8}  "
    f"{'processors':<26} {'ms':>6}  top-k raw (* taken, x removed by a processor)"
)

SHORT_NAMES = {"suppress_blank": "blank", "suppress_tokens": "supp", "timestamp_rules": "ts"}


def _show(text: str, width: int | None = None) -> str:
    """A token for the table: text tokens quoted (their spaces matter), specials as they are."""
    if not (text.startswith("<|") and text.endswith("|>")):
        text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
        text = f"'{text}'"
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def _fed(trace) -> str:
    n = len(trace.fed)
    if n == 1:
        return _show(trace.fed_text[0], 26)
    return f"{n}: …{_show(trace.fed_text[-1], 20)}"


def _processors(trace) -> str:
    parts = []
    for action in trace.processors:
        if action.suppressed == 0 and not action.forced_timestamp:
            continue
        part = f"{SHORT_NAMES.get(action.name, action.name)}-{action.suppressed}"
        if action.forced_timestamp:
            part += "!"  # rule 4: timestamps forced
        parts.append(part)
    return " ".join(parts) or "-"


def _logp(x: float) -> str:
    return f"{x:.3f}" if x == x and abs(x) != float("inf") else "-inf"


def format_step(trace) -> str:
    removed = {c.id for action in trace.processors for c in action.suppressed_top}
    top = []
    for c in trace.top_k:
        mark = "*" if c.id == trace.token.id else ("x" if c.id in removed else "")
        top.append(f"{mark}{_show(c.text)} {_logp(c.logprob)}")
    token = _show(trace.token.text, 17) + ("!" if trace.forced else "")
    stop = f"  [{trace.stop_reason}]" if trace.stop_reason else ""
    return (
        f"{trace.step:>4} {trace.position:>4} {_fed(trace):<26} {trace.cache_self[0]:>5}  {token:<18} "
        f"{_logp(trace.token.logprob):>7} {_logp(trace.cumulative_logprob):>8}  {_processors(trace):<26} "
        f"{trace.time_ms:>6.1f}  {'  '.join(top)}{stop}"
    )


def format_beams(trace) -> list[str]:
    lines = []
    for b in trace.beams:
        text = b.text if len(b.text) <= 70 else "…" + b.text[-69:]
        lines.append(f"{'':>10}beam {b.row} <- {b.source}  {_logp(b.score):>8}  {text}")
    if trace.beam_finished:
        lines.append(f"{'':>10}finished: {len(trace.beam_finished)}")
    return lines
