"""Windows with different options decoded together: continuous batching of decode steps.

Each window keeps everything of its own decode: its `DecodingTask` (options, prompt, temperature, logits
processors, chooser and sampling generator), its state and its KV cache. Its first step (the prompt) runs alone;
after that, the one-token steps of every window in the batch run as one decoder call (`model.ragged`), and each
window chooses its next tokens from its own logits. A window that ends leaves the batch and another may join
at any step: the others are not recomputed.

Windows in the full cache mode and without `compile` are batched; the others step alone (same results).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..model.ragged import step_windows
from .loop import DecodeState, DecodingTask, StepOutput
from .options import DecodingResult

if TYPE_CHECKING:
    from ..model import Whisper


@dataclass
class WindowJob:
    """One window's decode in a batch: its task, its audio features (1, n_audio_ctx, C) and its state."""

    key: Any  # the caller's name for it, returned with its result
    task: DecodingTask
    features: Tensor
    state: DecodeState | None = None
    languages: list[str] = field(default_factory=list)
    language_probs: list[dict] | None = None
    result: DecodingResult | None = None
    output: StepOutput | None = None  # what its last step did (for step-through, inspection/batch_session.py)
    last_tokens: Tensor | None = None  # its rows' last tokens, kept when it ends (its state is freed)

    @property
    def rows(self) -> int:
        return 0 if self.state is None else self.state.tokens.shape[0]

    @property
    def batched(self) -> bool:
        """Steps with the other windows (else alone: other cache modes, the compiled step)."""
        runner = self.state.runner
        return runner.mode == "full" and not runner.compile


class BatchDecoder:
    """Decodes windows added at any time, one step of all of them at a time.

    `add` starts a window (its prompt step runs then); `step` advances every window by one token and returns
    the jobs that ended, with their `result` set, in the order they were added.
    """

    def __init__(self, model: Whisper):
        self.model = model
        self.jobs: list[WindowJob] = []
        self.steps = 0  # batched decoder calls made
        self.rows_stepped = 0  # rows they fed, summed (rows_stepped / steps: the mean batch)

    def __len__(self) -> int:
        return len(self.jobs)

    @property
    def rows(self) -> int:
        return sum(job.rows for job in self.jobs)

    @torch.no_grad()
    def encode(self, mels: list[Tensor]) -> list[Tensor]:
        """Audio features of windows (n_mels, 3000) each: (1, n_audio_ctx, C) each. One encoder call for
        them all on a GPU; on the CPU one call per window, which is as fast (the products are already
        compute-bound at 1500 rows, benchmarks/RESULTS.md) and gives each window the bits it gets alone."""
        if not mels:
            return []
        if self.model.device.type == "cpu":
            return [self.model.embed_audio(mel[None]) for mel in mels]
        return [f[None] for f in self.model.embed_audio(torch.stack(mels))]

    @torch.no_grad()
    def add(
        self, key: Any, options_or_task, features: Tensor, generator: torch.Generator | None = None
    ) -> WindowJob:
        """Start decoding a window whose audio features are `features` (1, n_audio_ctx, C): its prompt step
        runs now. Returns its job (already ended, with its result, if the first step ended it)."""
        task = options_or_task
        if not isinstance(task, DecodingTask):
            task = DecodingTask(self.model, options_or_task, generator)
        job = WindowJob(key, task, features)
        tokens = torch.tensor([task.initial_tokens])
        job.languages, job.language_probs = task.languages(features, tokens)
        if task.options.task == "lang_id":
            job.result = DecodingResult(features[0], job.languages[0], job.language_probs[0])
            return job
        job.state = task.start(features, tokens)
        job.output = task.step(job.state)
        self._finish_if_done(job)
        if job.result is None:
            self.jobs.append(job)
        return job

    @torch.no_grad()
    def step(self) -> list[WindowJob]:
        """One token for every window in the batch; returns the jobs that ended (and left the batch)."""
        together = [job for job in self.jobs if job.batched]
        if together:
            tokens = [job.state.tokens[:, -1:] for job in together]
            caches = [job.state.runner.cache for job in together]
            for job in together:
                if job.state.runner.cache.position != job.state.tokens.shape[1] - 1:
                    raise RuntimeError("a batched window's cache is not one token behind its tokens")
            logits = step_windows(self.model.decoder, tokens, caches)
            self.steps += 1
            self.rows_stepped += sum(t.shape[0] for t in tokens)
            for job, job_logits in zip(together, logits):
                runner = job.state.runner
                runner.calls += 1
                runner.fed_last = 1
                job.output = job.task.choose(job.state, job_logits)
        for job in self.jobs:
            if not job.batched:
                job.output = job.task.step(job.state)
        ended = []
        for job in self.jobs:
            if self._finish_if_done(job):
                ended.append(job)
        self.jobs = [job for job in self.jobs if job.result is None]
        return ended

    def _finish_if_done(self, job: WindowJob) -> bool:
        if not job.state.completed:
            return False
        job.result = job.task.finish(job.state, job.features, job.languages, job.language_probs)[0]
        job.last_tokens = job.state.tokens[:, -1]
        job.state = None  # its cache is freed
        return True
