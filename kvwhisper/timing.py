"""Word-level timestamps from cross-attention and dynamic time warping (the reference's ``whisper/timing.py``).

For the text tokens of one 30-second window:
1. decode ``<|startoftranscript|>... <|notimestamps|> text <|endoftext|>`` over the window's audio features and
   keep the pre-softmax cross-attention scores of the alignment heads (no hooks: the decoder returns them);
2. softmax over the window's real audio frames (``num_frames // 2`` encoder positions), standardize each head
   over the tokens, median-filter along time (width 7), average the heads;
3. DTW on the negated matrix: the path's jumps in the token index give each token's first audio position, and
   word boundaries (``Tokenizer.split_to_word_tokens``) turn those into word start / end times;
4. punctuation is merged into the neighbouring words, and the reference's heuristics for over-long words at
   sentence / segment boundaries and after pauses are applied (``add_word_timestamps``).

The DTW is numpy, vectorized over anti-diagonals (each cell depends only on the two previous anti-diagonals),
with the reference's tie-breaking and cost precision, so the path equals ``whisper.timing.dtw_cpu``.

The public functions take openai-whisper's arguments: ``find_alignment`` / ``add_word_timestamps`` take the
window's mel (or its encoder output, to skip a second encoder pass), and ``add_word_timestamps`` takes the
reference's segment dicts as well as segment objects.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .audio import HOP_LENGTH, SAMPLE_RATE, TOKENS_PER_SECOND
from .tokenizer import Tokenizer

if TYPE_CHECKING:
    from .model import Whisper

PREPEND_PUNCTUATIONS = "\"'“¿([{-"  # merged into the following word
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"  # merged into the preceding word
SENTENCE_END_MARKS = ".。!！?？"
MEDFILT_WIDTH = 7


@dataclass(frozen=True)
class Word:
    """One word of a segment: text (with its leading space and merged punctuation), times in seconds."""

    word: str
    start: float
    end: float
    probability: float  # mean probability of the word's tokens

    def to_dict(self) -> dict:
        return {"word": self.word, "start": self.start, "end": self.end, "probability": self.probability}


@dataclass
class WordTiming:
    """A word while it is being aligned (mutable: punctuation merging and the heuristics edit it)."""

    word: str
    tokens: list[int]
    start: float
    end: float
    probability: float


class TimedSegment(Protocol):
    """What ``add_word_timestamps`` reads and writes on a segment of the current window."""

    seek: int
    start: float
    end: float
    tokens: list[int]
    words: list[dict] | None


# ---------------------------------------------------------------------------------------------------------
# signal pieces


def median_filter(x: torch.Tensor, filter_width: int) -> torch.Tensor:
    """Median of a sliding window of odd ``filter_width`` along the last dimension, reflect-padded.

    Same as the reference's CPU path (sort-based, which is exact: a median is a selection).
    """
    if filter_width <= 0 or filter_width % 2 == 0:
        raise ValueError("filter_width should be an odd number")
    pad_width = filter_width // 2
    if x.shape[-1] <= pad_width:  # reflect padding needs the padding to be shorter than the input
        return x
    ndim = x.ndim
    if ndim <= 2:  # F.pad reflects 3-D and 4-D inputs only
        x = x[None, None, :]
    x = F.pad(x, (pad_width, pad_width, 0, 0), mode="reflect")
    result = x.unfold(-1, filter_width, 1).sort()[0][..., pad_width]
    if ndim <= 2:
        result = result[0, 0]
    return result


def dtw(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Minimum-cost monotonic path through the cost matrix ``x`` (N, M), a tensor on any device or an array:
    (2, L) int64, row indices then column indices (``dtw_cpu``; tensors on CUDA are copied to the CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.double().cpu().numpy()
    return dtw_cpu(x)


def dtw_cpu(x: np.ndarray) -> np.ndarray:
    """Minimum-cost monotonic path through the cost matrix ``x`` (N, M): (2, L), row then column indices.

    Cells are filled one anti-diagonal at a time (i + j = k): each needs only the diagonals k - 1 and k - 2.
    Ties are broken as in the reference (diagonal only when strictly smaller than both, then up, else left)
    and the cost table is float64 like the reference's numba-compiled ``dtw_cpu`` (whose ``float32 * inf``
    table is promoted to float64 by numba; its pure-Python ``py_func`` would keep float32), so the path is
    the one the reference computes.
    """
    x = np.asarray(x, dtype=np.float64)
    N, M = x.shape
    cost = np.full((N + 1, M + 1), np.inf)
    trace = np.full((N + 1, M + 1), -1, dtype=np.int8)
    cost[0, 0] = 0
    for k in range(2, N + M + 1):  # anti-diagonal i + j = k over cells 1 <= i <= N, 1 <= j <= M
        i = np.arange(max(1, k - M), min(N, k - 1) + 1)
        j = k - i
        c0 = cost[i - 1, j - 1]
        c1 = cost[i - 1, j]
        c2 = cost[i, j - 1]
        take0 = (c0 < c1) & (c0 < c2)
        take1 = ~take0 & (c1 < c0) & (c1 < c2)
        c = np.where(take0, c0, np.where(take1, c1, c2))
        cost[i, j] = x[i - 1, j - 1] + c
        trace[i, j] = np.where(take0, 0, np.where(take1, 1, 2))
    return backtrace(trace)


def backtrace(trace: np.ndarray) -> np.ndarray:
    """Walk the DTW trace back from the bottom-right corner: (2, L) int64, row indices then column indices."""
    trace = trace.copy()
    i, j = trace.shape[0] - 1, trace.shape[1] - 1
    trace[0, :] = 2
    trace[:, 0] = 1
    path = []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        t = trace[i, j]
        if t == 0:
            i, j = i - 1, j - 1
        elif t == 1:
            i -= 1
        elif t == 2:
            j -= 1
        else:
            raise ValueError(f"unexpected DTW trace value {t} at ({i}, {j})")
    return np.array(path[::-1], dtype=np.int64).reshape(-1, 2).T


# ---------------------------------------------------------------------------------------------------------
# alignment of one window's text


def alignment_matrix(
    qks: Sequence[torch.Tensor],
    heads: torch.Tensor,
    num_frames: int,
    medfilt_width: int = MEDFILT_WIDTH,
    qk_scale: float = 1.0,
) -> torch.Tensor:
    """(tokens, frames) text-to-audio affinity from the per-layer cross-attention scores of one sequence.

    qks: per layer (1, H, T, S) pre-softmax scores; heads: (n_layer, n_head) bool alignment heads.
    """
    weights = torch.stack([qks[layer][0, head] for layer, head in heads.nonzero().tolist()])  # (h, T, S)
    weights = weights[:, :, : max(1, num_frames // 2)].float()
    weights = (weights * qk_scale).softmax(dim=-1)
    std, mean = torch.std_mean(weights, dim=-2, keepdim=True, correction=0)
    weights = (weights - mean) / std
    weights = median_filter(weights, medfilt_width)
    return weights.mean(dim=0)


def _window_features(model: Whisper, mel: torch.Tensor) -> torch.Tensor:
    """(1, n_audio_ctx, n_audio_state): the encoder output of one window, from its mel (n_mels, 3000) or from
    that output itself, either one with or without a leading dimension of 1."""
    x = mel if mel.ndim == 3 else mel[None]
    if x.shape[-2:] == (model.dims.n_audio_ctx, model.dims.n_audio_state):
        return x
    return model.embed_audio(x)


@torch.no_grad()
def find_alignment(
    model: Whisper,
    tokenizer: Tokenizer,
    text_tokens: list[int],
    mel: torch.Tensor,
    num_frames: int,
    *,
    medfilt_width: int = MEDFILT_WIDTH,
    qk_scale: float = 1.0,
) -> list[WordTiming]:
    """Word timings (seconds from the window start) of ``text_tokens`` over one window.

    mel: the window's log-mel (n_mels, 3000), or its encoder output (n_audio_ctx, n_audio_state), either one
    optionally with a leading dimension of 1; num_frames: the window's mel frames that hold audio (the rest
    is padding).
    """
    if len(text_tokens) == 0:
        return []
    sot_len = len(tokenizer.sot_sequence)
    tokens = torch.tensor([*tokenizer.sot_sequence, tokenizer.no_timestamps, *text_tokens, tokenizer.eot])
    tokens = tokens.to(model.device)
    features = _window_features(model, mel)
    logits, qks = model.decoder_pass(tokens[None], features, want_qk=True)

    token_probs = logits[0, sot_len:, : tokenizer.eot].float().softmax(dim=-1)
    text_token_probs = token_probs[np.arange(len(text_tokens)), text_tokens].tolist()

    matrix = alignment_matrix(qks, model.alignment_heads, num_frames, medfilt_width, qk_scale)
    matrix = matrix[sot_len:-1]  # rows: <|notimestamps|> and the text tokens
    text_indices, time_indices = dtw(-matrix.double().cpu().numpy())

    words, word_tokens = tokenizer.split_to_word_tokens(text_tokens + [tokenizer.eot])
    if len(word_tokens) <= 1:  # only <|endoftext|>
        return []
    word_boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / TOKENS_PER_SECOND  # each token's first audio position, in seconds
    start_times = jump_times[word_boundaries[:-1]]
    end_times = jump_times[word_boundaries[1:]]
    probabilities = [
        np.mean(text_token_probs[i:j]) for i, j in zip(word_boundaries[:-1], word_boundaries[1:])
    ]
    return [
        WordTiming(word, tokens, start, end, probability)
        for word, tokens, start, end, probability in zip(
            words, word_tokens, start_times, end_times, probabilities
        )
    ]


def merge_punctuations(alignment: list[WordTiming], prepended: str, appended: str) -> None:
    """Merge punctuation words into their neighbours in place (the merged-away entries become empty)."""
    # prepended punctuation joins the following word (walking backwards, so runs chain)
    i, j = len(alignment) - 2, len(alignment) - 1
    while i >= 0:
        previous, following = alignment[i], alignment[j]
        if previous.word.startswith(" ") and previous.word.strip() in prepended:
            following.word = previous.word + following.word
            following.tokens = previous.tokens + following.tokens
            previous.word, previous.tokens = "", []
        else:
            j = i
        i -= 1
    # appended punctuation joins the preceding word
    i, j = 0, 1
    while j < len(alignment):
        previous, following = alignment[i], alignment[j]
        if not previous.word.endswith(" ") and following.word in appended:
            previous.word = previous.word + following.word
            previous.tokens = previous.tokens + following.tokens
            following.word, following.tokens = "", []
        else:
            i = j
        j += 1


# ---------------------------------------------------------------------------------------------------------
# word timestamps of a window's segments


@dataclass
class _WordClock:
    """The window-wide numbers the per-segment heuristics share."""

    median_duration: float
    max_duration: float
    last_speech_timestamp: float


def _cap_long_words_at_sentence_ends(alignment: list[WordTiming], max_duration: float) -> None:
    """Words next to sentence-end marks are at most ``max_duration`` long (a stand-in for real VAD)."""
    for i in range(1, len(alignment)):
        if alignment[i].end - alignment[i].start > max_duration:
            if alignment[i].word in SENTENCE_END_MARKS:
                alignment[i].end = alignment[i].start + max_duration
            elif alignment[i - 1].word in SENTENCE_END_MARKS:
                alignment[i].start = alignment[i].end - max_duration


def _fix_segment_edges(segment: TimedSegment, words: list[dict], clock: _WordClock) -> None:
    """The reference's heuristics for the first words after a pause and for segment edges (edits in place)."""
    median_duration, max_duration = clock.median_duration, clock.max_duration
    # the first and second word after a pause are at most twice the median word duration
    if words[0]["end"] - clock.last_speech_timestamp > median_duration * 4 and (
        words[0]["end"] - words[0]["start"] > max_duration
        or (len(words) > 1 and words[1]["end"] - words[0]["start"] > max_duration * 2)
    ):
        if len(words) > 1 and words[1]["end"] - words[1]["start"] > max_duration:
            boundary = max(words[1]["end"] / 2, words[1]["end"] - max_duration)
            words[0]["end"] = words[1]["start"] = boundary
        words[0]["start"] = max(0, words[0]["end"] - max_duration)

    # prefer the segment-level start timestamp if the first word is too long
    if segment.start < words[0]["end"] and segment.start - 0.5 > words[0]["start"]:
        words[0]["start"] = max(0, min(words[0]["end"] - median_duration, segment.start))
    else:
        segment.start = words[0]["start"]

    # prefer the segment-level end timestamp if the last word is too long
    if segment.end > words[-1]["start"] and segment.end + 0.5 < words[-1]["end"]:
        words[-1]["end"] = max(words[-1]["start"] + median_duration, segment.end)
    else:
        segment.end = words[-1]["end"]
    clock.last_speech_timestamp = segment.end


class _SegmentDict:
    """A segment dict (the reference's form) read and written through attributes, as ``TimedSegment``."""

    __slots__ = ("_segment",)

    def __init__(self, segment: dict):
        object.__setattr__(self, "_segment", segment)

    def __getattr__(self, name: str):
        try:
            return self._segment[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value) -> None:
        self._segment[name] = value


def add_word_timestamps(
    *,
    segments: list[TimedSegment] | list[dict],
    model: Whisper,
    tokenizer: Tokenizer,
    mel: torch.Tensor,
    num_frames: int,
    prepend_punctuations: str = PREPEND_PUNCTUATIONS,
    append_punctuations: str = APPEND_PUNCTUATIONS,
    last_speech_timestamp: float,
    **kwargs,
) -> None:
    """Set ``segment.words`` (dicts: word, start, end, probability) on the segments of one window.

    segments: objects with seek, start, end, tokens and words, or the reference's dicts with those keys.
    mel: the window's log-mel or its encoder output (see ``find_alignment``).
    Segment start / end may move to their first / last word (or the words to them), as in the reference.
    Word times are absolute seconds rounded to 10 ms.
    """
    if len(segments) == 0:
        return
    segments = [_SegmentDict(s) if isinstance(s, dict) else s for s in segments]
    text_tokens_per_segment = [[t for t in segment.tokens if t < tokenizer.eot] for segment in segments]
    text_tokens = list(itertools.chain.from_iterable(text_tokens_per_segment))
    alignment = find_alignment(model, tokenizer, text_tokens, mel, num_frames, **kwargs)

    word_durations = np.array([t.end - t.start for t in alignment])
    word_durations = word_durations[word_durations.nonzero()]
    median_duration = np.median(word_durations) if len(word_durations) > 0 else 0.0
    median_duration = min(0.7, float(median_duration))
    clock = _WordClock(median_duration, median_duration * 2, last_speech_timestamp)
    if len(word_durations) > 0:
        _cap_long_words_at_sentence_ends(alignment, clock.max_duration)
    merge_punctuations(alignment, prepend_punctuations, append_punctuations)

    time_offset = segments[0].seek * HOP_LENGTH / SAMPLE_RATE
    word_index = 0
    for segment, seg_text_tokens in zip(segments, text_tokens_per_segment):
        saved_tokens = 0
        words: list[dict] = []
        while word_index < len(alignment) and saved_tokens < len(seg_text_tokens):
            timing = alignment[word_index]
            if timing.word:
                words.append(
                    {
                        "word": timing.word,
                        "start": round(time_offset + timing.start, 2),  # numpy rounding, as the reference
                        "end": round(time_offset + timing.end, 2),
                        "probability": timing.probability,
                    }
                )
            saved_tokens += len(timing.tokens)
            word_index += 1
        if len(words) > 0:
            _fix_segment_edges(segment, words, clock)
        segment.words = words


def words_from_dicts(words: list[dict]) -> tuple[Word, ...]:
    """Frozen ``Word``s (plain Python floats) from the dicts ``add_word_timestamps`` builds."""
    return tuple(Word(w["word"], float(w["start"]), float(w["end"]), float(w["probability"])) for w in words)
