"""openai-whisper's ``whisper.utils`` names: the option-value parsers here, the rest re-exported from the
modules that hold them."""

import argparse

from .audio import exact_div
from .decoding.options import compression_ratio
from .transcribe.writers import (
    ResultWriter,
    SubtitlesWriter,
    WriteJSON,
    WriteSRT,
    WriteTSV,
    WriteTXT,
    WriteVTT,
    format_timestamp,
    get_end,
    get_start,
    get_writer,
    make_safe,
    system_encoding,
)


class BoolArgumentError(argparse.ArgumentTypeError, ValueError):
    """Not True or False: argparse prints the message; other callers catch a ValueError (as openai-whisper's)."""


def str2bool(string: str) -> bool:
    """The words "True" / "False" as a bool (an option type; also whisper.utils.str2bool)."""
    values = {"True": True, "False": False}
    if string not in values:
        raise BoolArgumentError(f"expected True or False, got {string!r}")
    return values[string]


def optional_int(string: str) -> int | None:
    """An int, or None for the word "None"."""
    return None if string == "None" else int(string)


def optional_float(string: str) -> float | None:
    """A float, or None for the word "None"."""
    return None if string == "None" else float(string)


__all__ = [
    "ResultWriter",
    "SubtitlesWriter",
    "WriteJSON",
    "WriteSRT",
    "WriteTSV",
    "WriteTXT",
    "WriteVTT",
    "compression_ratio",
    "exact_div",
    "format_timestamp",
    "get_end",
    "get_start",
    "get_writer",
    "make_safe",
    "optional_float",
    "optional_int",
    "str2bool",
    "system_encoding",
]
