"""Guards against hallucinated segments: the reference's ``hallucination_silence_threshold`` and our ``RepeatGuard``.

- ``skip_hallucinations`` (with word timestamps and ``hallucination_silence_threshold``): the reference's
  skipping of silences around segments whose words look hallucinated (very short, very long or improbable).
- ``RepeatGuard`` (``repeat_no_speech_threshold``, our addition, not in the reference): a segment whose text
  repeats the previous segment's word for word is dropped when its window was doubtful (no-speech probability
  above the threshold). This is what keeps a hum, music or animal calls from coming out as " Mmm! Mmm! Mmm!"
  across windows, which no check of the reference catches (each window is short and probable on its own).
  ``repeat_no_speech_threshold=None`` turns it off and gives the reference's output exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..audio import FRAMES_PER_SECOND
from .segments import Draft, Window
from .writers import get_end

PUNCTUATION = "\"'“¿([{-\"'.。,，!！?？:：”)]}、"  # words that do not count in hallucination scores

# ---------------------------------------------------------------------------------------------------------
# hallucination_silence_threshold


def word_anomaly_score(word: dict) -> float:
    """How unlike a real word: improbable, very short or very long."""
    probability = word.get("probability", 0.0)
    duration = word["end"] - word["start"]
    score = 0.0
    if probability < 0.15:
        score += 1.0
    if duration < 0.133:
        score += (0.133 - duration) * 15
    if duration > 2.0:
        score += duration - 2.0
    return score


def is_segment_anomaly(segment: Draft | None) -> bool:
    if segment is None or not segment.words:
        return False
    words = [w for w in segment.words if w["word"] not in PUNCTUATION][:8]
    score = sum(word_anomaly_score(w) for w in words)
    return score >= 3 or score + 0.01 >= len(words)


def _next_words_segment(segments: Sequence[Draft]) -> Draft | None:
    return next((s for s in segments if s.words), None)


def skip_hallucinations(
    segments: list[Draft],
    window: Window,
    seek: int,
    *,
    threshold: float,
    single_timestamp_ending: bool,
    last_speech_timestamp: float,
    content_duration: float,
    content_frames: int,
) -> tuple[int, list[Draft], bool]:
    """The reference's hallucination_silence_threshold logic: (new seek, kept segments, redo).

    redo=True: the window's first words look hallucinated after a long silence; drop the window and decode
    again from after the silence. Otherwise segments from an anomalous one surrounded by silence (or by
    more anomalies) onwards are dropped and the seek moves to it.
    """
    time_offset = window.time_offset
    if not single_timestamp_ending:
        last_word_end = get_end([{"words": s.words or [], "end": s.end} for s in segments])
        if last_word_end is not None and last_word_end > time_offset:
            remaining_duration = window.end_time - last_word_end
            if remaining_duration > threshold:
                seek = round(last_word_end * FRAMES_PER_SECOND)
            else:
                seek = window.seek + window.segment_size

    # if the first segment might be a hallucination, skip the leading silence
    first_segment = _next_words_segment(segments)
    if first_segment is not None and is_segment_anomaly(first_segment):
        gap = first_segment.start - time_offset
        if gap > threshold:
            return window.seek + round(gap * FRAMES_PER_SECOND), segments, True

    # skip silence before any possible hallucination surrounded by silence or more hallucinations
    hal_last_end = last_speech_timestamp
    for si, segment in enumerate(segments):
        if not segment.words:
            continue
        if is_segment_anomaly(segment):
            next_segment = _next_words_segment(segments[si + 1 :])
            hal_next_start = (
                next_segment.words[0]["start"]
                if next_segment is not None
                else (time_offset + window.duration)
            )
            silence_before = (
                segment.start - hal_last_end > threshold
                or segment.start < threshold
                or segment.start - time_offset < 2.0
            )
            silence_after = (
                hal_next_start - segment.end > threshold
                or is_segment_anomaly(next_segment)
                or window.end_time - segment.end < 2.0
            )
            if silence_before and silence_after:
                seek = round(max(time_offset + 1, segment.start) * FRAMES_PER_SECOND)
                if content_duration - segment.end < threshold:
                    seek = content_frames
                return seek, segments[:si], False
        hal_last_end = segment.end
    return seek, segments, False


# ---------------------------------------------------------------------------------------------------------
# repeated segments


@dataclass
class RepeatGuard:
    """Drops a segment that repeats the previous segment's text when the model doubted there was speech.

    Hallucinations on non-speech (a hum, music, whale calls) repeat one short text from segment to segment
    and window to window; each window is short and probable on its own, so neither the compression-ratio
    check nor the reference's silence rule (no-speech probability above 0.6 *and* a low log-probability)
    catches them. Real speech rarely repeats a whole segment word for word: over the 49 speech files of
    ../shared/data/speech (126 segments with tiny.en) no segment repeats its predecessor. The no-speech
    condition is a weak second filter only: with tiny.en it is 0.11 at the median and 0.55 at the 90th
    percentile on those speech windows, 0.3-0.66 on the whale calls.
    """

    no_speech_threshold: float | None = 0.2
    last_text: str = ""  # comparable_text of the last kept segment that has words
    dropped: list[tuple[float, float, str]] = field(default_factory=list)  # (start, end, text) dropped

    def keep(self, draft: Draft) -> bool:
        """Whether the segment stays (the segments are given in order, each once)."""
        text = comparable_text(draft.text)
        if (
            self.no_speech_threshold is not None
            and text
            and text == self.last_text
            and draft.result.no_speech_prob > self.no_speech_threshold
        ):
            self.dropped.append((float(draft.start), float(draft.end), draft.text))
            return False
        if text:
            self.last_text = text
        return True


def comparable_text(text: str) -> str:
    """Segment text for the repeat check: words only, lower case."""
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())
