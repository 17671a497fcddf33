"""`kvwhisper transcribe FILE...`: long-form transcription of audio / video files.

Options follow openai-whisper's `whisper` command (each also accepted with underscores, e.g.
`--word_timestamps`); True/False options take the words True or False, as there.

Progress: each segment is printed as it is decoded (`--verbose True`, the default, as the reference's);
`--verbose False` shows a progress bar over the audio's seconds on stderr instead.

Output: without --output-dir / --output-format the transcript of each file goes to stdout (its segments as
they are decoded; with --verbose False its text at the end; after a `==> FILE <==` line when several files
are given); with either of them, transcript files are written too (--output-format defaults to "all",
--output-dir to "."). Every option is checked before the model is loaded (`cli/checks.py`). A file that
cannot be transcribed prints one `kvwhisper: error: FILE: cause` line to stderr; the other files are still
done, and the exit status is 1. The output folder and output-name clashes are checked before any work, and outputs
are written whole (`outputs.py`); `-` reads standard input.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np

from ..utils import optional_float, optional_int, str2bool
from . import CLIError, UsageError
from .checks import (
    WORD_OPTIONS,
    add_vad_arguments,
    check_transcribe_args,
    dtype,
    vad_parameters,
    verify_for_model,
)
from .outputs import audio_warnings_as_lines, check_distinct_outputs, interrupt_after, prepare_output_dir

EPILOG = """\
output: without --output-dir/--output-format the transcript is printed to stdout; with either of them,
files named after each input are written instead (format "all" = txt, vtt, srt, tsv and json; directory
"." by default). Unlike openai-whisper, nothing is written to the current directory unless asked.
--verbose True (the default) prints each segment with its times as it is decoded; --verbose False shows a
progress bar on stderr and prints the final text."""


def number(string: str) -> float:
    try:
        return float(string)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {string!r}") from None


def _opt(p, name: str, *short: str, **kw) -> None:
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


def add_parser(sub) -> None:
    p = sub.add_parser(
        "transcribe",
        help="transcribe audio or video files (any length)",
        description="Transcribe audio or video files of any length, 30 seconds at a time.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="audio or video file(s) to transcribe")
    p.add_argument("--model", default="tiny.en", help="model name or checkpoint path (default: tiny.en)")
    _opt(
        p,
        "--model-dir",
        default=None,
        help="folder holding downloaded model files (default: ~/.cache/kvwhisper, then ~/.cache/whisper)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument(
        "--dtype", default=None, choices=("fp32", "fp16", "bf16"), help="default: fp16 on CUDA, else fp32"
    )
    p.add_argument(
        "--fp16",
        type=str2bool,
        default=True,
        metavar="{True,False}",
        help="False: fp32 even on CUDA (as --dtype fp32); True: fp16 on CUDA, fp32 on CPU (default)",
    )
    _opt(p, "--output-dir", "-o", default=None, help="write transcript files to this directory")
    _opt(
        p,
        "--output-format",
        "-f",
        default=None,
        choices=("txt", "vtt", "srt", "tsv", "json", "all"),
        help="write transcript files of this format (default with --output-dir: all)",
    )
    _opt(
        p,
        "--verbose",
        type=str2bool,
        default=True,
        help="True: print segments as they are decoded (default); False: a progress bar, then the text",
    )

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
    _opt(p, "--best-of", type=optional_int, default=5, help="candidates when sampling at temperature > 0")
    _opt(
        p,
        "--beam-size",
        type=optional_int,
        default=5,
        help="beams in beam search at temperature 0 (None: greedy)",
    )
    p.add_argument("--patience", type=number, default=None, help="beam search patience (arxiv:2204.05424)")
    _opt(
        p,
        "--length-penalty",
        type=number,
        default=None,
        help="length penalty alpha (arxiv:1609.08144); default: length normalization",
    )
    _opt(
        p,
        "--suppress-tokens",
        default="-1",
        help="comma-separated token ids to suppress; -1: non-speech symbols",
    )
    _opt(p, "--initial-prompt", default=None, help="text to use as the prompt of the first window")
    _opt(
        p,
        "--carry-initial-prompt",
        type=str2bool,
        default=False,
        help="prepend the initial prompt to the prompt of every window",
    )
    _opt(
        p,
        "--condition-on-previous-text",
        type=str2bool,
        default=True,
        help="feed the previous output as the prompt of the next window",
    )
    _opt(
        p,
        "--temperature-increment-on-fallback",
        type=optional_float,
        default=0.2,
        help="temperature step when a decode fails the thresholds below (None: no fallback)",
    )
    _opt(
        p,
        "--compression-ratio-threshold",
        type=optional_float,
        default=2.4,
        help="a decode with a gzip compression ratio above this has failed",
    )
    _opt(
        p,
        "--logprob-threshold",
        type=optional_float,
        default=-1.0,
        help="a decode with an average log-probability below this has failed",
    )
    _opt(
        p,
        "--no-speech-threshold",
        type=optional_float,
        default=0.6,
        help="no-speech probability above this with a failed log-probability means silence",
    )
    _opt(
        p,
        "--word-timestamps",
        type=str2bool,
        default=False,
        help="word-level timestamps (cross-attention DTW)",
    )
    _opt(
        p,
        "--prepend-punctuations",
        default="\"'“¿([{-",
        help="with word timestamps: merged into the next word",
    )
    _opt(
        p,
        "--append-punctuations",
        default="\"'.。,，!！?？:：”)]}、",
        help="with word timestamps: merged into the previous word",
    )
    _opt(
        p,
        "--highlight-words",
        type=str2bool,
        default=False,
        help="(needs --word-timestamps True) underline each word as it is spoken in srt and vtt",
    )
    _opt(
        p,
        "--max-line-width",
        type=optional_int,
        default=None,
        help="(needs --word-timestamps True) characters per subtitle line",
    )
    _opt(
        p,
        "--max-line-count",
        type=optional_int,
        default=None,
        help="(needs --word-timestamps True) lines per subtitle",
    )
    _opt(
        p,
        "--max-words-per-line",
        type=optional_int,
        default=None,
        help="(needs --word-timestamps True, no effect with --max-line-width) words per subtitle line",
    )
    _opt(
        p,
        "--clip-timestamps",
        default="0",
        help="start,end,start,end,... seconds of the clips to transcribe (last end: end of file)",
    )
    _opt(
        p,
        "--hallucination-silence-threshold",
        type=optional_float,
        default=None,
        help="(needs --word-timestamps True) skip silences longer than this around likely hallucinations",
    )
    _opt(
        p,
        "--repeat-no-speech-threshold",
        type=optional_float,
        default=0.2,
        help="drop a segment repeating the previous one's text when its no-speech probability is above this "
        "(not in openai-whisper; None: off, the reference's output)",
    )
    p.add_argument("--threads", type=optional_int, default=0, help="torch CPU threads (0: torch's default)")
    _opt(
        p,
        "--batch-size",
        type=optional_int,
        default=None,
        help="decode the windows of up to this many files together (each file's output is the one it gets "
        "alone; results are written as each file finishes); default: one window at a time",
    )
    p.add_argument(
        "--split",
        type=str2bool,
        default=False,
        metavar="{True,False}",
        help="with --batch-size: also cut each file into up to that many parts at quiet points, transcribed "
        "together (faster on one long file; the text may differ from the unsplit run near the cuts)",
    )
    p.add_argument(
        "--seed",
        type=optional_int,
        default=None,
        help="seed of the samples drawn at fallback temperatures (per file: the same batched or alone)",
    )
    add_vad_arguments(p)
    _opt(
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
    p.set_defaults(func=run)


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


def transcribe_options(args, model) -> dict:
    """Keyword arguments of transcribe() from the command line."""
    language = args.language
    if language is not None and not model.is_multilingual:
        if language.lower() not in ("en", "english"):
            warnings.warn(
                f"{args.model} is English-only; transcribing as English, not {language!r}", stacklevel=2
            )
        language = "en"
    return dict(
        verbose=args.verbose,
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
        **window_options(args, language),
    )


def _cause(e: BaseException) -> str:
    from ..audio import AudioError

    if isinstance(e, AudioError):
        return e.cause
    if isinstance(e, OSError) and e.strerror:
        return e.strerror + (f": {e.filename}" if e.filename else "")
    text = " ".join(str(e).split())  # one line
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def run(args) -> int:
    from ..model import load_model
    from ..transcribe.writers import get_writer, output_basename

    check_options(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    write_files = args.output_dir is not None or args.output_format is not None
    writer = writer_args = None
    if write_files:
        output_dir = prepare_output_dir(args.output_dir or ".")
        check_distinct_outputs(args.files, output_dir, output_basename)
        writer = get_writer(args.output_format or "all", output_dir)
        writer_args = {option: getattr(args, option) for option in WORD_OPTIONS}
    try:
        model = load_model(args.model, device=args.device, dtype=dtype(args), download_root=args.model_dir)
    except (OSError, ValueError, RuntimeError) as e:
        raise CLIError(f"cannot load model {args.model}: {e}") from e
    options = transcribe_options(args, model)
    verify_for_model(model, options["temperature"], window_options(args, options["language"]))

    if args.batch_size:
        failed = _run_batched(args, model, options, writer, writer_args)
    else:
        failed = _run_each(args, model, options, writer, writer_args)
    return 1 if failed else 0


def _finish(args, path, result, writer, writer_args, printed: bool) -> None:
    """A file's outputs: its transcript files (written whole), or its text on stdout."""
    if writer is not None:
        with interrupt_after():  # Ctrl-C: this file's outputs are written whole first
            writer(result, path, **writer_args)
    elif not printed:
        if len(args.files) > 1:
            print(f"==> {path} <==")
        print(result.text.strip(), flush=True)


def _fail(path, e: BaseException) -> None:
    import tqdm  # its write() keeps the line apart from a progress bar being drawn

    tqdm.tqdm.write(f"kvwhisper: error: {path}: {_cause(e)}", file=sys.stderr)
    sys.stderr.flush()


def _run_each(args, model, options, writer, writer_args) -> int:
    """The files one after the other, each window decoded alone; returns the number that failed."""
    from ..transcribe import transcribe

    failed = 0
    for path in args.files:
        if len(args.files) > 1 and args.verbose:
            print(f"==> {path} <==", flush=True)
        try:
            with audio_warnings_as_lines():
                result = transcribe(model, path, **options)
            _finish(args, path, result, writer, writer_args, printed=bool(args.verbose))
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one bad file must not stop the others
            _fail(path, e)
            failed += 1
    return failed


def _run_batched(args, model, options, writer, writer_args) -> int:
    """The files' windows decoded together (--batch-size); each file's outputs are written when it finishes,
    its segments printed then (--verbose True); returns the number of files that failed."""
    from ..transcribe import transcribe_iter
    from ..transcribe.batched import transcribe_split
    from ..transcribe.writers import format_timestamp, make_safe

    verbose = options.pop("verbose")
    if args.split:

        def results():
            for index, path in enumerate(args.files):
                try:
                    yield index, transcribe_split(model, path, batch_size=args.batch_size, **options)
                except (KeyboardInterrupt, MemoryError):
                    raise
                except Exception as e:
                    yield index, e

        stream = results()
    else:
        progress = None if verbose else False  # False: the progress bar of audio seconds
        stream = transcribe_iter(model, args.files, batch_size=args.batch_size, verbose=progress, **options)
    failed = 0
    with audio_warnings_as_lines():
        for index, result in stream:
            path = args.files[index]
            if isinstance(result, Exception):
                _fail(path, result)
                failed += 1
                continue
            if verbose:
                if len(args.files) > 1:
                    print(f"==> {path} <==")
                for s in result.segments:
                    print(make_safe(f"[{format_timestamp(s.start)} --> {format_timestamp(s.end)}] {s.text}"))
                sys.stdout.flush()
            _finish(args, path, result, writer, writer_args, printed=bool(verbose))
    return failed
