"""The `kvwhisper` command. Each subcommand lives in its own module with `add_parser(subparsers)` and `run(args)`.

Errors a user can cause (a bad file, a bad option) print one line `kvwhisper: error: ...` and exit non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module in this package
COMMANDS = {
    "transcribe": "transcribe",
    "trace": "trace",
    "bench": "bench",
    "convert": "convert",
    "mel": "mel",
}


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvwhisper", description="Whisper speech recognition with a visible KV cache"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{module}":
                raise
            continue  # a subcommand not built yet
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("kvwhisper: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, OSError, RuntimeError) as e:
        print(f"kvwhisper: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
