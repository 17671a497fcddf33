"""Step-through of windows decoded together: what every row of a batched step read and chose.

    session = model.decode_session(["a.flac", "b.flac"], DecodingOptions(beam_size=5))
    for step in session:                     # or session.step(), session.run()
        for row in step.rows:
            print(row.stream, row.row, row.position, row.attends, row.token.text)
    session.add("c", "c.flac")               # a window may join at any step
    session.results                          # {stream: DecodingResult}, each == model.decode(its mel, options)

The session drives `decoding.batch.BatchDecoder`, the decoder of batched transcription, one step at a time.
Each row of a step is recorded with its stream, window, position and the self-attention keys it reads: the
rows of a window attend to the first `position + 1` entries of their own cache (`attends`) and nothing else,
so `unread` (the cache's other positions) is never in any row's attention, and no other window's keys or
padding are either. Cross-attention reads the window's own `cross_length` audio positions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..decoding.batch import BatchDecoder, WindowJob
from ..decoding.loop import DecodingOptions, DecodingResult, DecodingTask
from .records import Candidate, token_text
from .windows import window_mel

if TYPE_CHECKING:
    from ..model import Whisper


@dataclass(frozen=True)
class BatchRow:
    """One row of a batched decode step: whose it is, what it read, what it fed and what came next."""

    stream: Any  # the key the window was added with
    window: int | None  # which 30 s window of the stream's file (None: the first, or a mel as given)
    row: int  # the row within its window (a beam, a sample)
    batched: bool  # stepped in the one decoder call of the batch (else alone: other cache modes)
    position: int  # where this step's token is written in its window's cache
    attends: int  # self-attention keys this row reads: its cache's positions 0 .. position
    unread: int  # its cache's positions past those (allocated, never attended)
    cross_length: int  # audio positions its cross-attention reads (its own window's)
    fed: Candidate  # the token fed (log-prob: NaN, not a choice of this step)
    token: Candidate  # the token chosen after it (log-prob after the processors)
    source: int  # the row (before the step) the chosen token continues (beam search reorders rows)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["stream"] = self.stream if isinstance(self.stream, (int, str)) else repr(self.stream)
        d["fed"], d["token"] = self.fed.to_dict(), self.token.to_dict()
        return d


@dataclass(frozen=True)
class BatchStepTrace:
    """One step of the batch: every row, the windows that ended at it and the batched decoder calls so far."""

    step: int
    rows: tuple[BatchRow, ...]
    ended: tuple[Any, ...]  # streams whose window ended at this step (their result is ready)
    decoder_calls: int  # batched decoder calls made since the session started

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "rows": [r.to_dict() for r in self.rows],
            "ended": [e if isinstance(e, (int, str)) else repr(e) for e in self.ended],
            "decoder_calls": self.decoder_calls,
        }


class BatchDecodeSession:
    """Windows decoded together (`decoding.batch`), stepped by hand. Build it with
    `decode_session(model, [audio, ...], options)`, or empty, then `add` windows."""

    def __init__(self, model: Whisper, options: DecodingOptions | None = None):
        self.model = model
        self.options = options or DecodingOptions()
        if self.options.task == "lang_id":
            raise ValueError("task='lang_id' only detects the language: there are no decode steps to trace")
        self.decoder = BatchDecoder(model)
        self.traces: list[BatchStepTrace] = []
        self.results: dict[Any, DecodingResult] = {}
        self._windows: dict[Any, int | None] = {}

    def add(
        self,
        stream: Any,
        audio_or_mel: Any,
        options: DecodingOptions | None = None,
        *,
        window: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        """Start decoding a window (what `decode_session` takes for one) under the name `stream`, with its own
        options (default: the session's) and sampling generator. Its prompt step runs now."""
        if stream in self._windows:
            raise ValueError(f"stream {stream!r} is already in the session")
        options = options or self.options
        if options.task == "lang_id":
            raise ValueError("task='lang_id' only detects the language: there are no decode steps to trace")
        mel, _ = window_mel(self.model, audio_or_mel, window)
        task = DecodingTask(self.model, options, generator)
        with torch.no_grad():
            features = task.audio_features(mel[None])  # as decode() encodes it (features: as given)
        self._windows[stream] = window
        job = self.decoder.add(stream, task, features)
        if job.result is not None:
            self.results[stream] = job.result

    @property
    def finished(self) -> bool:
        return len(self.decoder) == 0

    def step(self) -> BatchStepTrace:
        """One token for every open window; StopIteration when none is open."""
        if self.finished:
            raise StopIteration
        jobs = list(self.decoder.jobs)
        before = {id(job): self._before(job) for job in jobs}
        ended = self.decoder.step()
        for job in ended:
            self.results[job.key] = job.result
        rows = []
        for job in jobs:
            rows += self._rows(job, before[id(job)])
        trace = BatchStepTrace(len(self.traces), tuple(rows), tuple(j.key for j in ended), self.decoder.steps)
        self.traces.append(trace)
        return trace

    def __iter__(self) -> Iterator[BatchStepTrace]:
        return self

    def __next__(self) -> BatchStepTrace:
        return self.step()

    def run(self) -> dict[Any, DecodingResult]:
        """Step until every window has ended; returns `results`."""
        while not self.finished:
            self.step()
        return self.results

    @staticmethod
    def _before(job: WindowJob) -> tuple:
        cache = job.state.runner.cache
        return (
            job.batched,
            cache.position,
            cache.capacity,
            cache.cross_length,
            job.state.tokens[:, -1].tolist(),
        )

    def _rows(self, job: WindowJob, before: tuple) -> list[BatchRow]:
        batched, position, capacity, cross_length, fed = before
        tok = job.task.tokenizer
        out = job.output
        chosen = (job.last_tokens if job.state is None else job.state.tokens[:, -1]).tolist()
        logprobs = out.logits.log_softmax(dim=-1)
        sources = out.source_rows.tolist() if out.source_rows is not None else list(range(len(chosen)))
        rows = []
        for r, token in enumerate(chosen):
            logprob = float(logprobs[sources[r], token])
            rows.append(
                BatchRow(
                    stream=job.key,
                    window=self._windows[job.key],
                    row=r,
                    batched=batched,
                    position=position,
                    attends=position + 1,
                    unread=capacity - position - 1,
                    cross_length=cross_length,
                    fed=Candidate(fed[r], token_text(tok, fed[r]), float("nan")),
                    token=Candidate(token, token_text(tok, token), logprob),
                    source=sources[r],
                )
            )
        return rows
