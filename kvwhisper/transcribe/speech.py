"""Transcribing only the speech (`vad_filter=True`): the recording's speech regions joined, decoded as one
recording, and every time mapped back to the original timeline.

The regions (audio/vad.py, each already widened by `speech_pad_ms`) are cut out and joined end to end, as
faster-whisper's `vad_filter` does: the seek loop then fills its 30-second windows with speech only, so a
recording that is two-thirds silence costs about a third of its windows. `SpeechMap` remembers where each piece
came from; a time on the joined audio maps to the piece it falls in (a segment's or word's end that falls
exactly on a join belongs to the piece before it).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..audio import FRAMES_PER_SECOND, SAMPLE_RATE
from ..audio.features import as_waveform
from ..audio.vad import VadOptions, speech_samples
from .segments import Segment
from .writers import format_timestamp


@dataclass(frozen=True)
class SpeechMap:
    """Pieces of a recording joined end to end: `starts[i]` is where piece i begins in the original (samples),
    `joined[i]` where it begins in the joined audio; `lengths[i]` its samples; `total` the original's."""

    starts: tuple[int, ...]
    joined: tuple[int, ...]
    lengths: tuple[int, ...]
    total: int

    @classmethod
    def from_regions(cls, regions: list[tuple[int, int]], total: int) -> SpeechMap:
        starts, joined, lengths, at = [], [], [], 0
        for a, b in regions:
            starts.append(a)
            joined.append(at)
            lengths.append(b - a)
            at += b - a
        return cls(tuple(starts), tuple(joined), tuple(lengths), total)

    @property
    def kept(self) -> int:
        return sum(self.lengths)

    def gather(self, waveform: np.ndarray) -> np.ndarray:
        """The joined audio: the pieces of `waveform`, end to end."""
        if not self.starts:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([waveform[a : a + n] for a, n in zip(self.starts, self.lengths)])

    def time(self, seconds: float, end: bool = False) -> float:
        """A time on the joined audio, on the original timeline."""
        if not self.starts:
            return seconds
        sample = seconds * SAMPLE_RATE
        i = (bisect.bisect_left if end else bisect.bisect_right)(self.joined, sample) - 1
        i = min(max(i, 0), len(self.starts) - 1)
        offset = min(max(sample - self.joined[i], 0.0), self.lengths[i])  # past the last piece: its end
        return (self.starts[i] + offset) / SAMPLE_RATE

    def skipped(self) -> list[tuple[float, float]]:
        """The stretches left out, in seconds of the original."""
        gaps, at = [], 0
        for a, n in zip(self.starts, self.lengths):
            if a > at:
                gaps.append((at / SAMPLE_RATE, a / SAMPLE_RATE))
            at = a + n
        if at < self.total:
            gaps.append((at / SAMPLE_RATE, self.total / SAMPLE_RATE))
        return gaps

    def segment(self, segment: Segment) -> Segment:
        """A segment decoded from the joined audio, with its times (and its words') on the original timeline."""
        start = round(self.time(segment.start), 3)
        end = max(start, round(self.time(segment.end, end=True), 3))
        words = segment.words
        if words:
            mapped = []
            for w in words:
                w_start = round(self.time(w.start), 2)
                mapped.append(
                    replace(w, start=w_start, end=max(w_start, round(self.time(w.end, end=True), 2)))
                )
            words = tuple(mapped)
            # the edges follow the words: an end timestamp may run past a join that its words do not
            start, end = words[0].start, words[-1].end
        seek = round(self.time(segment.seek / FRAMES_PER_SECOND) * FRAMES_PER_SECOND)
        return replace(segment, seek=seek, start=start, end=end, words=words)


def vad_settings(
    vad_filter: bool, vad_parameters: VadOptions | dict | None, clip_timestamps: Any = "0"
) -> VadOptions | None:
    """The VAD's options when `vad_filter` is on (None when off); parameters are checked either way."""
    if not isinstance(vad_filter, bool):
        raise ValueError(f"vad_filter must be True or False, not {vad_filter!r}")
    options = VadOptions.from_parameters(vad_parameters)
    if not vad_filter:
        return None
    if clip_timestamps not in ("0", "0.0", [0], [0.0], (0,), (0.0,), None):
        raise ValueError("vad_filter and clip_timestamps both choose what is decoded: give one of them")
    return options


def speech_only(audio: Any, options: VadOptions, verbose: bool | None = None) -> tuple[np.ndarray, SpeechMap]:
    """The recording's speech joined end to end, and the map back to its timeline."""
    waveform = as_waveform(audio).detach().cpu().numpy()
    speech_map = SpeechMap.from_regions(speech_samples(waveform, options), len(waveform))
    if verbose:
        kept, total = speech_map.kept / SAMPLE_RATE, speech_map.total / SAMPLE_RATE
        print(f"VAD: {len(speech_map.starts)} speech region(s), {kept:.1f} s of {total:.1f} s kept")
        for a, b in speech_map.skipped():
            print(f"[skipped {format_timestamp(a)} --> {format_timestamp(b)}]")
    return speech_map.gather(waveform), speech_map
