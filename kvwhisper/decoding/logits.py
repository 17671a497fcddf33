"""Logits processors, applied in the reference's order: suppress blank, suppress tokens, timestamp rules.

Each one edits next-token logits (B, V) in place given all tokens so far (B, T) (prompt, start-of-transcript
sequence and prefix included). They are vectorized across the batch: masks are built with tensor ops, with no
per-row Python loop and no `.item()`, so a step never waits on the device.

Constructors take the arguments of openai-whisper's `whisper.decoding` filters of the same names, whose
`LogitFilter` base class is `LogitsProcessor` here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..cpu import kernels

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer

NEG_INF = float("-inf")


def fill_rows(view: Tensor, rows: Tensor, value: float = NEG_INF) -> None:
    """`view[r] = value` for every row r where `rows` (B,) is True.

    On CPU it skips the whole-row pass when no row is set (reading the flag costs nothing there; on a GPU it
    would wait for the device, so there the masked fill always runs).
    """
    if view.device.type == "cpu" and not bool(rows.any()):
        return
    view.masked_fill_(rows[:, None], value)


class LogitsProcessor:
    name = "processor"

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        """logits: (B, V) fp32, edited in place; tokens: (B, T) every token in the context so far."""
        raise NotImplementedError


LogitFilter = LogitsProcessor  # openai-whisper's name for the base class


class SuppressBlank(LogitsProcessor):
    """At the first sampled position, forbid a blank (" ") and end-of-text: the transcript must start."""

    name = "suppress_blank"

    def __init__(self, tokenizer: Tokenizer, sample_begin: int):
        self.tokenizer = tokenizer
        self.sample_begin = sample_begin
        # " " holds no special token: not scanning for them skips compiling their pattern (start-up time)
        self.blank_tokens = tokenizer.encode(" ", disallowed_special=()) + [tokenizer.eot]

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        if tokens.shape[1] == self.sample_begin:
            logits[:, self.blank_tokens] = NEG_INF


class SuppressTokens(LogitsProcessor):
    """Forbid a fixed set of tokens at every step (an index built once). With `n_vocab`, ids are checked."""

    name = "suppress_tokens"

    def __init__(self, suppress_tokens: Sequence[int], n_vocab: int | None = None):
        self.suppress_tokens = list(suppress_tokens)
        ids = sorted(set(self.suppress_tokens))
        if ids and (ids[0] < 0 or (n_vocab is not None and ids[-1] >= n_vocab)):
            below = "" if n_vocab is None else f" and below n_vocab = {n_vocab}"
            raise ValueError(f"suppress_tokens must be token ids >= 0{below}, got {ids[0]}..{ids[-1]}")
        self.index = torch.tensor(ids, dtype=torch.long)  # built once, moved once

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        if self.index.device != logits.device:
            self.index = self.index.to(logits.device)
        logits.index_fill_(1, self.index, NEG_INF)  # touches the ~90 suppressed columns, not the vocabulary


class ApplyTimestampRules(LogitsProcessor):
    """Whisper's timestamp grammar.

    1. timestamps come in pairs: after one timestamp that closes a pair (or opens the text), a text token or
       end-of-text must follow; after a lone timestamp, another timestamp (or end-of-text) must follow;
    2. timestamps never decrease (a closing timestamp may equal its opening one);
    3. the first sampled token is a timestamp, at most `max_initial_timestamp_index` steps of 0.02 s;
    4. when the total probability of all timestamps beats every single text token, a timestamp is forced.
    `<|notimestamps|>` is never sampled.
    """

    name = "timestamp_rules"

    def __init__(self, tokenizer: Tokenizer, sample_begin: int, max_initial_timestamp_index: int | None):
        self.tokenizer = tokenizer
        self.timestamp_begin = tokenizer.timestamp_begin
        self.eot = tokenizer.eot
        self.no_timestamps = tokenizer.no_timestamps
        self.sample_begin = sample_begin
        self.max_initial_timestamp_index = max_initial_timestamp_index
        self.forced = None  # (B,) bool of the last call: rows where rule 4 forced a timestamp

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        tb = self.timestamp_begin
        if self.no_timestamps is not None:
            logits[:, self.no_timestamps] = NEG_INF
        sampled = tokens[:, self.sample_begin :]  # (B, n)
        if sampled.shape[1] > 0:
            self._pairs_and_order(logits, sampled)
        if tokens.shape[1] == self.sample_begin:  # rule 3
            logits[:, :tb] = NEG_INF
            if self.max_initial_timestamp_index is not None:
                logits[:, tb + self.max_initial_timestamp_index + 1 :] = NEG_INF
        # rule 4: compare the timestamps' total log-probability with the best text token's. Both sides are
        # log-probabilities less the same log-normalizer, so the logits are compared directly: the
        # reference's log_softmax over the vocabulary is skipped (same decision, up to float rounding).
        text = logits[:, :tb]
        self.forced = logits[:, tb:].logsumexp(dim=-1) > text.amax(dim=-1)
        fill_rows(text, self.forced)

    def _pairs_and_order(self, logits: Tensor, sampled: Tensor) -> None:
        """Rules 1 and 2 for rows with n >= 1 sampled tokens: (B, V) logits, (B, n) sampled tokens."""
        tb, n = self.timestamp_begin, sampled.shape[1]
        is_ts = sampled >= tb  # (B, n)
        last_ts = is_ts[:, -1]
        penultimate_ts = is_ts[:, -2] if n >= 2 else torch.ones_like(last_ts)
        closing = last_ts & penultimate_ts  # a pair just closed (or the first token was one): text next
        opening = last_ts & ~penultimate_ts  # a lone timestamp: another timestamp (or eot) next
        fill_rows(logits[:, tb:], closing)
        fill_rows(logits[:, : self.eot], opening)
        # rule 2: forbid timestamps below the last one (below or equal, unless it is closing a pair now)
        positions = torch.arange(n, device=sampled.device).expand_as(sampled)
        last_index = torch.where(is_ts, positions, -1).max(dim=1).values  # (B,), -1 when none
        last_value = sampled.gather(1, last_index.clamp(min=0)[:, None]).squeeze(1)
        upper = torch.where(opening, last_value, last_value + 1) - tb  # forbid timestamp steps [0, upper)
        upper = torch.where(last_index >= 0, upper, 0)  # nothing to forbid without a timestamp
        steps = torch.arange(logits.shape[-1] - tb, device=logits.device)  # only the timestamp columns
        logits[:, tb:].masked_fill_(steps < upper[:, None], NEG_INF)


class FusedProcessors:
    """The processors above applied in one C call per step on the CPU (kvwhisper.cpu.kernels.logits_step),
    and greedy's argmax with them: the same masks, decided by the same rules; what a step costs in torch
    operations (~50 small ones over the vocabulary) becomes one pass. `of` builds it for a task's list when
    every processor is one of these classes itself (not a subclass), in their order; a step that is inspected
    runs the processors one by one (decoding/loop.py)."""

    def __init__(
        self, blank: SuppressBlank | None, suppress: SuppressTokens | None, rules: ApplyTimestampRules | None
    ):
        known = rules if rules is not None else blank  # one of them at least (`of`)
        self.rules_processor = rules
        self.blank = torch.tensor(blank.blank_tokens if blank else [], dtype=torch.long)
        self.suppress = torch.tensor(suppress.suppress_tokens if suppress else [], dtype=torch.long)
        none = -1  # the kernel's "none"
        self.rules = (
            known.sample_begin,
            none if rules is None else rules.timestamp_begin,
            known.tokenizer.eot,
            none if rules is None or rules.no_timestamps is None else rules.no_timestamps,
            none
            if rules is None or rules.max_initial_timestamp_index is None
            else rules.max_initial_timestamp_index,
        )

    @classmethod
    def of(cls, processors: Sequence[LogitsProcessor]) -> FusedProcessors | None:
        """For a list of at most one each of SuppressBlank, SuppressTokens and ApplyTimestampRules in that order
        with one sample_begin, where the kernels run here; None otherwise."""
        kinds = [type(p) for p in processors]
        order = [k for k in (SuppressBlank, SuppressTokens, ApplyTimestampRules) if k in kinds]
        if kinds != order or not kernels.available():
            return None
        found = {type(p): p for p in processors}
        blank, suppress, rules = (found.get(k) for k in (SuppressBlank, SuppressTokens, ApplyTimestampRules))
        if blank is None and rules is None:
            return None  # the kernel's sample_begin and eot come from these
        if blank is not None and rules is not None and blank.sample_begin != rules.sample_begin:
            return None
        return cls(blank, suppress, rules)

    def applies(self, logits: Tensor, tokens: Tensor) -> bool:
        return tokens.dtype is torch.long and kernels.logits_apply(logits, tokens)

    def apply(self, logits: Tensor, tokens: Tensor, argmax: bool = False) -> Tensor | None:
        """The processors on logits (B, V) in place (call where `applies`); with `argmax`, returns each row's
        argmax after them (B,), greedy's choice at temperature 0."""
        B = logits.shape[0]
        forced = torch.zeros(B, dtype=torch.uint8)
        next_tokens = torch.empty(B, dtype=torch.long) if argmax else None
        kernels.logits_step(logits, tokens, forced, self.rules, self.blank, self.suppress, next_tokens)
        if self.rules_processor is not None:
            self.rules_processor.forced = forced.view(torch.bool)
        return next_tokens
