"""A window's segments: the typed results, cutting a window's tokens at timestamps, and the editable drafts.

- ``Segment`` / ``TranscriptionResult``: what ``transcribe()`` returns (``to_dict()`` is the reference's dict).
- ``cut_window``: cut a window's tokens into segments at consecutive timestamp tokens and say how far to
  seek: to the window end after a single trailing timestamp, else to the last complete timestamp pair.
- ``Draft``: a segment of the current window while word timestamps and the hallucination guards may edit it;
  ``Window``: where the window lies in the audio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..audio import HOP_LENGTH, N_FRAMES, SAMPLE_RATE
from ..timing import Word, words_from_dicts

if TYPE_CHECKING:
    from ..decoding import DecodingResult

# ---------------------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class Segment:
    """A stretch of transcript cut at timestamp tokens. Times are seconds from the start of the audio."""

    id: int
    seek: int  # mel frame where the window that produced it starts
    start: float
    end: float
    text: str
    tokens: tuple[int, ...]  # text and timestamp tokens
    temperature: float  # of the decode that produced it
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: tuple[Word, ...] | None = (
        None  # with word_timestamps (or () for a cleared segment, as the reference)
    )

    def to_dict(self) -> dict:
        d = {
            "id": self.id,
            "seek": self.seek,
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "tokens": list(self.tokens),
            "temperature": self.temperature,
            "avg_logprob": self.avg_logprob,
            "compression_ratio": self.compression_ratio,
            "no_speech_prob": self.no_speech_prob,
        }
        if self.words is not None:
            d["words"] = [w.to_dict() for w in self.words]
        return d


@dataclass(frozen=True)
class TranscriptionResult:
    """The transcript, its segments, and the language (given, detected, or "en" for English-only models)."""

    text: str
    segments: tuple[Segment, ...]
    language: str

    def to_dict(self) -> dict:
        """The reference's result dict: ``{"text", "segments": [...], "language"}``."""
        return {
            "text": self.text,
            "segments": [s.to_dict() for s in self.segments],
            "language": self.language,
        }

    def __getitem__(self, key: str) -> Any:
        """``result["text"]`` etc., for code written against the reference's dict."""
        if key not in ("text", "segments", "language"):
            raise KeyError(key)
        return self.to_dict()[key] if key == "segments" else getattr(self, key)


# ---------------------------------------------------------------------------------------------------------
# segments of a window


@dataclass(frozen=True)
class Piece:
    """A segment of a window before it is placed in time: offsets in seconds from the window start."""

    start: float
    end: float
    tokens: list[int]


@dataclass(frozen=True)
class WindowCut:
    pieces: list[Piece]
    advance: int  # mel frames to move the seek by
    single_timestamp_ending: bool  # the window ended on one timestamp: nothing is left unfinished


def cut_window(
    tokens: Sequence[int],
    timestamp_begin: int,
    segment_size: int,
    input_stride: int = 2,
    time_precision: float = 0.02,
) -> WindowCut:
    """Cut a window's sampled tokens into segments at each pair of consecutive timestamp tokens.

    - with pairs: one piece per ``<|t0|> text <|t1|>`` run; after a single trailing timestamp the whole window
      is consumed, otherwise the unfinished tail is dropped and the seek moves to the last timestamp;
    - without pairs: one piece for the whole window, ending at the last timestamp when there is one, and
      the whole window is consumed.
    """
    tokens = list(tokens)
    is_ts = [t >= timestamp_begin for t in tokens]
    single_timestamp_ending = is_ts[-2:] == [False, True]
    consecutive = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
    if consecutive:
        slices = consecutive + ([len(tokens)] if single_timestamp_ending else [])
        pieces, last_slice = [], 0
        for current in slices:
            sliced = tokens[last_slice:current]
            start_pos, end_pos = sliced[0] - timestamp_begin, sliced[-1] - timestamp_begin
            pieces.append(Piece(start_pos * time_precision, end_pos * time_precision, sliced))
            last_slice = current
        if single_timestamp_ending:
            advance = segment_size
        else:
            advance = (tokens[last_slice - 1] - timestamp_begin) * input_stride
        return WindowCut(pieces, advance, single_timestamp_ending)

    duration = segment_size * HOP_LENGTH / SAMPLE_RATE
    timestamps = [t for t, ts in zip(tokens, is_ts) if ts]
    if timestamps and timestamps[-1] != timestamp_begin:  # no pair, but a timestamp: the text ends there
        duration = (timestamps[-1] - timestamp_begin) * time_precision
    return WindowCut([Piece(0.0, duration, tokens)], segment_size, single_timestamp_ending)


@dataclass
class Draft:
    """A segment of the current window while word timestamps and the hallucination checks may edit it."""

    seek: int
    start: float
    end: float
    tokens: list[int]
    text: str
    result: DecodingResult
    words: list[dict] | None = None

    def clear(self) -> None:
        self.text, self.tokens, self.words = "", [], []

    def freeze(self, id: int) -> Segment:
        r = self.result
        words = None if self.words is None else words_from_dicts(self.words)
        return Segment(
            id,
            self.seek,
            float(self.start),
            float(self.end),
            self.text,
            tuple(self.tokens),
            r.temperature,
            r.avg_logprob,
            r.compression_ratio,
            r.no_speech_prob,
            words,
        )


@dataclass(frozen=True)
class Window:
    """Where the current window lies (frames and seconds)."""

    seek: int
    segment_size: int  # content frames in the window

    @property
    def time_offset(self) -> float:
        return float(self.seek * HOP_LENGTH / SAMPLE_RATE)

    @property
    def end_time(self) -> float:
        return float((self.seek + N_FRAMES) * HOP_LENGTH / SAMPLE_RATE)

    @property
    def duration(self) -> float:
        return self.segment_size * HOP_LENGTH / SAMPLE_RATE
