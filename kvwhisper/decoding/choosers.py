"""Next-token choosers (greedy / sampling, beam search) and the final ranking, with the reference's semantics.

A chooser takes the processed logits of a step and returns the extended token rows, plus, for beam search, the
source row of each new row: the decode loop reorders the KV cache with it.

openai-whisper's interfaces over the same code, for callers of `whisper.decoding`: `TokenDecoder` (`update`
returns (tokens, completed)), `GreedyDecoder`, `BeamSearchDecoder` (reorders through its `inference`
argument's `rearrange_kv_cache(source_indices)`), `SequenceRanker` and `MaximumLikelihoodRanker`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Categorical

from ..cpu import kernels


def greedy_step(
    tokens: Tensor,
    logits: Tensor,
    sum_logprobs: Tensor,
    temperature: float,
    eot: int,
    force: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One greedy / sampling step: tokens (B, T + 1) and completed (0-dim bool); sum_logprobs updated in place.

    `force` (B,): tokens to take instead of choosing. Rows that already ended keep emitting eot. Samples
    are drawn from `generator`, or from torch's global generator for None (the reference's draws: what
    `Categorical.sample` does).
    """
    if force is not None:
        next_tokens = force
    elif temperature == 0:
        next_tokens = logits.argmax(dim=-1)
    else:
        probs = Categorical(logits=logits / temperature).probs
        next_tokens = torch.multinomial(probs, 1, True, generator=generator).squeeze(1)
    logprobs = F.log_softmax(logits.float(), dim=-1)
    current = logprobs.gather(1, next_tokens[:, None]).squeeze(1)
    running = tokens[:, -1] != eot
    sum_logprobs += current * running
    next_tokens = torch.where(running, next_tokens, eot)
    tokens = torch.cat([tokens, next_tokens[:, None]], dim=-1)
    return tokens, (next_tokens == eot).all()


class GreedyChooser:
    """argmax at temperature 0, else a sample from softmax(logits / T); finished rows keep emitting eot."""

    def __init__(self, temperature: float, eot: int, generator: torch.Generator | None = None):
        self.temperature = temperature
        self.eot = eot
        self.generator = generator  # samples' source: None for torch's global generator

    def reset(self, n_audio: int) -> None:
        pass

    def update(
        self, tokens: Tensor, logits: Tensor, sum_logprobs: Tensor, force: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """tokens (B, T), logits (B, V), sum_logprobs (B,) updated in place.

        Returns tokens (B, T + 1), None (rows keep their order), completed (0-dim bool tensor).
        """
        tokens, completed = greedy_step(
            tokens, logits, sum_logprobs, self.temperature, self.eot, force, self.generator
        )
        return tokens, None, completed

    def finalize(self, tokens: Tensor, sum_logprobs: Tensor) -> tuple[list[list[Tensor]], list[list[float]]]:
        """tokens (n_audio, n_group, T) -> candidates per audio, each ending in eot, and their log-probs."""
        tokens = F.pad(tokens, (0, 1), value=self.eot)
        return [list(group) for group in tokens.cpu()], sum_logprobs.cpu().tolist()


class BeamSearchChooser:
    """Beam search as the reference does it, vectorized over beams and windows.

    Each beam proposes its beam_size + 1 best continuations; per window, the best candidates that do not end in
    eot become the new beams, and those ending in eot (ranked above the cut) are kept as finished sequences
    until `max_candidates` = round(beam_size * patience) are finished.
    """

    def __init__(self, beam_size: int, eot: int, patience: float | None = None):
        self.beam_size = beam_size
        self.eot = eot
        self.patience = patience or 1.0
        self.max_candidates = round(beam_size * self.patience)
        if self.max_candidates <= 0:
            raise ValueError(f"invalid beam size ({beam_size}) or patience ({patience})")
        self.finished: list[dict[tuple[int, ...], float]] = []
        self._earlier: Tensor | None = None  # (K, K) bool, below the diagonal: made once

    def reset(self, n_audio: int) -> None:
        self.finished = [{} for _ in range(n_audio)]

    def update(
        self, tokens: Tensor, logits: Tensor, sum_logprobs: Tensor, force: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """tokens (N*K, T), logits (N*K, V), sum_logprobs (N*K,) replaced in place by the new beams' scores.

        Returns the new rows (N*K, T + 1), their source rows (N*K,), and completed (0-dim bool tensor).
        """
        if force is not None:
            raise ValueError("forcing a token is only supported without beam search")
        if kernels.logits_apply(logits, sum_logprobs):
            return self._update_listed(tokens, logits, sum_logprobs)
        K = self.beam_size
        B = tokens.shape[0]
        N = B // K
        logprobs = F.log_softmax(logits.float(), dim=-1)  # (one fused pass: faster than topk + logsumexp)
        top_logprobs, top_tokens = logprobs.topk(K + 1)  # (B, K+1)
        scores = (sum_logprobs[:, None] + top_logprobs).view(N, K * (K + 1))
        candidates = top_tokens.view(N, K * (K + 1))
        sources = torch.arange(B, device=tokens.device).repeat_interleave(K + 1).view(N, K * (K + 1))
        valid = ~self._duplicates(tokens).repeat_interleave(K + 1, dim=1)
        order = scores.masked_fill(~valid, float("-inf")).argsort(dim=1, descending=True, stable=True)
        scores, candidates = scores.gather(1, order), candidates.gather(1, order)
        sources, valid = sources.gather(1, order), valid.gather(1, order)
        is_eot = candidates == self.eot
        live = valid & ~is_eot
        live_rank = live.cumsum(dim=1)  # live candidates up to and including this one
        keep = live & (live_rank <= K)  # exactly K per window
        newly_finished = valid & is_eot & (live_rank < K)  # visited before the K-th beam was filled
        source_rows = sources[keep]  # (N*K,) in score order, window by window
        sum_logprobs.copy_(scores[keep])
        new_tokens = torch.cat([tokens[source_rows], candidates[keep][:, None]], dim=-1)
        if newly_finished.any():
            self._record_finished(tokens, newly_finished, scores, sources)
        completed = all(len(f) >= self.max_candidates for f in self.finished)
        return new_tokens, source_rows, torch.tensor(completed)

    def _update_listed(
        self, tokens: Tensor, logits: Tensor, sum_logprobs: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """`update` on the CPU: each beam's K + 1 proposals and their scores from one kernel pass over torch's
        log-softmax (kernels.beam_top), then the same choice as above over the few candidates as Python lists
        (the same float32 scores, the same stable order), instead of topk and ~30 small tensor operations."""
        K, eot = self.beam_size, self.eot
        N = tokens.shape[0] // K
        duplicate = self._duplicates(tokens).tolist()
        logprobs = F.log_softmax(logits.float(), dim=-1)  # torch's: the reference's numbers bit for bit
        top_scores, top_tokens = kernels.beam_top(logprobs, sum_logprobs, K + 1)
        top_scores, top_tokens = top_scores.tolist(), top_tokens.tolist()
        kept_rows, kept_tokens, kept_scores = [], [], []
        for window in range(N):
            candidates = [
                (score, token, row)
                for row in range(window * K, window * K + K)
                if not duplicate[window][row - window * K]
                for score, token in zip(top_scores[row], top_tokens[row])
            ]
            candidates.sort(key=lambda c: c[0], reverse=True)  # stable: the torch path's stable argsort
            live = 0
            finished = self.finished[window]
            for score, token, row in candidates:
                if token == eot:
                    if live < K and len(finished) < self.max_candidates:
                        finished[tuple(tokens[row].tolist()) + (eot,)] = score
                    continue
                live += 1
                kept_rows.append(row)
                kept_tokens.append(token)
                kept_scores.append(score)
                if live == K:
                    break
        source_rows = torch.tensor(kept_rows)
        sum_logprobs.copy_(torch.tensor(kept_scores, dtype=torch.float32))
        new_tokens = torch.cat([tokens[source_rows], torch.tensor(kept_tokens)[:, None]], dim=-1)
        completed = all(len(f) >= self.max_candidates for f in self.finished)
        return new_tokens, source_rows, torch.tensor(completed)

    def _duplicates(self, tokens: Tensor) -> Tensor:
        """(N, K) bool: a beam identical to an earlier one of its window (all of them, at the first step). It
        proposes the same sequences again: the reference's dict keeps one copy, so only the first beam's
        proposals count."""
        K = self.beam_size
        if self._earlier is None or self._earlier.device != tokens.device:
            self._earlier = torch.ones(K, K, dtype=torch.bool, device=tokens.device).tril(diagonal=-1)
        return _duplicate_rows(tokens.view(tokens.shape[0] // K, K, -1), self._earlier)

    def _record_finished(self, tokens: Tensor, finished: Tensor, scores: Tensor, sources: Tensor) -> None:
        """Keep the finished sequences of each window, best first, up to max_candidates."""
        rows, cols = finished.nonzero(as_tuple=True)
        for window, source, score in zip(
            rows.tolist(), sources[rows, cols].tolist(), scores[rows, cols].tolist()
        ):
            kept = self.finished[window]
            if len(kept) < self.max_candidates:
                kept[tuple(tokens[source].tolist()) + (self.eot,)] = score

    def finalize(self, tokens: Tensor, sum_logprobs: Tensor) -> tuple[list[list[Tensor]], list[list[float]]]:
        """Top up windows with fewer than beam_size finished sequences from the live beams, best first."""
        sum_logprobs = sum_logprobs.cpu()
        finished = [dict(sequences) for sequences in self.finished]  # a copy: finalize can be asked again
        for i, sequences in enumerate(finished):
            if len(sequences) < self.beam_size:
                for j in list(np.argsort(sum_logprobs[i].numpy()))[::-1]:
                    sequence = tuple(tokens[i, j].tolist()) + (self.eot,)
                    sequences[sequence] = sum_logprobs[i][j].item()
                    if len(sequences) >= self.beam_size:
                        break
        candidates = [[torch.tensor(seq) for seq in sequences] for sequences in finished]
        return candidates, [list(sequences.values()) for sequences in finished]


def _duplicate_rows(rows: Tensor, earlier: Tensor) -> Tensor:
    """rows (N, K, T) -> (N, K) bool: True where a row equals an earlier row of the same window.

    earlier: (K, K) bool, True below the diagonal."""
    same = (rows[:, :, None, :] == rows[:, None, :, :]).all(dim=-1)  # (N, K, K)
    return (same & earlier).any(dim=-1)


def rank_candidates(
    tokens: list[list[Tensor]], sum_logprobs: list[list[float]], length_penalty: float | None
):
    """Index of the best candidate per window: log-prob / length, or / ((5 + length) / 6) ** alpha (Google NMT)."""

    def score(logprob: float, length: int) -> float:
        penalty = length if length_penalty is None else ((5 + length) / 6) ** length_penalty
        return logprob / penalty

    return [
        int(np.argmax([score(lp, len(t)) for lp, t in zip(lps, group)]))
        for lps, group in zip(sum_logprobs, tokens)
    ]


# ---------------------------------------------------------------------------------------------------------
# openai-whisper's interfaces (whisper.decoding), over the choosers above


class SequenceRanker:
    def rank(self, tokens: list[list[Tensor]], sum_logprobs: list[list[float]]) -> list[int]:
        """Index of the candidate to keep in each window's group of candidates."""
        raise NotImplementedError


class MaximumLikelihoodRanker(SequenceRanker):
    """The highest log-probability per length, or with Google NMT's length penalty (`rank_candidates`)."""

    def __init__(self, length_penalty: float | None):
        self.length_penalty = length_penalty

    def rank(self, tokens: list[list[Tensor]], sum_logprobs: list[list[float]]) -> list[int]:
        return rank_candidates(tokens, sum_logprobs, self.length_penalty)


class TokenDecoder:
    """Chooses the next token of each row; `update` returns (tokens (B, T + 1), completed)."""

    def reset(self) -> None:
        """Forget the previous decode's state."""

    def update(self, tokens: Tensor, logits: Tensor, sum_logprobs: Tensor) -> tuple[Tensor, Tensor | bool]:
        """tokens (B, T), logits (B, V), sum_logprobs (B,) updated in place."""
        raise NotImplementedError

    def finalize(self, tokens: Tensor, sum_logprobs: Tensor):
        """tokens (n_audio, n_group, T), sum_logprobs (n_audio, n_group) -> candidates and their log-probs."""
        raise NotImplementedError


class GreedyDecoder(TokenDecoder):
    """argmax at temperature 0, else sampling; `finalize` pads one eot and returns the tensors as they are."""

    def __init__(self, temperature: float, eot: int):
        self.temperature = temperature
        self.eot = eot

    def update(self, tokens: Tensor, logits: Tensor, sum_logprobs: Tensor) -> tuple[Tensor, Tensor]:
        return greedy_step(tokens, logits, sum_logprobs, self.temperature, self.eot)

    def finalize(self, tokens: Tensor, sum_logprobs: Tensor) -> tuple[Tensor, list[list[float]]]:
        return F.pad(tokens, (0, 1), value=self.eot), sum_logprobs.tolist()


class BeamSearchDecoder(TokenDecoder):
    """`BeamSearchChooser`, telling `inference.rearrange_kv_cache(source_indices)` the source row of each new row
    at every step (any object with that method)."""

    def __init__(self, beam_size: int, eot: int, inference: Any, patience: float | None = None):
        self.chooser = BeamSearchChooser(beam_size, eot, patience)
        self.beam_size = beam_size
        self.eot = eot
        self.inference = inference
        self.patience = self.chooser.patience
        self.max_candidates = self.chooser.max_candidates
        self.finished_sequences: list[dict[tuple[int, ...], float]] | None = None

    def reset(self) -> None:
        self.finished_sequences = None

    def update(self, tokens: Tensor, logits: Tensor, sum_logprobs: Tensor) -> tuple[Tensor, bool]:
        if tokens.shape[0] % self.beam_size != 0:
            raise ValueError(f"{tokens.shape}[0] % {self.beam_size} != 0")
        if self.finished_sequences is None:  # the first step of a decode
            self.chooser.reset(tokens.shape[0] // self.beam_size)
            self.finished_sequences = self.chooser.finished
        tokens, source_rows, completed = self.chooser.update(tokens, logits, sum_logprobs)
        self.inference.rearrange_kv_cache(source_rows.tolist())
        return tokens, bool(completed)

    def finalize(
        self, preceding_tokens: Tensor, sum_logprobs: Tensor
    ) -> tuple[list[list[Tensor]], list[list[float]]]:
        return self.chooser.finalize(preceding_tokens, sum_logprobs)
