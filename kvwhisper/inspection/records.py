"""What one decode step did, as plain frozen records (`StepTrace` and its parts), JSON-able with `to_dict()`.

Built by `DecodeSession` (session.py); `apply_processors` / `describe_processors` run and describe the logits
processors of a step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import Tensor

from ..decoding.logits import ApplyTimestampRules, LogitsProcessor

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer

STOP_REASONS = ("eot", "sample_len", "context_full")


@dataclass(frozen=True)
class Candidate:
    """A token with its log-probability (raw or after the processors, as the field using it says)."""

    id: int
    text: str
    logprob: float

    def to_dict(self) -> dict:
        return {"id": self.id, "text": self.text, "logprob": _num(self.logprob)}


@dataclass(frozen=True)
class ProcessorAction:
    """What one logits processor did to the logits of a step (for the row the trace follows)."""

    name: str  # "suppress_blank", "suppress_tokens", "timestamp_rules"
    suppressed: int  # tokens it newly set to -inf
    suppressed_top: tuple[Candidate, ...]  # those among the raw top-k (raw log-probs)
    forced_timestamp: bool | None = None  # timestamp_rules: rule 4 forced a timestamp (None for the others)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "suppressed": self.suppressed,
            "suppressed_top": [c.to_dict() for c in self.suppressed_top],
            "forced_timestamp": self.forced_timestamp,
        }


@dataclass(frozen=True)
class Hypothesis:
    """One row of a beam search (or of best_of sampling) after a step."""

    row: int
    source: int  # the row (before the step) it continues
    token: Candidate  # its new token, with the log-prob after the processors
    score: float  # its cumulative log-prob
    text: str  # its sampled tokens so far, timestamps included

    def to_dict(self) -> dict:
        return {
            "row": self.row,
            "source": self.source,
            "token": self.token.to_dict(),
            "score": _num(self.score),
            "text": self.text,
        }


@dataclass(frozen=True)
class StepTrace:
    """Everything one decode step did. Row-level fields follow the best row (row 0 after the step: for beam
    search, the best live beam; its raw logits are those of the row it came from, `beams[0].source`)."""

    step: int  # 0-based
    position: int  # cache position the fed tokens were written at (0 on every step without a cache)
    fed: tuple[
        int, ...
    ]  # token ids fed to the decoder (the prompt at step 0; then 1, or everything uncached)
    fed_text: tuple[str, ...]
    cache_self: tuple[int, ...]  # self-attention tokens held per decoder layer, after the step
    cache_cross: int  # cross-attention audio positions held (0 when recomputed each step and not kept)
    top_k: tuple[Candidate, ...]  # the raw logits' top-k, before any processor
    processors: tuple[ProcessorAction, ...]
    token: Candidate  # the token taken, with its log-prob after the processors
    forced: bool  # the token was forced by `step(force=...)`
    cumulative_logprob: float  # sum of the row's log-probs so far (the beam score for beam search)
    finished: bool  # the decode is over
    stop_reason: str | None  # "eot", "sample_len" or "context_full" when finished
    time_ms: float  # wall time of the decode step itself (forward, processors, chooser)
    beams: tuple[Hypothesis, ...] | None = None  # every row, for beam search and best_of sampling
    beam_finished: tuple[tuple[str, float], ...] | None = None  # beam search: finished (text, score) so far
    no_speech_prob: float | None = (
        None  # step 0: P(no speech) at <|startoftranscript|>, when the model has it
    )
    activations: tuple[dict, ...] | None = None  # record_activations: decoder stats (last fed position)
    cross_attention: Tensor | None = field(
        default=None, repr=False, compare=False
    )  # (L, H, S) record_attention
    attention_peak_s: float | None = None  # record_attention: where the alignment heads look most, in seconds

    def to_dict(self) -> dict:
        """A JSON-able dict (non-finite log-probs become null); the attention tensor is left out."""
        return {
            "step": self.step,
            "position": self.position,
            "fed": list(self.fed),
            "fed_text": list(self.fed_text),
            "n_fed": len(self.fed),
            "cache": {"self": list(self.cache_self), "cross": self.cache_cross},
            "top_k": [c.to_dict() for c in self.top_k],
            "processors": [p.to_dict() for p in self.processors],
            "token": self.token.to_dict(),
            "forced": self.forced,
            "cumulative_logprob": _num(self.cumulative_logprob),
            "finished": self.finished,
            "stop_reason": self.stop_reason,
            "time_ms": round(self.time_ms, 3),
            "beams": None if self.beams is None else [b.to_dict() for b in self.beams],
            "beam_finished": None
            if self.beam_finished is None
            else [{"text": t, "score": _num(s)} for t, s in self.beam_finished],
            "no_speech_prob": _num(self.no_speech_prob),
            "activations": None if self.activations is None else [dict(a) for a in self.activations],
            "attention_peak_s": self.attention_peak_s,
        }


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def token_text(tokenizer: Tokenizer, token: int) -> str:
    """One token as text: specials and timestamps rendered ("<|endoftext|>", "<|1.08|>")."""
    try:
        return tokenizer.decode_with_timestamps([int(token)])
    except Exception:  # an id the tokenizer has no bytes for
        return f"<#{int(token)}>"


# -- the processors, one at a time ---------------------------------------------------------------------------
def apply_processors(
    processors: list[LogitsProcessor], logits: Tensor, tokens: Tensor
) -> tuple[dict[str, Tensor], Tensor | None]:
    """Apply the processors in order to logits (B, V) in place, as `DecodingTask.step` does.

    Returns (name -> (B, V) bool of the tokens each one newly set to -inf, the timestamp rules' `forced`).
    """
    masks, forced = {}, None
    for processor in processors:
        before = logits.isinf()
        processor.apply(logits, tokens)
        masks[processor.name] = logits.isinf() & ~before
        if isinstance(processor, ApplyTimestampRules):
            forced = processor.forced
    return masks, forced


def describe_processors(
    processors: list[LogitsProcessor],
    masks: dict[str, Tensor],
    forced: Tensor | None,
    row: int,
    top_k: tuple[Candidate, ...],
) -> tuple[ProcessorAction, ...]:
    """What each processor did to `row`: how many tokens it suppressed, which of the raw top-k, and (timestamp
    rules) whether it forced a timestamp."""
    actions = []
    for processor in processors:
        mask = masks.get(processor.name)
        if mask is None:
            continue
        mask = mask[row]
        suppressed_top = tuple(c for c in top_k if bool(mask[c.id]))
        is_ts = isinstance(processor, ApplyTimestampRules)
        actions.append(
            ProcessorAction(
                name=processor.name,
                suppressed=int(mask.sum()),
                suppressed_top=suppressed_top,
                forced_timestamp=bool(forced[row]) if is_ts and forced is not None else None,
            )
        )
    return tuple(actions)
