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

from ..utils import error_cause, optional_int, str2bool
from . import CLIError
from .checks import WORD_OPTIONS, dtype, verify_for_model
from .options import (
    add_decoding_arguments,
    add_model_arguments,
    check_options,
    option,
    transcribe_options,
    window_options,
)
from .outputs import audio_warnings_as_lines, check_distinct_outputs, interrupt_after, prepare_output_dir

EPILOG = """\
output: without --output-dir/--output-format the transcript is printed to stdout; with either of them,
files named after each input are written instead (format "all" = txt, vtt, srt, tsv and json; directory
"." by default). Unlike openai-whisper, nothing is written to the current directory unless asked.
--verbose True (the default) prints each segment with its times as it is decoded; --verbose False shows a
progress bar on stderr and prints the final text."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "transcribe",
        help="transcribe audio or video files (any length)",
        description="Transcribe audio or video files of any length, 30 seconds at a time.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="audio or video file(s) to transcribe")
    add_model_arguments(p)
    option(p, "--output-dir", "-o", default=None, help="write transcript files to this directory")
    option(
        p,
        "--output-format",
        "-f",
        default=None,
        choices=("txt", "vtt", "srt", "tsv", "json", "all"),
        help="write transcript files of this format (default with --output-dir: all)",
    )
    option(
        p,
        "--verbose",
        type=str2bool,
        default=True,
        help="True: print segments as they are decoded (default); False: a progress bar, then the text",
    )

    add_decoding_arguments(p)
    option(
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
    p.set_defaults(func=run)


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

    tqdm.tqdm.write(f"kvwhisper: error: {path}: {error_cause(e)}", file=sys.stderr)
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
