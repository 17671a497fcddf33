"""Many recordings transcribed together: each runs its own seek loop; their windows share the decoder.

``transcribe(model, [a, b, ...], batch_size=8)`` keeps up to ``batch_size`` recordings open at once. Each one is
a `SeekLoop` with every option of the single-recording path (prompts, temperature fallback, no-speech skip,
clips, word timestamps, hallucination guards, beam search, best_of), written as a generator of window
requests (seek.py): it asks for a window to be decoded and is handed the result. The scheduler here encodes
the windows asked for in one encoder call, starts each one's decode (its prompt step) and then steps all
open windows together (decoding/batch.py). When a window ends, its recording's next window (or the next
recording) takes its place while the others go on. A recording's result is the one it gets alone: each
window's rows attend only to its own cache, and on the CPU the products compute each row on its own.

Samples (fallback temperatures) are drawn from a generator of each recording's own, seeded with ``seed``:
with a seed, a sampled window is the same batched or alone; without one, each recording's generator is
seeded from torch's global generator when the recording is opened (reproducible under ``torch.manual_seed``,
not equal to the single-recording run, which draws from the global generator as the reference does).

``transcribe(model, path, batch_size=8)`` on one recording splits it at quiet points (with ``vad_filter``: in
the gaps between the VAD's speech regions) into up to ``batch_size`` parts run as recordings of their own, and
joins their segments: the only mode whose text may differ from the sequential run (around the cuts, where the
previous text is not carried over).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import tqdm

from ..audio import FRAMES_PER_SECOND, SAMPLE_RATE
from ..audio.features import as_waveform
from ..audio.files import duration_hint
from ..audio.vad import VadOptions, speech_samples
from ..decoding import DecodingResult, DecodingTask
from ..decoding.batch import BatchDecoder
from ..timing import APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS
from .fallback import DEFAULT_TEMPERATURES, WindowRequest
from .seek import Prepared, check_options, prepare
from .seek import transcribe as transcribe_one
from .segments import Segment, TranscriptionResult
from .speech import vad_settings

if TYPE_CHECKING:
    from ..model import Whisper

DEFAULT_BATCH_SIZE = 8
MIN_PART_SECONDS = 60.0  # a recording is split into parts of at least this long
CUT_SEARCH_SECONDS = 5.0  # a cut is placed at the quietest moment this close to its equal-length boundary


class BatchTranscriptionError(Exception):
    """Some recordings of a list failed; the others were transcribed. `results[i]` is recording i's
    TranscriptionResult, or the exception it failed with; `errors` maps the failed indices to theirs."""

    def __init__(self, results: list[TranscriptionResult | Exception]):
        self.results = results
        self.errors = {i: r for i, r in enumerate(results) if isinstance(r, Exception)}
        first = next(iter(self.errors.items()))
        super().__init__(
            f"{len(self.errors)} of {len(results)} recordings failed; the first, #{first[0]}: {first[1]}"
        )


@dataclass
class _Stream:
    """One open recording: its prepared seek loop, the generator of its window requests, and what it asked."""

    index: int
    prepared: Prepared
    requests: Generator[WindowRequest, DecodingResult, list[Segment]]
    request: WindowRequest | None = None


class Scheduler:
    """Runs recordings' seek loops with their windows decoded together (the module docstring)."""

    def __init__(
        self,
        model: Whisper,
        batch_size: int,
        options: dict,
        progress: Callable[[float], None] | None = None,
        opened: Callable[[float], None] | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model, self.batch_size, self.options = model, batch_size, options
        self.progress, self.opened = progress, opened
        self.decoder = BatchDecoder(model)
        self.waiting: list[_Stream] = []  # a request not yet started
        self.open = 0  # recordings with a window waiting or decoding

    def run(self, audios: Iterable[tuple[int, Any]]) -> Iterator[tuple[int, TranscriptionResult | Exception]]:
        """Opens the (index, recording) pairs in their order; yields (index, result or the exception it failed
        with) as each recording finishes."""
        inputs = iter(audios)
        exhausted = False
        while True:
            while not exhausted and self.open < self.batch_size:
                item = next(inputs, None)
                if item is None:
                    exhausted = True
                    break
                yield from self._open(*item)
            if not self.waiting and not len(self.decoder):
                if exhausted:
                    return
                continue
            yield from self._start_waiting()
            if len(self.decoder):
                for job in self.decoder.step():
                    yield from self._deliver(job.key, job.result)

    def _open(self, index: int, audio: Any) -> Iterator[tuple[int, TranscriptionResult | Exception]]:
        options = dict(self.options)
        if options.get("seed") is None:  # see the module docstring
            options["seed"] = int(torch.randint(0, 2**62, ()).item())
        try:
            prepared = prepare(self.model, audio, **options)
        except Exception as error:  # this recording only: the others go on
            yield index, error
            return
        if self.opened is not None:
            self.opened(prepared.loop.content_duration)
        stream = _Stream(index, prepared, prepared.loop.requests(prepared.clips, self.progress))
        self.open += 1
        yield from self._advance(stream, None)

    def _advance(self, stream: _Stream, result: DecodingResult | None):
        """Hand the stream its window's result (None: start it); it asks for the next one or finishes."""
        try:
            stream.request = next(stream.requests) if result is None else stream.requests.send(result)
        except StopIteration as stop:
            self.open -= 1
            yield stream.index, stream.prepared.result(stop.value)
            return
        except Exception as error:
            self.open -= 1
            yield stream.index, error
            return
        self.waiting.append(stream)

    def _deliver(self, stream: _Stream, result: DecodingResult):
        yield from self._advance(stream, result)

    def _start_waiting(self):
        """Encode the waiting windows' mels in one call and start their decodes."""
        waiting, self.waiting = self.waiting, []
        d = self.model.dims
        mels = [s for s in waiting if s.request.source.shape[-2:] != (d.n_audio_ctx, d.n_audio_state)]
        features = dict(zip(map(id, mels), self.decoder.encode([s.request.source for s in mels])))
        for stream in waiting:
            request = stream.request
            source = features.get(id(stream))
            if source is None:
                source = request.source.to(self.model.device, self.model.dtype)[None]
            task = DecodingTask(self.model, request.options, request.generator)
            job = self.decoder.add(stream, task, source)
            if job.result is not None:
                yield from self._deliver(stream, job.result)


def transcribe_iter(
    model: Whisper,
    audios: Iterable[Any],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    **options,
) -> Iterator[tuple[int, TranscriptionResult | Exception]]:
    """Transcribe recordings together, yielding ``(index, result)`` as each one finishes (not in input order).

    audios: paths, bytes, file objects or waveforms, read lazily (at most ``batch_size`` are held at once); a
    list longer than the batch is opened longest first (`longest_first`: headers only), another iterable in order;
    options: those of `transcribe`. A recording that cannot be read or fails is yielded with its exception
    in place of the result; the others go on. Options are checked before any recording is read.
    """
    verbose = options.pop("verbose", None)
    check_options(model, **_check_args(options))
    bar = tqdm.tqdm(total=0.0, unit="s", unit_scale=False, disable=verbose is not False)

    def opened(seconds: float) -> None:
        bar.total = round(bar.total + seconds, 2)
        bar.refresh()

    scheduler = Scheduler(model, batch_size, options, bar.update, opened)
    with bar, torch.no_grad():
        for index, result in scheduler.run(longest_first(audios, batch_size)):
            if verbose and isinstance(result, TranscriptionResult):
                _print_result(index, result)
            yield index, result


def longest_first(audios: Iterable[Any], batch_size: int) -> Iterator[tuple[int, Any]]:
    """(index, recording) in the order to open them. A list longer than the batch is opened longest first
    (`duration_hint`: headers, not decoding; unknown lengths last, in their order), so that the long
    recordings, whose windows must follow one another, start early and the others fill the batch around
    them, instead of one long recording decoding alone at the end. Other iterables keep their order (they
    are read lazily)."""
    if not isinstance(audios, Sequence) or isinstance(audios, (str, bytes)) or len(audios) <= batch_size:
        yield from enumerate(audios)
        return
    hints = [duration_hint(audio) for audio in audios]
    for index in sorted(range(len(audios)), key=lambda i: (hints[i] is None, -(hints[i] or 0.0))):
        yield index, audios[index]


def transcribe_many(
    model: Whisper, audios: Sequence[Any], *, batch_size: int = DEFAULT_BATCH_SIZE, **options
) -> list[TranscriptionResult]:
    """`transcribe_iter` collected in input order. When some recordings fail, raises
    `BatchTranscriptionError` after the others finished (its `results` hold both)."""
    results: list[Any] = [None] * len(audios)
    for index, result in transcribe_iter(model, audios, batch_size=batch_size, **options):
        results[index] = result
    if any(isinstance(r, Exception) for r in results):
        raise BatchTranscriptionError(results)
    return results


# ---------------------------------------------------------------------------------------------------------
# one recording, split


def quiet_cuts(waveform: np.ndarray, parts: int, search: float = CUT_SEARCH_SECONDS) -> list[int]:
    """Sample indices cutting `waveform` into `parts`: at each equal-length boundary, the middle of the
    quietest 100 ms (lowest energy, in 10 ms steps) within `search` seconds of it."""
    hop, frame = SAMPLE_RATE // 100, SAMPLE_RATE // 10
    n = len(waveform)
    cuts = []
    for k in range(1, parts):
        target = n * k // parts
        lo, hi = max(0, target - int(search * SAMPLE_RATE)), min(n, target + int(search * SAMPLE_RATE))
        piece = np.asarray(waveform[lo:hi], dtype=np.float64)
        if len(piece) <= frame:
            cuts.append(target)
            continue
        energy = np.convolve(piece**2, np.ones(frame), mode="valid")[::hop]
        cuts.append(lo + int(np.argmin(energy)) * hop + frame // 2)
    return cuts


def gap_cuts(
    waveform: np.ndarray, parts: int, regions: list[tuple[int, int]], search: float = CUT_SEARCH_SECONDS
) -> list[int]:
    """Like `quiet_cuts`, but at each boundary the middle of the nearest gap between two speech regions (from
    the VAD) within `search` seconds, where there is one; the quietest moment where there is none."""
    n = len(waveform)
    gaps = [(a_end + b_start) // 2 for (_, a_end), (b_start, _) in zip(regions, regions[1:])]
    fallback = quiet_cuts(waveform, parts, search)
    cuts = []
    for k in range(1, parts):
        target = n * k // parts
        near = [g for g in gaps if abs(g - target) <= search * SAMPLE_RATE]
        cuts.append(min(near, key=lambda g: abs(g - target)) if near else fallback[k - 1])
    return cuts


def _shifted(segment: Segment, id: int, seconds: float, frames: int) -> Segment:
    words = segment.words
    if words is not None:
        words = tuple(
            replace(w, start=round(w.start + seconds, 2), end=round(w.end + seconds, 2)) for w in words
        )
    return replace(
        segment,
        id=id,
        seek=segment.seek + frames,
        start=round(segment.start + seconds, 3),
        end=round(segment.end + seconds, 3),
        words=words,
    )


def transcribe_split(
    model: Whisper, audio: Any, *, batch_size: int = DEFAULT_BATCH_SIZE, **options
) -> TranscriptionResult:
    """One recording cut at quiet points into up to ``batch_size`` parts of at least a minute each,
    transcribed together, their segments joined in time order (see the module docstring)."""
    waveform = as_waveform(audio).detach().cpu().numpy()
    duration = len(waveform) / SAMPLE_RATE
    parts = max(1, min(batch_size, int(duration // MIN_PART_SECONDS)))
    if options.get("clip_timestamps", "0") not in ("0", "0.0", [0], [0.0], (0,)) or parts == 1:
        return transcribe_many(model, [waveform], batch_size=1, **options)[0]
    if options.get("language") is None and model.is_multilingual:  # one language for every part
        first = prepare(model, waveform[: 30 * SAMPLE_RATE], **options)
        options = {**options, "language": first.language}
    vad = vad_settings(options.get("vad_filter", False), options.get("vad_parameters"))
    if vad is not None:  # cut between speech regions; each part then decodes its own speech only
        cuts = gap_cuts(waveform, parts, speech_samples(waveform, vad))
    else:
        cuts = quiet_cuts(waveform, parts)
    edges = [0, *cuts, len(waveform)]
    pieces = [waveform[a:b] for a, b in zip(edges, edges[1:])]
    results = transcribe_many(model, pieces, batch_size=batch_size, **options)
    segments: list[Segment] = []
    for start, result in zip(edges, results):
        seconds, frames = start / SAMPLE_RATE, round(start / SAMPLE_RATE * FRAMES_PER_SECOND)
        segments += [_shifted(s, len(segments) + i, seconds, frames) for i, s in enumerate(result.segments)]
    return TranscriptionResult("".join(r.text for r in results), tuple(segments), results[0].language)


# ---------------------------------------------------------------------------------------------------------
# entry point


def transcribe(
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
    batch_size: int | None = None,
    seed: int | None = None,
    vad_filter: bool = False,
    vad_parameters: VadOptions | dict | None = None,
    **decode_options,
) -> TranscriptionResult | list[TranscriptionResult]:
    """Transcribe a whole recording, 30 seconds at a time (openai-whisper's ``transcribe()``), or a list of
    recordings together.

    audio: a path (any format FFmpeg reads), bytes, a binary file object, or a 16 kHz mono waveform
        (numpy array or tensor, used as given); or a list or tuple of these: their results come back as a
        list in the same order, each equal to transcribing that recording alone (with a ``seed``, also where
        a window falls back to sampling); a recording that fails raises `BatchTranscriptionError` after the
        others finished (`transcribe_iter` yields results as they finish instead).
    batch_size: windows decoded together (default 8 for a list). Given for one recording, the recording is
        split at quiet points into up to this many parts transcribed together: faster, and the only mode
        whose text may differ from the sequential run (near the cuts).
    seed: seed of the generator that samples are drawn from at fallback temperatures (None: torch's global
        generator, as the reference; for a list, a generator per recording seeded from it).
    verbose: True prints each segment as it is decoded (for a list: each recording's when it finishes);
        False shows a progress bar of audio seconds; None is silent.
    temperature: one temperature or the fallback sequence, tried in order while a decode fails the
        thresholds: gzip compression ratio above ``compression_ratio_threshold`` (repetition) or average
        log-probability below ``logprob_threshold``; a window whose no-speech probability is above
        ``no_speech_threshold`` with a low log-probability is silence: skipped, no fallback.
    condition_on_previous_text: feed the previous text as the prompt (reset after a decode at T > 0.5).
    initial_prompt: text fed as the prompt of the first window (of every window with carry_initial_prompt).
    word_timestamps: per-word start / end / probability from cross-attention DTW; segments' edges follow
        the words, and the seek moves to the last word's end.
    prepend_punctuations / append_punctuations: merged into the following / preceding word.
    clip_timestamps: "start,end,start,end,..." seconds (or a list): only these clips are transcribed.
    vad_filter: decode only the speech that the silero VAD finds (audio/vad.py): its regions are joined and
        transcribed, and every segment and word time is mapped back to the recording's timeline
        (transcribe/speech.py). vad_parameters: `VadOptions` fields as a dict (faster-whisper's names:
        threshold, min_speech_duration_ms, max_speech_duration_s, min_silence_duration_ms, speech_pad_ms,
        neg_threshold). With verbose=True the stretches left out are printed.
    hallucination_silence_threshold: with word timestamps, skip silences longer than this (seconds) around
        segments that look hallucinated.
    repeat_no_speech_threshold: drop a segment whose text repeats the previous segment's when its window's
        no-speech probability is above this (not in the reference; None turns it off and gives the
        reference's output exactly). Non-speech (hums, music, animal calls) otherwise comes out as one short
        text repeated across windows.
    decode_options: DecodingOptions fields (language, task, beam_size, best_of, patience, length_penalty,
        suppress_tokens, ...); ``fp16`` is accepted and ignored (the model's dtype was chosen at load).

    Returns a TranscriptionResult (a list of them for a list); ``.to_dict()`` is the reference's result dict.
    """
    options = {
        k: v for k, v in locals().items() if k not in ("model", "audio", "batch_size", "decode_options")
    }
    options.update(decode_options)
    if isinstance(audio, (list, tuple)):
        return transcribe_many(model, audio, batch_size=batch_size or DEFAULT_BATCH_SIZE, **options)
    if batch_size is not None and batch_size > 1:
        return transcribe_split(model, audio, batch_size=batch_size, **options)
    return transcribe_one(model, audio, **options)


def _check_args(options: dict) -> dict:
    """The options `check_options` takes (the others are checked when a recording is prepared)."""
    skip = {
        "condition_on_previous_text",
        "initial_prompt",
        "carry_initial_prompt",
        "word_timestamps",
        "prepend_punctuations",
        "append_punctuations",
        "seed",
        "verbose",
    }
    return {k: v for k, v in options.items() if k not in skip}


def _print_result(index: int, result: TranscriptionResult) -> None:
    from .writers import format_timestamp, make_safe

    for s in result.segments:
        print(make_safe(f"#{index} [{format_timestamp(s.start)} --> {format_timestamp(s.end)}] {s.text}"))


__all__ = [
    "BatchTranscriptionError",
    "Scheduler",
    "gap_cuts",
    "quiet_cuts",
    "transcribe",
    "transcribe_iter",
    "transcribe_many",
    "transcribe_split",
]
