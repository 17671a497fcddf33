"""Transcript writers: txt, srt, vtt, tsv, json (and "all"), byte-for-byte like openai-whisper's ``whisper.utils``.

A writer takes a result (a ``TranscriptionResult`` or the reference's result dict) and the audio path, and
writes ``<output_dir>/<audio basename without extension>.<ext>`` in UTF-8::

    writer = get_writer("srt", "out")
    writer(result, "talk.mp3", max_line_width=42, max_line_count=2, highlight_words=False)

Subtitle options (srt / vtt; they need word timestamps in the result, except ``max_words_per_line``'s default):
``max_line_width`` characters per line, ``max_line_count`` lines per subtitle (with ``max_line_width``: breaks
subtitles at long pauses too), ``highlight_words`` (underline each word as it is spoken), ``max_words_per_line``.

Every file is written atomically: to a hidden temporary name in the same folder (``.<name>.<random>.tmp``),
flushed to disk (``fsync``), then renamed over the final name. A write that fails (a full disk) or is
interrupted (Ctrl-C, an exception) leaves the previous file, or none, never a partial one; only a process
killed outright (SIGKILL, power loss) can leave a ``.*.tmp`` file behind, never a partial output. Standard
input (``"-"``) is written as ``stdin.<ext>``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

FORMATS = ("txt", "vtt", "srt", "tsv", "json")

system_encoding = sys.getdefaultencoding()  # what make_safe encodes to


def make_safe(string: str) -> str:
    """``string`` with characters the system encoding cannot represent replaced by '?'."""
    if system_encoding == "utf-8":
        return string
    return string.encode(system_encoding, errors="replace").decode(system_encoding)


def format_timestamp(seconds: float, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    """``[HH:]MM:SS.mmm`` of a non-negative time in seconds (hours shown when non-zero or asked for)."""
    if seconds < 0:
        raise ValueError(f"non-negative timestamp expected, got {seconds}")
    milliseconds = round(seconds * 1000.0)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    secs, milliseconds = divmod(milliseconds, 1_000)
    hours_marker = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{hours_marker}{minutes:02d}:{secs:02d}{decimal_marker}{milliseconds:03d}"


def as_dict(result: Any) -> dict:
    """The result dict of a ``TranscriptionResult`` (anything with ``to_dict``) or of a dict as it is."""
    return result.to_dict() if hasattr(result, "to_dict") else result


def get_start(segments: list[dict]) -> float | None:
    """Start of the first word, else of the first segment (None without segments)."""
    return next(
        (w["start"] for s in segments for w in s["words"]), segments[0]["start"] if segments else None
    )


def get_end(segments: list[dict]) -> float | None:
    """End of the last word, else of the last segment (None without segments)."""
    return next(
        (w["end"] for s in reversed(segments) for w in reversed(s["words"])),
        segments[-1]["end"] if segments else None,
    )


def output_basename(audio_path: str | os.PathLike[str]) -> str:
    """The name an input's outputs get, without extension: its base name less its extension ("-": stdin)."""
    path = os.fspath(audio_path)
    if path == "-":
        return "stdin"
    return os.path.splitext(os.path.basename(path))[0]


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[TextIO]:
    """A UTF-8 text file that appears at ``path`` only complete: written to a temporary file in the same
    folder, flushed and fsync'ed, then renamed over ``path``. On any exception (KeyboardInterrupt too) the
    temporary file is removed and ``path`` is left as it was. Errors name ``path``."""
    path = os.fspath(path)
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
    except OSError as e:
        raise type(e)(e.errno, e.strerror, path) from e
    try:
        with open(fd, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None and e.filename != path:
            raise type(e)(e.errno, e.strerror, path) from e
        raise
    _fsync_folder(folder or ".")


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (where the system allows opening a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ResultWriter:
    """Writes one format to ``<output_dir>/<audio basename>.<extension>``."""

    extension: str

    def __init__(self, output_dir: str | os.PathLike[str]):
        self.output_dir = os.fspath(output_dir)

    def output_path(self, audio_path: str | os.PathLike[str]) -> str:
        return os.path.join(self.output_dir, output_basename(audio_path) + "." + self.extension)

    def __call__(
        self, result: Any, audio_path: str | os.PathLike[str], options: dict | None = None, **kwargs
    ) -> str:
        """Write ``result`` for ``audio_path`` (atomically: the old file or the whole new one); returns the
        path written."""
        path = self.output_path(audio_path)
        with atomic_open(path) as f:
            self.write_result(as_dict(result), file=f, options=options, **kwargs)
        return path

    def write_result(self, result: dict, file: TextIO, options: dict | None = None, **kwargs) -> None:
        raise NotImplementedError


class WriteTXT(ResultWriter):
    extension = "txt"

    def write_result(self, result: dict, file: TextIO, options: dict | None = None, **kwargs) -> None:
        for segment in result["segments"]:
            print(segment["text"].strip(), file=file, flush=True)


class SubtitlesWriter(ResultWriter):
    always_include_hours: bool
    decimal_marker: str

    def format_timestamp(self, seconds: float) -> str:
        return format_timestamp(seconds, self.always_include_hours, self.decimal_marker)

    def iterate_result(
        self,
        result: dict,
        options: dict | None = None,
        *,
        max_line_width: int | None = None,
        max_line_count: int | None = None,
        highlight_words: bool = False,
        max_words_per_line: int | None = None,
    ) -> Iterator[tuple[str, str, str]]:
        """(start, end, text) of each subtitle cue."""
        options = options or {}
        max_line_width = max_line_width or options.get("max_line_width")
        max_line_count = max_line_count or options.get("max_line_count")
        highlight_words = highlight_words or options.get("highlight_words", False)
        max_words_per_line = max_words_per_line or options.get("max_words_per_line")
        segments = result["segments"]

        if not (len(segments) > 0 and "words" in segments[0]):  # no word timestamps: one cue per segment
            for segment in segments:
                text = segment["text"].strip().replace("-->", "->")
                yield self.format_timestamp(segment["start"]), self.format_timestamp(segment["end"]), text
            return

        for subtitle in _subtitles(segments, max_line_width, max_line_count, max_words_per_line):
            start = self.format_timestamp(subtitle[0]["start"])
            end = self.format_timestamp(subtitle[-1]["end"])
            text = "".join(word["word"] for word in subtitle)
            if highlight_words:
                yield from self._highlighted(subtitle, start, text)
            else:
                yield start, end, text

    def _highlighted(
        self, subtitle: list[dict], subtitle_start: str, text: str
    ) -> Iterator[tuple[str, str, str]]:
        """One cue per word with that word underlined, and the plain text over the gaps between words."""
        last = subtitle_start
        all_words = [timing["word"] for timing in subtitle]
        for i, this_word in enumerate(subtitle):
            start = self.format_timestamp(this_word["start"])
            end = self.format_timestamp(this_word["end"])
            if last != start:
                yield last, start, text
            underlined = (
                re.sub(r"^(\s*)(.*)$", r"\1<u>\2</u>", w) if j == i else w for j, w in enumerate(all_words)
            )
            yield start, end, "".join(underlined)
            last = end


def _subtitles(
    segments: list[dict],
    max_line_width: int | None,
    max_line_count: int | None,
    max_words_per_line: int | None,
) -> Iterator[list[dict]]:
    """Group the words into subtitles (lists of word dicts; a line break is a "\\n" prefix on a word).

    Without both a line width and a line count, each segment starts a new subtitle; with both, subtitles
    break after ``max_line_count`` lines or at a pause over 3 s.
    """
    preserve_segments = max_line_count is None or max_line_width is None
    max_line_width = max_line_width or 1000
    max_words_per_line = max_words_per_line or 1000
    line_len = 0
    line_count = 1
    subtitle: list[dict] = []
    last: float = get_start(segments) or 0.0
    for segment in segments:
        chunk_index = 0
        words_count = max_words_per_line
        while chunk_index < len(segment["words"]):
            remaining_words = len(segment["words"]) - chunk_index
            if max_words_per_line > remaining_words:
                words_count = remaining_words
            for i, original_timing in enumerate(segment["words"][chunk_index : chunk_index + words_count]):
                timing = original_timing.copy()
                long_pause = not preserve_segments and timing["start"] - last > 3.0
                has_room = line_len + len(timing["word"]) <= max_line_width
                seg_break = i == 0 and len(subtitle) > 0 and preserve_segments
                if line_len > 0 and has_room and not long_pause and not seg_break:
                    line_len += len(timing["word"])  # line continuation
                else:
                    timing["word"] = timing["word"].strip()  # new line
                    if (
                        len(subtitle) > 0
                        and max_line_count is not None
                        and (long_pause or line_count >= max_line_count)
                        or seg_break
                    ):
                        yield subtitle  # subtitle break
                        subtitle = []
                        line_count = 1
                    elif line_len > 0:
                        line_count += 1  # line break
                        timing["word"] = "\n" + timing["word"]
                    line_len = len(timing["word"].strip())
                subtitle.append(timing)
                last = timing["start"]
            chunk_index += max_words_per_line
    if len(subtitle) > 0:
        yield subtitle


class WriteVTT(SubtitlesWriter):
    extension = "vtt"
    always_include_hours = False
    decimal_marker = "."

    def write_result(self, result: dict, file: TextIO, options: dict | None = None, **kwargs) -> None:
        print("WEBVTT\n", file=file)
        for start, end, text in self.iterate_result(result, options, **kwargs):
            print(f"{start} --> {end}\n{text}\n", file=file, flush=True)


class WriteSRT(SubtitlesWriter):
    extension = "srt"
    always_include_hours = True
    decimal_marker = ","

    def write_result(self, result: dict, file: TextIO, options: dict | None = None, **kwargs) -> None:
        for i, (start, end, text) in enumerate(self.iterate_result(result, options, **kwargs), start=1):
            print(f"{i}\n{start} --> {end}\n{text}\n", file=file, flush=True)


class WriteTSV(ResultWriter):
    """``start<TAB>end<TAB>text`` per segment, times in integer milliseconds (no locale decimal marks)."""

    extension = "tsv"

    def write_result(self, result: dict, file: TextIO, options: dict | None = None, **kwargs) -> None:
        print("start", "end", "text", sep="\t", file=file)
        for segment in result["segments"]:
            print(round(1000 * segment["start"]), file=file, end="\t")
            print(round(1000 * segment["end"]), file=file, end="\t")
            print(segment["text"].strip().replace("\t", " "), file=file, flush=True)


class WriteJSON(ResultWriter):
    extension = "json"

    def write_result(self, result: dict, file: TextIO, options: dict | None = None, **kwargs) -> None:
        json.dump(result, file)


WRITERS: dict[str, type[ResultWriter]] = {
    "txt": WriteTXT,
    "vtt": WriteVTT,
    "srt": WriteSRT,
    "tsv": WriteTSV,
    "json": WriteJSON,
}


def get_writer(output_format: str, output_dir: str | os.PathLike[str]) -> Callable[..., Any]:
    """A writer for one of FORMATS, or for "all" of them (then it returns the list of paths written)."""
    if output_format == "all":
        all_writers = [writer(output_dir) for writer in WRITERS.values()]

        def write_all(result: Any, audio_path: str | os.PathLike[str], options: dict | None = None, **kwargs):
            return [writer(result, audio_path, options, **kwargs) for writer in all_writers]

        return write_all
    if output_format not in WRITERS:
        raise ValueError(f"unknown output format {output_format!r}: expected one of {(*FORMATS, 'all')}")
    return WRITERS[output_format](output_dir)
