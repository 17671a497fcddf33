"""`kvwhisper corpus INPUT... --output-dir OUT`: a resumable job over many files (kvwhisper/corpus).

INPUT: files, folders (searched recursively for audio and video files) and manifests (.txt/.lst: a path per
line; .csv/.tsv/.jsonl: a `path` column). Each file's transcripts go to OUT under its path in its folder;
OUT/results.jsonl gets one row per file. A rerun does only what is not done. Each failed file prints one
`kvwhisper: error: FILE: cause` line and the job goes on; the last line counts done / skipped / failed, and
the exit status is 1 when any file of the job is in error (from this run or an earlier one).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

from ..utils import optional_int, str2bool
from . import CLIError, UsageError
from .checks import WORD_OPTIONS, check_count, dtype
from .options import add_decoding_arguments, add_model_arguments, check_options, job_options, option

EPILOG = """\
examples:
  kvwhisper corpus recordings/ --output-dir out --batch-size 8
  kvwhisper corpus manifest.csv -o out --engine ray --workers 4 --address 10.0.0.1:6379

The Ray engine (pip install "kvwhisper[ray]") runs --workers actors of --threads-per-worker CPUs, each
loading the model once; without --address it joins $RAY_ADDRESS when set, else starts a Ray cluster on
this machine for the job. On a cluster,
every node must see the inputs and OUT at the same paths (a shared file system) and have kvwhisper installed.
--seed defaults to 0 here, so that a file done again gets the same samples at fallback temperatures; the
outputs are byte-equal to `kvwhisper transcribe FILE --output-dir ... --seed 0` with the same options."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "corpus",
        help="transcribe many files as a resumable job (locally or on a Ray cluster)",
        description="Transcribe folders, file lists and files into an output folder, with a results table; "
        "a rerun skips what is done.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio/video files, folders or manifests")
    option(p, "--output-dir", "-o", required=True, help="folder of the transcripts and results.jsonl")
    option(
        p,
        "--output-format",
        "-f",
        default="all",
        choices=("txt", "vtt", "srt", "tsv", "json", "all"),
        help="transcript files to write (default: all)",
    )
    add_model_arguments(p)
    add_decoding_arguments(p)
    option(
        p, "--batch-size", type=optional_int, default=8, help="files decoded together per worker (default 8)"
    )
    p.add_argument(
        "--engine", choices=("local", "ray"), default="local", help="where files run (default: local)"
    )
    p.add_argument(
        "--workers", type=int, default=2, help="ray: actors, each loading the model once (default 2)"
    )
    option(p, "--threads-per-worker", type=int, default=1, help="ray: CPUs of each actor (default 1)")
    p.add_argument(
        "--address",
        default=None,
        help="ray: the cluster to join (default: $RAY_ADDRESS, else start one here)",
    )
    p.add_argument(
        "--verify", action="store_true", help="tell unchanged files by their hash, not size and mtime"
    )
    option(p, "--retry-errors", action="store_true", help="redo the files that failed in an earlier run")
    p.add_argument(
        "--progress",
        type=str2bool,
        default=None,
        metavar="{True,False}",
        help="a progress bar on stderr (default: when stderr is a terminal)",
    )
    p.set_defaults(func=run, split=False, seed=0)  # a file redone gets the same text, fallbacks too


def run(args) -> int:
    from ..corpus import InputError
    from ..corpus import run as run_job
    from .outputs import prepare_output_dir

    check_options(args)
    check_count("--batch-size", args.batch_size)
    check_count("--workers", args.workers)
    check_count("--threads-per-worker", args.threads_per_worker)
    if args.engine == "ray" and importlib.util.find_spec("ray") is None:
        raise UsageError("--engine ray: Ray is not installed (pip install 'kvwhisper[ray]')")
    output_dir = prepare_output_dir(args.output_dir)
    try:
        summary = run_job(
            args.inputs,
            output_dir,
            engine=args.engine,
            workers=args.workers,
            threads_per_worker=args.threads_per_worker,
            address=args.address,
            retry_errors=args.retry_errors,
            progress=args.progress,
            on_row=_report,
            model=args.model,
            device=args.device,
            dtype=dtype(args),
            download_root=args.model_dir,
            output_format=args.output_format,
            options=job_options(args),
            writer_options={o: getattr(args, o) for o in WORD_OPTIONS},
            batch_size=args.batch_size,
            threads=args.threads or 0,
            verify=args.verify,
        )
    except InputError as e:
        raise UsageError(str(e)) from None
    except RuntimeError as e:  # the engine or the output folder's lock
        raise CLIError(str(e)) from None
    print(f"kvwhisper: corpus: {summary.line(retry='--retry-errors')}", file=sys.stderr, flush=True)
    return 0 if summary.ok else 1


def _report(row: dict) -> None:
    import tqdm

    if row["status"] == "error":
        tqdm.tqdm.write(f"kvwhisper: error: {row['path']}: {row['error']}", file=sys.stderr)
