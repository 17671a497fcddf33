"""The `kvwhisper` command. Each subcommand lives in its own module with `add_parser(subparsers)` and `run(args)`.

Errors a user can cause print one line `kvwhisper: error: ...`, never a traceback (`--debug` shows it): a bad
option exits with status 2 before any model is loaded or file read (argparse's convention), a file that
cannot be done with status 1. Warnings are one line `kvwhisper: warning: ...`. `kvwhisper FILE...` is
`kvwhisper transcribe FILE...`, as `whisper FILE...` is for the reference.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import warnings

# subcommand -> module in this package
COMMANDS = {
    "transcribe": "transcribe",
    "trace": "trace",
    "bench": "bench",
    "convert": "convert",
    "mel": "mel",
    "vad": "vad",
    "corpus": "corpus",
}
TOP_LEVEL_FLAGS = ("-h", "--help", "--version")


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""

    status = 1


class UsageError(CLIError):
    """A bad option or argument, found before any work: printed as one line, exit status 2."""

    status = 2


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, ``kvwhisper: error: --beam-size: invalid int value: 'x'``."""

    def error(self, message: str):
        message = re.sub(r"^argument ([^:]+): ", r"\1: ", " ".join(message.split()))
        self.exit(2, f"kvwhisper: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = Parser(prog="kvwhisper", description="Whisper speech recognition with a visible KV cache")
    parser.add_argument("--version", action="version", version=f"kvwhisper {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{module}":
                raise
            continue  # a subcommand not built yet
        mod.add_parser(sub)
        sub.choices[name].add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error"
        )
    return parser


def shorthand(argv: list[str]) -> list[str]:
    """`kvwhisper FILE... [options]` -> `kvwhisper transcribe FILE... [options]`."""
    rest = [a for a in argv if a != "--debug"]
    if not rest or rest[0] in COMMANDS or rest[0] in TOP_LEVEL_FLAGS:
        return argv
    first = rest[0]
    if not first.startswith("-") and first != "-" and not os.path.exists(first):
        names = ", ".join(COMMANDS)
        raise UsageError(f"{first!r} is neither a command ({names}) nor an existing file")
    return ["transcribe", *argv]


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"kvwhisper: warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = shorthand(argv)
    except UsageError as e:
        print(f"kvwhisper: error: {e}", file=sys.stderr)
        return e.status
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _warning_line
        try:
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            print("kvwhisper: interrupted", file=sys.stderr)
            return 130
        except CLIError as e:
            if debug:
                raise
            print(f"kvwhisper: error: {e}", file=sys.stderr)
            return e.status
        except (ValueError, OSError, RuntimeError) as e:
            if debug:
                raise
            print(f"kvwhisper: error: {' '.join(str(e).split())}", file=sys.stderr)
            return 1
        except Exception as e:  # a bug: still one line; --debug shows where
            if debug:
                raise
            text = " ".join(str(e).split())
            print(
                f"kvwhisper: error: {type(e).__name__}: {text} (--debug shows the traceback)", file=sys.stderr
            )
            return 1


if __name__ == "__main__":
    sys.exit(main())
