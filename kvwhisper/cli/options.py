"""The options `kvwhisper transcribe` and `kvwhisper corpus` share: the model, decoding and transcription
options (openai-whisper's `whisper` command's, each also accepted with underscores, e.g. `--word_timestamps`),
their checks before any model is loaded, and transcribe()'s keyword arguments built from them."""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from ..utils import optional_float, optional_int, str2bool
from . import UsageError
from .checks import add_vad_arguments, check_transcribe_args, vad_parameters


def number(string: str) -> float:
    try:
        return float(string)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {string!r}") from None


def option(p, name: str, *short: str, **kw) -> None:
    """An option under its hyphenated name (and short names), plus the reference's underscored spelling
    as a hidden alias (``--word_timestamps``)."""
    if kw.get("type") is str2bool:
        kw.setdefault("metavar", "{True,False}")
    action = p.add_argument(name, *short, **kw)
    if "-" in name[2:]:
        alias = {k: v for k, v in kw.items() if k in ("type", "choices", "metavar")}
        p.add_argument(
            "--" + name[2:].replace("-", "_"),
            dest=action.dest,
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
            **alias,
        )


def add_model_arguments(p) -> None:
    """--model, --model-dir, --device, --dtype, --fp16."""
    p.add_argument("--model", default="tiny.en", help="model name or checkpoint path (default: tiny.en)")
    option(
        p,
        "--model-dir",
        default=None,
        help="folder holding downloaded model files (default: ~/.cache/kvwhisper, then ~/.cache/whisper)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument(
        "--dtype",
        default=None,
        choices=("fp32", "fp16", "bf16", "int8"),
        help="default: fp16 on CUDA, else fp32; int8 (CPU): bf16 with int8 weights in the decode steps",
    )
    p.add_argument(
        "--fp16",
        type=str2bool,
        default=True,
        metavar="{True,False}",
        help="False: fp32 even on CUDA (as --dtype fp32); True: fp16 on CUDA, fp32 on CPU (default)",
    )


def add_decoding_arguments(p) -> None:
    """The decoding, transcription, subtitle, VAD and CPU options."""
    p.add_argument(
        "--task",
        default="transcribe",
        choices=("transcribe", "translate"),
        help="X->X speech recognition or X->English translation",
    )
    p.add_argument(
        "--language",
        default=None,
        help="language spoken (code or English name); detected from the first 30 s when omitted",
    )

    p.add_argument(
        "--temperature", type=number, default=0.0, help="temperature of the first decode (default: 0)"
    )
    option(p, "--best-of", type=optional_int, default=5, help="candidates when sampling at temperature > 0")
    option(
        p,
        "--beam-size",
        type=optional_int,
        default=5,
        help="beams in beam search at temperature 0 (None: greedy)",
    )
    p.add_argument("--patience", type=number, default=None, help="beam search patience (arxiv:2204.05424)")
    option(
        p,
        "--length-penalty",
        type=number,
        default=None,
        help="length penalty alpha (arxiv:1609.08144); default: length normalization",
    )
    option(
        p,
        "--suppress-tokens",
        default="-1",
        help="comma-separated token ids to suppress; -1: non-speech symbols",
    )
    option(p, "--initial-prompt", default=None, help="text to use as the prompt of the first window")
    option(
        p,
        "--carry-initial-prompt",
        type=str2bool,
        default=False,
        help="prepend the initial prompt to the prompt of every window",
    )
    option(
        p,
        "--condition-on-previous-text",
        type=str2bool,
        default=True,
        help="feed the previous output as the prompt of the next window",
    )
    option(
        p,
        "--temperature-increment-on-fallback",
        type=optional_float,
        default=0.2,
        help="temperature step when a decode fails the thresholds below (None: no fallback)",
    )
    option(
        p,
        "--compression-ratio-threshold",
        type=optional_float,
        default=2.4,
        help="a decode with a gzip compression ratio above this has failed",
    )
    option(
        p,
        "--logprob-threshold",
        type=optional_float,
        default=-1.0,
        help="a decode with an average log-probability below this has failed",
    )
    option(
        p,
        "--no-speech-threshold",
        type=optional_float,
        default=0.6,
        help="no-speech probability above this with a failed log-probability means silence",
    )
    option(
        p,
        "--word-timestamps",
        type=str2bool,
        default=False,
        help="word-level timestamps (cross-attention DTW)",
    )
    option(
        p,
        "--prepend-punctuations",
        default="\"'“¿([{-",
        help="with word timestamps: merged into the next word",
    )
    option(
        p,
        "--append-punctuations",
        default="\"'.。,，!！?？:：”)]}、",
        help="with word timestamps: merged into the previous word",
    )
    option(
        p,
        "--highlight-words",
        type=str2bool,
        default=False,
        help="(needs --word-timestamps True) underline each word as it is spoken in srt and vtt",
    )
    option(
        p,
        "--max-line-width",
        type=optional_int,
        default=None,
        help="(needs --word-timestamps True) characters per subtitle line",
    )
    option(
        p,
        "--max-line-count",
        type=optional_int,
        default=None,
        help="(needs --word-timestamps True) lines per subtitle",
    )
    option(
        p,
        "--max-words-per-line",
        type=optional_int,
        default=None,
        help="(needs --word-timestamps True, no effect with --max-line-width) words per subtitle line",
    )
    option(
        p,
        "--clip-timestamps",
        default="0",
        help="start,end,start,end,... seconds of the clips to transcribe (last end: end of file)",
    )
    option(
        p,
        "--hallucination-silence-threshold",
        type=optional_float,
        default=None,
        help="(needs --word-timestamps True) skip silences longer than this around likely hallucinations",
    )
    option(
        p,
        "--repeat-no-speech-threshold",
        type=optional_float,
        default=0.2,
        help="drop a segment repeating the previous one's text when its no-speech probability is above this "
        "(not in openai-whisper; None: off, the reference's output)",
    )
    p.add_argument("--threads", type=optional_int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--seed",
        type=optional_int,
        default=None,
        help="seed of the samples drawn at fallback temperatures (per file: the same batched or alone)",
    )
    add_vad_arguments(p)
    option(
        p,
        "--vad-filter",
        type=str2bool,
        default=False,
        help="decode only the speech the silero VAD finds (times stay on the file's timeline); the --vad-* "
        "options tune it (see `kvwhisper vad FILE`)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the one-token decoder step (compiles on first use; not faster on CPU)",
    )


def temperatures(start: float, increment: float | None) -> tuple[float, ...]:
    """The fallback temperatures, as the reference's CLI builds them."""
    from ..decoding.options import OptionError, check_number

    try:
        check_number("temperature", start, low=0)
        check_number("temperature_increment_on_fallback", increment, low=0, above=True)
    except OptionError as e:
        raise UsageError(f"--{e.option.replace('_', '-')}: {e.reason}") from None
    if increment is None:
        return (start,)
    return tuple(float(t) for t in np.arange(start, 1.0 + 1e-6, increment)) or (start,)


def window_options(args, language: str | None) -> dict:
    """The DecodingOptions fields transcribe() passes on to each window's decode."""
    return dict(
        task=args.task,
        language=language,
        best_of=args.best_of,
        beam_size=args.beam_size,
        patience=args.patience,
        length_penalty=args.length_penalty,
        suppress_tokens=args.suppress_tokens,
        compile=args.compile,
    )


def seek_options(args) -> dict:
    """transcribe()'s own options (thresholds, clips, guards) from the command line."""
    return dict(
        compression_ratio_threshold=args.compression_ratio_threshold,
        logprob_threshold=args.logprob_threshold,
        no_speech_threshold=args.no_speech_threshold,
        clip_timestamps=args.clip_timestamps,
        hallucination_silence_threshold=args.hallucination_silence_threshold,
        repeat_no_speech_threshold=args.repeat_no_speech_threshold,
    )


def check_options(args) -> None:
    """Every option, before the model is loaded: UsageError (exit status 2) for the first bad one."""
    temps = temperatures(args.temperature, args.temperature_increment_on_fallback)
    check_transcribe_args(args, temps, window_options(args, args.language), seek_options(args))
    if args.max_line_count and not args.max_line_width:
        warnings.warn("--max-line-count has no effect without --max-line-width", stacklevel=2)
    if args.max_words_per_line and args.max_line_width:
        warnings.warn("--max-words-per-line has no effect with --max-line-width", stacklevel=2)


def job_options(args) -> dict:
    """Keyword arguments of transcribe() from the command line, but for ``verbose`` and what needs the model
    (``transcribe_options``)."""
    return dict(
        temperature=temperatures(args.temperature, args.temperature_increment_on_fallback),
        condition_on_previous_text=args.condition_on_previous_text,
        initial_prompt=args.initial_prompt,
        carry_initial_prompt=args.carry_initial_prompt,
        word_timestamps=args.word_timestamps,
        prepend_punctuations=args.prepend_punctuations,
        append_punctuations=args.append_punctuations,
        seed=args.seed,
        vad_filter=args.vad_filter,
        vad_parameters=vad_parameters(args),
        **seek_options(args),
        **window_options(args, args.language),
    )


def transcribe_options(args, model) -> dict:
    """Keyword arguments of transcribe() from the command line, for ``model``."""
    from ..transcribe.checks import english_only

    options = job_options(args)
    options["language"] = english_only(args.language, model, args.model)
    return dict(verbose=args.verbose, **options)
