"""Step-through decoding: a decode of one 30-second window that you can step, rewind, force and inspect.

    session = model.decode_session("speech.flac", DecodingOptions(beam_size=None))
    for step in session:                     # or session.step(), session.run()
        print(step.step, step.token.text, step.top_k)
    session.rewind(3)                        # undo the last 3 steps (the KV cache included)
    session.step(force=tokenizer.encode(" Hello")[0])
    session.result                           # == model.decode(session.mel, options)

The session drives `DecodingTask` (decoding.py) one `step()` at a time, so what it shows is what `decode()`
does: same processors, same chooser, same KV cache. Each step returns a `StepTrace` (JSON-able with
`to_dict()`): what was fed, the cache, the raw top-k, what each logits processor did, the chosen token.

Rewinding keeps a small snapshot per step (token rows, scores, the beam chooser's finished set). With greedy
decoding the static cache is simply rewound (`KVCache.rewind`); beam search reorders cache rows in place at
every step, which cannot be undone, so after a beam rewind the cache prefix is recomputed in one decoder pass.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..audio import CHUNK_LENGTH, N_FRAMES
from ..decoding.choosers import BeamSearchChooser
from ..decoding.logits import ApplyTimestampRules
from ..decoding.loop import DecodeState, DecodingOptions, DecodingResult, DecodingTask, StepOutput
from .activations import (
    StatsRunner,
    attention_weights,
    cross_attention_map,
    embed_audio_with_stats,
    head_mask,
    mean_over_heads,
)
from .batch_session import BatchDecodeSession
from .records import (
    Candidate,
    Hypothesis,
    StepTrace,
    describe_processors,
    token_text,
)
from .windows import window_mel

if TYPE_CHECKING:
    from ..model import Whisper

SECONDS_PER_AUDIO_POSITION = CHUNK_LENGTH / 1500  # 0.02 s per encoder position


# -- the session --------------------------------------------------------------------------------------------
@dataclass
class _Snapshot:
    """The state before a step, to rewind to."""

    tokens: Tensor
    sum_logprobs: Tensor
    no_speech_probs: Tensor | None
    position: int
    step: int
    beam_finished: list | None


class DecodeSession:
    """A decode of one window, stepped by hand. Build it with `decode_session(model, audio, options)`."""

    def __init__(
        self,
        model: Whisper,
        mel_or_features: Tensor,
        options: DecodingOptions | None = None,
        *,
        top_k: int = 5,
        record_activations: bool = False,
        record_attention: bool = False,
        window: int | None = None,
        audio_seconds: float | None = None,
    ):
        """mel_or_features: the window's mel (n_mels, 3000) or audio features (n_audio_ctx, n_audio_state).

        window / audio_seconds only describe it (which 30 s window of the file, how much of it is audio).
        """
        options = options or DecodingOptions()
        if options.task == "lang_id":
            raise ValueError("task='lang_id' only detects the language: there are no decode steps to trace")
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        self.model = model
        self.task = DecodingTask(model, options)
        self.options = self.task.options
        self.tokenizer = self.task.tokenizer
        self.top_k = top_k
        self.record_attention = record_attention
        self.record_activations = record_activations
        self.window = window
        self.audio_seconds = audio_seconds
        d = model.dims
        x = mel_or_features
        if x.dim() != 2:
            raise ValueError(
                f"one window: a mel (n_mels, {N_FRAMES}) or features, not shape {tuple(x.shape)}"
            )
        self.encoder_stats: list[dict] | None = None
        if tuple(x.shape) == (d.n_audio_ctx, d.n_audio_state):
            self.mel = None
            self.audio_features = self.task.audio_features(x[None])
        elif tuple(x.shape) == (d.n_mels, 2 * d.n_audio_ctx):
            self.mel = x
            with torch.no_grad():
                if record_activations:
                    self.audio_features, self.encoder_stats = embed_audio_with_stats(model, x[None])
                else:
                    self.audio_features = self.task.audio_features(x[None])
        else:
            raise ValueError(
                f"expected a mel ({d.n_mels}, {2 * d.n_audio_ctx}) or audio features "
                f"({d.n_audio_ctx}, {d.n_audio_state}), got {tuple(x.shape)}"
            )
        tokens = torch.tensor([self.task.initial_tokens])
        with torch.no_grad():
            self.languages, self.language_probs = self.task.languages(self.audio_features, tokens)
        self.state: DecodeState = self.task.start(self.audio_features, tokens)
        if record_activations:
            self.state.runner = StatsRunner(self.state.runner)
        self.traces: list[StepTrace] = []
        self.last_output: StepOutput | None = None  # the last step's logits (raw and processed) and masks
        self._snapshots: list[_Snapshot] = []
        self._result: DecodingResult | None = None

    # -- properties -------------------------------------------------------------------------------------
    @property
    def is_beam_search(self) -> bool:
        return isinstance(self.task.chooser, BeamSearchChooser)

    @property
    def finished(self) -> bool:
        return self.state.completed

    @property
    def cache(self):
        return self.state.runner.cache

    @property
    def sample_begin(self) -> int:
        return self.task.sample_begin

    @property
    def initial_tokens(self) -> tuple[int, ...]:
        return self.task.initial_tokens

    @property
    def tokens(self) -> list[int]:
        """The sampled tokens so far of the best row (row 0), up to (not including) an end-of-text."""
        row = self.state.tokens[0, self.sample_begin :].tolist()
        eot = self.tokenizer.eot
        return row[: row.index(eot)] if eot in row else row

    @property
    def text(self) -> str:
        """The sampled text so far (row 0), with timestamps."""
        return self.tokenizer.decode_with_timestamps(self.tokens)

    @property
    def no_speech_prob(self) -> float | None:
        p = self.state.no_speech_probs
        return None if p is None else float(p[0])

    @property
    def result(self) -> DecodingResult:
        """The DecodingResult `decode()` gives for the same window and options (runs the remaining steps)."""
        if self._result is None:
            if not self.finished:
                self.run()
            results = self.task.finish(self.state, self.audio_features, self.languages, self.language_probs)
            self._result = results[0]
        return self._result

    # -- stepping -------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[StepTrace]:
        return self

    def __next__(self) -> StepTrace:
        if self.finished:
            raise StopIteration
        return self.step()

    def run(self) -> list[StepTrace]:
        """Step to the end; the traces of the steps taken."""
        return list(self)

    @torch.no_grad()
    def step(self, force: int | None = None) -> StepTrace:
        """One decode step. force=token_id takes that token instead of the chooser's (not in beam search)."""
        if self.finished:
            raise RuntimeError(
                f"the decode has finished ({self.traces[-1].stop_reason}): rewind to step again"
            )
        state, task = self.state, self.task
        force_rows = None
        if force is not None:
            force_rows = self._force_rows(force)
        cache = self.cache
        before = _Snapshot(
            tokens=state.tokens.clone(),
            sum_logprobs=state.sum_logprobs.clone(),
            no_speech_probs=None if state.no_speech_probs is None else state.no_speech_probs.clone(),
            position=cache.position,
            step=state.step,
            beam_finished=copy.deepcopy(task.chooser.finished) if self.is_beam_search else None,
        )
        if self.model.device.type == "cuda":
            torch.cuda.synchronize(self.model.device)
        t0 = time.perf_counter()
        out = task.step(state, force=force_rows, inspect=True, want_qk=self.record_attention)
        if self.model.device.type == "cuda":
            torch.cuda.synchronize(self.model.device)
        elapsed_ms = (time.perf_counter() - t0) * 1000
        forced = self._timestamp_forced()
        self._snapshots.append(before)
        self.last_output = out
        self._result = None
        trace = self._trace(before, out, forced, force is not None, elapsed_ms)
        self.traces.append(trace)
        return trace

    def rewind(self, n: int = 1) -> list[StepTrace]:
        """Undo the last n steps (tokens, scores, KV cache); returns the traces undone."""
        if not 0 <= n <= len(self.traces):
            raise ValueError(f"cannot rewind {n} steps: {len(self.traces)} taken")
        if n == 0:
            return []
        target = self._snapshots[-n]
        undone = self.traces[-n:]
        del self._snapshots[-n:]
        del self.traces[-n:]
        state = self.state
        state.tokens = target.tokens
        state.sum_logprobs = target.sum_logprobs
        state.no_speech_probs = target.no_speech_probs
        state.step = target.step
        state.completed = False
        if target.beam_finished is not None:
            self.task.chooser.finished = target.beam_finished
        self._restore_cache(target.position)
        self.last_output = None
        self._result = None
        return undone

    def _restore_cache(self, position: int) -> None:
        runner = self.state.runner
        if runner.mode == "none":  # everything is recomputed at the next step anyway
            return
        cache = runner.cache
        if not self.is_beam_search:
            cache.rewind(position)  # static buffers: the prefix is untouched, only the position moves
            return
        # beam search reordered the prefix rows in place since then: recompute the prefix in one pass
        cache.rewind(0)
        if position > 0:
            if not cache.has_cross:
                self.model.fill_cross(cache, runner.audio_features)
            with torch.no_grad():
                self.model.decoder(self.state.tokens[:, :position], cache, positions=(-1,))

    def _force_rows(self, force) -> Tensor:
        if self.is_beam_search:
            raise ValueError("forcing a token is only supported without beam search")
        if isinstance(force, Tensor):
            if force.numel() != 1:
                raise ValueError("force takes one token id")
            force = force.item()
        if isinstance(force, bool) or not isinstance(force, (int, np.integer)):
            raise ValueError(f"force must be a token id (int), not {force!r}")
        n_vocab = self.model.dims.n_vocab
        if not 0 <= int(force) < n_vocab:
            raise ValueError(f"cannot force token {force}: token ids are 0..{n_vocab - 1}")
        rows = self.state.tokens.shape[0]
        return torch.full((rows,), int(force), dtype=torch.long, device=self.state.tokens.device)

    def _timestamp_forced(self) -> Tensor | None:
        for p in self.task.processors:
            if isinstance(p, ApplyTimestampRules):
                return None if p.forced is None else p.forced.clone()
        return None

    # -- building the trace -----------------------------------------------------------------------------
    def _stop_reason(self) -> str | None:
        state, task = self.state, self.task
        if not state.completed:
            return None
        chooser = task.chooser
        if isinstance(chooser, BeamSearchChooser):
            if all(len(f) >= chooser.max_candidates for f in chooser.finished):
                return "eot"
        elif bool((state.tokens[:, -1] == self.tokenizer.eot).all()):
            return "eot"
        if state.tokens.shape[-1] > task.n_ctx:
            return "context_full"
        return "sample_len"

    def _trace(self, before: _Snapshot, out: StepOutput, forced: Tensor | None, was_forced: bool, ms: float):
        tok, state = self.tokenizer, self.state
        sources = out.source_rows
        src = int(sources[0]) if sources is not None else 0  # the pre-step row the best row came from
        fed = before.tokens[src, before.tokens.shape[1] - out.fed :].tolist()
        raw_logprobs = F.log_softmax(out.raw_logits[src].float(), dim=-1)
        top = raw_logprobs.topk(min(self.top_k, raw_logprobs.shape[-1]))
        top_k = tuple(
            Candidate(i, token_text(tok, i), v)
            for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        )
        logprobs = F.log_softmax(out.logits.float(), dim=-1)  # (B, V) after the processors
        chosen = int(state.tokens[0, -1])
        token = Candidate(chosen, token_text(tok, chosen), float(logprobs[src, chosen]))
        cache = self.cache
        beams = beam_finished = None
        if state.tokens.shape[0] > 1:
            hypotheses = []
            for r in range(state.tokens.shape[0]):
                source = int(sources[r]) if sources is not None else r
                t = int(state.tokens[r, -1])
                hypotheses.append(
                    Hypothesis(
                        row=r,
                        source=source,
                        token=Candidate(t, token_text(tok, t), float(logprobs[source, t])),
                        score=float(state.sum_logprobs[r]),
                        text=tok.decode_with_timestamps(state.tokens[r, self.sample_begin :].tolist()),
                    )
                )
            beams = tuple(hypotheses)
        if self.is_beam_search:
            done = self.task.chooser.finished[0]
            beam_finished = tuple(
                (tok.decode_with_timestamps(list(seq[self.sample_begin : -1])), float(score))
                for seq, score in done.items()
            )
        attention = peak = None
        if out.cross_qk is not None:
            qks = [qk[src : src + 1, :, -1:] for qk in out.cross_qk]  # the query that chose the token
            attention = attention_weights(qks)[0, :, :, 0].cpu()  # (L, H, S)
            mean = mean_over_heads(attention, head_mask(self.model, "alignment"))
            peak = round(int(mean.argmax()) * SECONDS_PER_AUDIO_POSITION, 2)
        stats = getattr(state.runner, "last_stats", None)
        return StepTrace(
            step=before.step,
            position=before.tokens.shape[1] - out.fed,
            fed=tuple(fed),
            fed_text=tuple(token_text(tok, t) for t in fed),
            cache_self=(cache.position,) * cache.n_layer,
            cache_cross=cache.cross_length,
            top_k=top_k,
            processors=describe_processors(self.task.processors, out.processor_masks, forced, src, top_k),
            token=token,
            forced=was_forced,
            cumulative_logprob=float(state.sum_logprobs[0]),
            finished=state.completed,
            stop_reason=self._stop_reason(),
            time_ms=ms,
            beams=beams,
            beam_finished=beam_finished,
            no_speech_prob=self.no_speech_prob if before.step == 0 else None,
            activations=None if stats is None else tuple(stats),
            cross_attention=attention,
            attention_peak_s=peak,
        )

    # -- inspection -----------------------------------------------------------------------------------------
    def step_attention(self, step: int = -1, heads: str | Tensor = "alignment") -> Tensor:
        """A recorded step's cross-attention weights over the audio positions: (S,) averaged over the selected
        heads ("alignment" or "all"), or (L, H, S) with heads=None. Needs record_attention=True."""
        weights = self.traces[step].cross_attention
        if weights is None:
            raise ValueError(
                "cross-attention was not recorded: create the session with record_attention=True"
            )
        return weights if heads is None else mean_over_heads(weights, head_mask(self.model, heads))

    def attention_map(self, heads: str | Tensor = "alignment") -> tuple[Tensor, list[str]]:
        """Cross-attention of the decoded tokens (the result when finished, else row 0 so far) over the audio:
        ((n_tokens, n_audio_ctx) weights averaged over the heads, token labels). Row i is the attention of the
        query that chose token i. Computed in one uncached decoder pass, so it works for every mode."""
        if self.finished:
            sampled = list(self.result.tokens)
            if self._stop_reason() == "eot":
                sampled.append(self.tokenizer.eot)
        else:
            sampled = self.tokens
        tokens = list(self.state.tokens[0, : self.sample_begin].tolist()) + sampled
        weights = cross_attention_map(self.model, self.audio_features[0], tokens, self.sample_begin, heads)
        return weights, [token_text(self.tokenizer, t) for t in sampled]

    def __repr__(self) -> str:
        mode = f"beam_size={self.options.beam_size}" if self.is_beam_search else "greedy"
        return (
            f"DecodeSession({mode}, kv_cache={self.options.kv_cache!r}, steps={len(self.traces)}, "
            f"finished={self.finished}, text={self.text!r})"
        )


# -- building a session ------------------------------------------------------------------------------------
def decode_session(
    model: Whisper,
    audio_or_mel: Any,
    options: DecodingOptions | None = None,
    *,
    top_k: int = 5,
    window: int | None = None,
    record_activations: bool = False,
    record_attention: bool = False,
) -> DecodeSession | BatchDecodeSession:
    """A step-through decode of one 30-second window (see `window_mel` for what audio_or_mel may be).

    top_k: raw candidates reported per step. record_activations: encoder and decoder per-block statistics.
    record_attention: each step's cross-attention weights (all heads) in `StepTrace.cross_attention`.

    A list (or a dict: stream name -> audio) of windows gives a `BatchDecodeSession`: the windows decoded
    together as batched transcription decodes them, each step recording every row (batch_session.py); the
    streams are named by their index in the list (or by the dict's keys).
    """
    if isinstance(audio_or_mel, (list, tuple, dict)):
        if record_activations or record_attention:
            raise ValueError("record_activations / record_attention: a session of one window only")
        batch = BatchDecodeSession(model, options)
        items = audio_or_mel.items() if isinstance(audio_or_mel, dict) else enumerate(audio_or_mel)
        for stream, audio in items:
            batch.add(stream, audio, window=window)
        return batch
    mel, seconds = window_mel(model, audio_or_mel, window)
    return DecodeSession(
        model,
        mel,
        options,
        top_k=top_k,
        record_activations=record_activations,
        record_attention=record_attention,
        window=window,
        audio_seconds=seconds,
    )
