"""Long-form transcription: a seek loop over 30-second windows, with the reference's semantics.

``transcribe(model, audio, ...)`` follows openai-whisper's ``transcribe()`` (same options, defaults and
decisions, so ``result.to_dict()`` equals the reference's result dict on the same weights), split into pieces:

- ``MelWindows`` (kvwhisper.audio): the log-Mel spectrogram of the whole file plus 30 s of zeros, computed
  once, in chunks (bit-identical to one whole-file STFT, without its memory peak), cut into windows.
- ``fallback.decode_with_fallback`` + ``FallbackPolicy``: decode a window at each temperature in turn until the result
  is neither too repetitive (gzip compression ratio) nor too improbable (average log-probability), unless the
  window is judged silent; ``FallbackPolicy.is_silence`` is the no-speech skip.
- ``segments.cut_window``: cut a window's tokens into segments at consecutive timestamp tokens and say how far
  to seek: to the window end after a single trailing timestamp, else to the last complete timestamp pair;
  ``segments.Segment`` / ``TranscriptionResult``: the typed results.
- ``timing.add_word_timestamps`` (word_timestamps=True), then ``hallucination.skip_hallucinations``
  (hallucination_silence_threshold).
- ``hallucination.RepeatGuard`` (``repeat_no_speech_threshold``, our addition, not in the reference): a segment
  repeating the previous one word for word is dropped when its window was doubtful; None gives the reference's
  output exactly.
- ``SeekLoop`` (here): the state that runs from window to window (seek, prompt tokens, segments).

The seek always moves forward: a window that would not advance it (only possible with unusual models or
options) is consumed whole, clip ends are clamped to the audio, so every input terminates.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import tqdm

from ..audio import (
    FRAMES_PER_SECOND,
    HOP_LENGTH,
    N_FRAMES,
    SAMPLE_RATE,
    MelWindows,
    pad_or_trim,
)
from ..audio.vad import VadOptions
from ..decoding import DecodingOptions, DecodingResult, task_tokenizer
from ..timing import APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS, Word, add_word_timestamps
from ..tokenizer import LANGUAGES
from .checks import check_transcribe_options, clip_seconds
from .fallback import (
    DEFAULT_TEMPERATURES,
    FallbackPolicy,
    WindowRequest,
    decode_with_fallback,
    fallback_decodes,
    run_alone,
)
from .hallucination import RepeatGuard, skip_hallucinations
from .segments import Draft, Segment, TranscriptionResult, Window, WindowCut, cut_window
from .speech import SpeechMap, speech_only, vad_settings
from .writers import format_timestamp, get_end, make_safe

if TYPE_CHECKING:
    from ..model import Whisper
    from ..tokenizer import Tokenizer

__all__ = [
    "DEFAULT_TEMPERATURES",
    "FallbackPolicy",
    "Segment",
    "RepeatGuard",
    "SeekLoop",
    "TranscriptionResult",
    "WindowCut",
    "Word",
    "cut_window",
    "decode_with_fallback",
    "parse_clip_timestamps",
    "skip_hallucinations",
    "transcribe",
]


# ---------------------------------------------------------------------------------------------------------
# features


def parse_clip_timestamps(
    clip_timestamps: str | Sequence[float], content_frames: int
) -> list[tuple[int, int]]:
    """``"start,end,start,end,..."`` seconds (or a list) -> [(start_frame, end_frame)]; a missing last end is
    the end of the audio, ends past it are clamped to it."""
    points = [round(ts * FRAMES_PER_SECOND) for ts in clip_seconds(clip_timestamps)]
    if not points:
        points.append(0)
    if len(points) % 2 == 1:
        points.append(content_frames)
    return [(start, min(end, content_frames)) for start, end in zip(points[::2], points[1::2])]


# ---------------------------------------------------------------------------------------------------------
# the seek loop


@dataclass(frozen=True)
class WordOptions:
    prepend_punctuations: str = PREPEND_PUNCTUATIONS
    append_punctuations: str = APPEND_PUNCTUATIONS
    hallucination_silence_threshold: float | None = None


class SeekLoop:
    """Runs windows from seek to seek; keeps the prompt tokens and the finished segments."""

    def __init__(
        self,
        model: Whisper,
        windows: MelWindows,
        tokenizer: Tokenizer,
        options: DecodingOptions,
        policy: FallbackPolicy,
        *,
        verbose: bool | None = None,
        condition_on_previous_text: bool = True,
        initial_prompt: str | None = None,
        carry_initial_prompt: bool = False,
        word_options: WordOptions | None = None,
        repeat_guard: RepeatGuard | None = None,
        generator: torch.Generator | None = None,
        speech_map: SpeechMap | None = None,
    ):
        self.model, self.windows, self.tokenizer = model, windows, tokenizer
        self.speech_map = speech_map  # vad_filter: the windows hold the speech joined (times printed mapped)
        self.generator = generator  # samples (fallback temperatures) drawn from it; None: torch's global one
        self.repeat_guard = repeat_guard or RepeatGuard(None)
        self.options, self.policy, self.verbose = options, policy, verbose
        self.condition_on_previous_text = condition_on_previous_text
        self.carry_initial_prompt = carry_initial_prompt
        self.word_options = word_options  # None: no word timestamps
        self.content_frames = windows.content_frames
        self.content_duration = windows.duration
        self.input_stride = N_FRAMES // model.dims.n_audio_ctx  # mel frames per audio token: 2
        self.time_precision = self.input_stride * HOP_LENGTH / SAMPLE_RATE  # seconds per timestamp step: 0.02

        self.initial_prompt_tokens: list[int] = []
        if initial_prompt is not None:
            self.initial_prompt_tokens = tokenizer.encode(" " + initial_prompt.strip())
        self.all_tokens: list[int] = list(self.initial_prompt_tokens)
        self.remaining_prompt_length = model.dims.n_text_ctx // 2 - 1 - len(self.initial_prompt_tokens)
        self.prompt_reset_since = 0
        self.segments: list[Segment] = []
        self.last_speech_timestamp = 0.0

    # -- pieces ---------------------------------------------------------------------------------------------
    def prompt(self) -> list[int]:
        """The previous text fed after <|startofprev|> (with the initial prompt first when it is carried)."""
        if self.carry_initial_prompt:
            n_ignored = max(len(self.initial_prompt_tokens), self.prompt_reset_since)
            remaining = self.all_tokens[n_ignored:]
            remaining = remaining[-self.remaining_prompt_length :] if self.remaining_prompt_length > 0 else []
            return self.initial_prompt_tokens + remaining
        return self.all_tokens[self.prompt_reset_since :]

    def drafts(self, cut: WindowCut, window: Window, result: DecodingResult) -> list[Draft]:
        time_offset = window.time_offset
        drafts = []
        for piece in cut.pieces:
            text = self.tokenizer.decode([t for t in piece.tokens if t < self.tokenizer.eot])
            drafts.append(
                Draft(
                    window.seek,
                    time_offset + piece.start,
                    time_offset + piece.end,
                    piece.tokens,
                    text,
                    result,
                )
            )
        return drafts

    def add_words(
        self, drafts: list[Draft], window: Window, result: DecodingResult, cut: WindowCut, seek: int
    ) -> tuple[int, list[Draft], bool]:
        """Word timestamps on the window's segments; returns (seek, segments kept, redo the window)."""
        wo = self.word_options
        add_word_timestamps(
            segments=drafts,
            model=self.model,
            tokenizer=self.tokenizer,
            mel=result.audio_features,  # the encoder output is taken as it is
            num_frames=window.segment_size,
            prepend_punctuations=wo.prepend_punctuations,
            append_punctuations=wo.append_punctuations,
            last_speech_timestamp=self.last_speech_timestamp,
        )
        if not cut.single_timestamp_ending:  # seek to the end of the last word
            last_word_end = _drafts_end(drafts)
            if last_word_end is not None and last_word_end > window.time_offset:
                seek = round(last_word_end * FRAMES_PER_SECOND)
        redo = False
        if wo.hallucination_silence_threshold is not None:
            seek, drafts, redo = skip_hallucinations(
                drafts,
                window,
                seek,
                threshold=wo.hallucination_silence_threshold,
                single_timestamp_ending=cut.single_timestamp_ending,
                last_speech_timestamp=self.last_speech_timestamp,
                content_duration=self.content_duration,
                content_frames=self.content_frames,
            )
        if not redo:
            last_word_end = _drafts_end(drafts)
            if last_word_end is not None:
                self.last_speech_timestamp = last_word_end
        return seek, drafts, redo

    def commit(self, drafts: list[Draft], result: DecodingResult) -> None:
        """Drop repeats (RepeatGuard), print, clear empty segments, append them, and update the prompt."""
        kept = []
        for d in drafts:
            if self.repeat_guard.keep(d):
                kept.append(d)
            elif self.verbose:
                print(
                    make_safe(
                        f"[dropped: repeats the previous segment, no_speech_prob "
                        f"{result.no_speech_prob:.2f}] {d.text}"
                    )
                )
        drafts = kept
        if self.verbose:
            m = self.speech_map
            for d in drafts:
                start, end = (d.start, d.end) if m is None else (m.time(d.start), m.time(d.end, end=True))
                print(make_safe(f"[{format_timestamp(start)} --> {format_timestamp(end)}] {d.text}"))
        for d in drafts:  # an instantaneous or textless segment is kept, emptied
            if d.start == d.end or d.text.strip() == "":
                d.clear()
        for d in drafts:
            self.segments.append(d.freeze(len(self.segments)))
            self.all_tokens.extend(d.tokens)
        if not self.condition_on_previous_text or result.temperature > 0.5:
            self.prompt_reset_since = len(self.all_tokens)  # no prompt after a high-temperature decode

    # -- the loop -------------------------------------------------------------------------------------------
    def step(self, seek: int, clip_end: int) -> Generator[WindowRequest, DecodingResult, int]:
        """Decode the window at ``seek`` (a generator of its decodes, see `fallback_decodes`); returns the
        next seek (always > seek)."""
        mel_segment, segment_size = (
            self.windows.window(seek, clip_end),
            self.windows.segment_size(seek, clip_end),
        )
        window = Window(seek, segment_size)
        options = replace(self.options, prompt=self.prompt())
        result = yield from fallback_decodes(mel_segment, options, self.policy, self.generator)
        if self.policy.is_silence(result):
            return seek + segment_size  # fast-forward past the silent window
        cut = cut_window(
            result.tokens,
            self.tokenizer.timestamp_begin,
            segment_size,
            self.input_stride,
            self.time_precision,
        )
        drafts = self.drafts(cut, window, result)
        next_seek = seek + cut.advance
        if self.word_options is not None:
            next_seek, drafts, redo = self.add_words(drafts, window, result, cut, next_seek)
            if redo:
                return next_seek if next_seek > seek else seek + segment_size
        self.commit(drafts, result)
        return next_seek if next_seek > seek else seek + segment_size  # the seek always advances

    def requests(
        self, clips: list[tuple[int, int]], progress: Callable[[float], None] | None = None
    ) -> Generator[WindowRequest, DecodingResult, list[Segment]]:
        """The whole loop as a generator of window requests; returns the segments. `progress(seconds)` is
        called with the audio seconds each window moved the seek."""
        seek = 0
        for clip_start, clip_end in clips:
            seek = max(seek, clip_start)
            while seek < clip_end:
                previous_seek = seek
                seek = yield from self.step(seek, clip_end)
                if progress is not None:
                    progress(round((min(self.content_frames, seek) - previous_seek) / FRAMES_PER_SECOND, 2))
        return self.segments

    def run(self, clips: list[tuple[int, int]]) -> list[Segment]:
        """The loop, each window decoded alone."""
        seconds = self.content_frames / FRAMES_PER_SECOND  # the bar (verbose=False) counts audio seconds
        bar = tqdm.tqdm(
            total=round(seconds, 2), unit="s", unit_scale=False, disable=self.verbose is not False
        )
        with bar:
            return run_alone(self.model, self.requests(clips, bar.update))

    @property
    def text(self) -> str:
        return self.tokenizer.decode(self.all_tokens[len(self.initial_prompt_tokens) :])


def _drafts_end(drafts: list[Draft]) -> float | None:
    """End of the last word, else of the last segment."""
    return get_end([{"words": d.words or [], "end": d.end} for d in drafts])


# ---------------------------------------------------------------------------------------------------------
# entry point


def _language(model: Whisper, mel: torch.Tensor, language: str | None, verbose: bool | None) -> str:
    """The language to transcribe: "en" for English-only models, else the given one or the detected one."""
    if not model.is_multilingual:
        if language not in (None, "en", "english", "English"):
            warnings.warn(
                f"this model is English-only; transcribing as English, not {language!r}", stacklevel=3
            )
        return "en"
    if language is not None:
        from ..tokenizer import normalize_language

        return normalize_language(language)
    if verbose:
        print("Detecting language using up to the first 30 seconds. Use `--language` to specify the language")
    _, probs = model.detect_language(pad_or_trim(mel, N_FRAMES))
    detected = max(probs, key=probs.get)
    if verbose is not None:
        print(f"Detected language: {LANGUAGES[detected].title()}")
    return detected


def _window_options(decode_options: dict) -> dict:
    """transcribe()'s DecodingOptions fields, less `fp16` (the dtype was chosen at load); transcribe() sets
    the temperature and the prompt of each window itself."""
    decode_options = dict(decode_options)
    decode_options.pop("fp16", None)
    for key in ("temperature", "prompt"):
        if key in decode_options:
            raise TypeError(f"{key!r} is set by transcribe() itself")
    return decode_options


@dataclass
class Prepared:
    """A recording ready to transcribe: its seek loop, the clips to run it over, and its language."""

    loop: SeekLoop
    clips: list[tuple[int, int]]
    language: str
    speech_map: SpeechMap | None = None  # vad_filter: the loop decodes the speech joined; times map back

    def result(self, segments: list[Segment]) -> TranscriptionResult:
        if self.speech_map is not None:
            segments = [self.speech_map.segment(s) for s in segments]
        return TranscriptionResult(self.loop.text, tuple(segments), self.language)


def check_options(
    model: Whisper,
    temperature: float | Sequence[float] = DEFAULT_TEMPERATURES,
    compression_ratio_threshold: float | None = 2.4,
    logprob_threshold: float | None = -1.0,
    no_speech_threshold: float | None = 0.6,
    hallucination_silence_threshold: float | None = None,
    repeat_no_speech_threshold: float | None = 0.2,
    clip_timestamps: str | Sequence[float] = "0",
    vad_filter: bool = False,
    vad_parameters: VadOptions | dict | None = None,
    **decode_options,
) -> tuple[dict, FallbackPolicy]:
    """transcribe()'s options checked before any audio is read: (DecodingOptions fields, fallback policy)."""
    vad_settings(vad_filter, vad_parameters, clip_timestamps)
    decode_options = _window_options(decode_options)
    temperatures = (temperature,) if np.ndim(temperature) == 0 else tuple(temperature)
    thresholds = (compression_ratio_threshold, logprob_threshold, no_speech_threshold)
    thresholds += (hallucination_silence_threshold, repeat_no_speech_threshold)
    check_transcribe_options(decode_options, temperatures, *thresholds, clip_timestamps, model=model)
    return decode_options, FallbackPolicy(tuple(float(t) for t in temperatures), *thresholds[:3])


def prepare(
    model: Whisper,
    audio: Any,
    *,
    verbose: bool | None = None,
    temperature: float | Sequence[float] = DEFAULT_TEMPERATURES,
    compression_ratio_threshold: float | None = 2.4,
    logprob_threshold: float | None = -1.0,
    no_speech_threshold: float | None = 0.6,
    condition_on_previous_text: bool = True,
    initial_prompt: str | None = None,
    carry_initial_prompt: bool = False,
    word_timestamps: bool = False,
    prepend_punctuations: str = PREPEND_PUNCTUATIONS,
    append_punctuations: str = APPEND_PUNCTUATIONS,
    clip_timestamps: str | Sequence[float] = "0",
    hallucination_silence_threshold: float | None = None,
    repeat_no_speech_threshold: float | None = 0.2,
    seed: int | None = None,
    vad_filter: bool = False,
    vad_parameters: VadOptions | dict | None = None,
    **decode_options,
) -> Prepared:
    """Everything `transcribe` does before the first window: options checked, audio read into windows,
    language chosen (detected on the first 30 s when not given), the seek loop built."""
    decode_options, policy = check_options(
        model,
        temperature,
        compression_ratio_threshold,
        logprob_threshold,
        no_speech_threshold,
        hallucination_silence_threshold,
        repeat_no_speech_threshold,
        clip_timestamps,
        vad_filter,
        vad_parameters,
        **decode_options,
    )
    speech_map = None
    vad = vad_settings(vad_filter, vad_parameters, clip_timestamps)
    if vad is not None:
        audio, speech_map = speech_only(audio, vad, verbose)
    windows = MelWindows(audio, model.dims.n_mels)
    language = _language(model, windows.mel, decode_options.get("language"), verbose)
    options = DecodingOptions(**{**decode_options, "language": language})
    tokenizer = task_tokenizer(model, language, options.task)
    if word_timestamps and options.task == "translate":
        warnings.warn("Word-level timestamps on translations may not be reliable.", stacklevel=3)

    word_options = None
    if word_timestamps:
        word_options = WordOptions(prepend_punctuations, append_punctuations, hallucination_silence_threshold)
    loop = SeekLoop(
        model,
        windows,
        tokenizer,
        options,
        policy,
        verbose=verbose,
        condition_on_previous_text=condition_on_previous_text,
        initial_prompt=initial_prompt,
        carry_initial_prompt=carry_initial_prompt,
        word_options=word_options,
        repeat_guard=RepeatGuard(repeat_no_speech_threshold),
        generator=None if seed is None else torch.Generator().manual_seed(seed),
        speech_map=speech_map,
    )
    clips = parse_clip_timestamps(clip_timestamps, loop.content_frames)
    return Prepared(loop, clips, language, speech_map)


def transcribe(model: Whisper, audio: Any, **options) -> TranscriptionResult:
    """One recording, its windows decoded one after the other (see kvwhisper.transcribe.transcribe, which
    documents the options)."""
    prepared = prepare(model, audio, **options)
    with torch.no_grad():
        return prepared.result(prepared.loop.run(prepared.clips))
