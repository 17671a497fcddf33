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


class OptionValueError(argparse.ArgumentTypeError, ValueError):
    """An option value of the wrong form: argparse prints its message; other callers catch a ValueError (as
    with openai-whisper's parsers)."""


def str2bool(string: str) -> bool:
    """The words "True" / "False" as a bool."""
    values = {"True": True, "False": False}
    if string not in values:
        raise OptionValueError(f"expected True or False, got {string!r}")
    return values[string]


def optional_int(string: str) -> int | None:
    """An int, or None for the word "None"."""
    try:
        return None if string == "None" else int(string)
    except ValueError:
        raise OptionValueError(f"expected an integer or None, got {string!r}") from None


def optional_float(string: str) -> float | None:
    """A float, or None for the word "None"."""
    try:
        return None if string == "None" else float(string)
    except ValueError:
        raise OptionValueError(f"expected a number or None, got {string!r}") from None


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


def error_cause(e: BaseException) -> str:
    """Why something failed, on one line: an AudioError's cause, an OSError's reason and file, else the
    exception's type and message."""
    from .audio import AudioError

    if isinstance(e, AudioError):
        return e.cause
    if isinstance(e, OSError) and e.strerror:
        return e.strerror + (f": {e.filename}" if e.filename else "")
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
