"""openai-whisper's ``whisper.utils`` names, re-exported from the modules that hold them."""

from .audio import exact_div
from .cli.transcribe import optional_float, optional_int, str2bool
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
