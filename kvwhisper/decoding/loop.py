"""Decoding 30-second windows: options, results, and the KV-cached decode loop.

The loop, per step (`DecodingTask.step`):
1. decoder forward on the tokens the cache does not hold yet (all of them on the first step, then one); the
   first step feeds one row per window (beams and samples start as copies) and projects only the
   positions it uses onto the vocabulary (<|startoftranscript|> for no-speech, and the last one);
2. no-speech probability at <|startoftranscript|> (first step only);
3. each logits processor edits the next-token logits;
4. the chooser picks the next token (greedy / sampling / beam search); beams reorder the cache;
5. stop when every row ended (eot), or the sample length or context is reached.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ..audio import CHUNK_LENGTH
from ..model.kv_cache import KVCache
from .choosers import BeamSearchChooser, GreedyChooser, rank_candidates
from .compiled import compiled
from .inputs import window_input
from .language import detect_language
from .logits import ApplyTimestampRules, FusedProcessors, LogitsProcessor, SuppressBlank, SuppressTokens
from .options import (
    DecodingOptions,
    DecodingResult,
    compression_ratio,
    suppress_token_ids,
    task_tokenizer,
    verify_options,
)

if TYPE_CHECKING:
    from ..model import Whisper


class DecoderRunner:
    """Feeds the decoder according to the cache mode and keeps the KV cache; counts what it fed.

    `group` rows per window (beams or samples) are copies of each other until the first step: that step
    feeds one row per window and copies its K/V to the others.
    """

    def __init__(
        self,
        model: Whisper,
        audio_features: Tensor,
        batch: int,
        capacity: int,
        mode: str = "full",
        compile: bool = False,
        group: int = 1,
    ):
        self.model, self.audio_features, self.mode = model, audio_features, mode
        self.compile = compile and mode == "full"
        self.cache: KVCache = model.new_cache(batch, capacity)
        if mode == "full":
            model.fill_cross(self.cache, audio_features)
        self.group = group
        self.calls = 0  # decoder calls made
        self.fed_last = 0  # tokens fed at the last call (per row)

    def logits(self, tokens: Tensor, positions: tuple[int, ...] | None = None, want_qk: bool = False):
        """tokens (B, T): every token so far. Returns logits (B, P, V) at `positions` of the tokens fed (all
        of them for None, see `TextDecoder.forward`), and qk scores."""
        if self.mode == "none":
            self.cache.reset()
        if self.mode != "full":
            self.model.fill_cross(self.cache, self.audio_features)
        new = tokens[:, self.cache.position :]
        self.fed_last = new.shape[1]
        self.calls += 1
        if self.calls > 1 or self.group == 1:
            return self.forward(new, self.cache, positions, want_qk)
        # the first call: one row per window, its K/V copied to the window's other rows
        G = self.group
        logits, qks = self.forward(new[::G], self.cache.rows(slice(None, None, G)), positions, want_qk)
        self.cache.advance(new.shape[1])
        self.cache.spread(G)
        logits = logits.repeat_interleave(G, dim=0)
        if qks is not None:
            qks = [qk.repeat_interleave(G, dim=0) for qk in qks]
        return logits, qks

    def forward(self, new_tokens: Tensor, cache: KVCache, positions: tuple[int, ...] | None, want_qk: bool):
        """The decoder call itself (an inspecting runner overrides this, not the feeding logic above)."""
        decoder = self.model.decoder
        step = None
        if self.compile and new_tokens.shape[1] == 1 and not want_qk:  # one-token steps only
            step = compiled(type(decoder).decode_at)
        return decoder(new_tokens, cache, positions=positions, want_qk=want_qk, step=step)

    def reorder(self, source_rows: Tensor) -> None:
        if self.mode != "none":
            self.cache.reorder(source_rows)


@dataclass
class DecodeState:
    """What one decode of a batch of windows carries from step to step."""

    tokens: Tensor  # (B, T) all tokens so far, B = n_audio * n_group
    sum_logprobs: Tensor  # (B,)
    runner: DecoderRunner
    no_speech_probs: Tensor | None = None  # (B,)
    step: int = 0
    completed: bool = False


@dataclass
class StepOutput:
    """What a step did (for inspection; the decode loop itself only needs the state)."""

    fed: int  # tokens fed to the decoder per row
    raw_logits: Tensor | None  # (B, V) before the processors, when inspected
    logits: Tensor  # (B, V) after the processors
    source_rows: Tensor | None  # (B,) beam search: the row each new row continues
    processor_masks: dict[
        str, Tensor
    ]  # name -> (B, V) bool newly suppressed by that processor, when inspected
    cross_qk: list[Tensor] | None  # per layer (B, H, T_fed, S), when asked


class DecodingTask:
    """Decodes a batch of windows with one set of options (the reference's structure, an explicit cache)."""

    def __init__(self, model: Whisper, options: DecodingOptions, generator: torch.Generator | None = None):
        """`generator`: where samples (temperature > 0) are drawn from; None for torch's global generator."""
        self.model = model
        self.options = verify_options(options, model)
        self.tokenizer = task_tokenizer(model, options.language, options.task)
        self.n_group = options.beam_size or options.best_of or 1
        self.n_ctx = model.dims.n_text_ctx
        self.sample_len = options.sample_len or self.n_ctx // 2
        tok = self.tokenizer
        self.sot_sequence = (
            tok.sot_sequence_including_notimestamps if options.without_timestamps else tok.sot_sequence
        )
        self.initial_tokens = self._initial_tokens()
        self.sample_begin = len(self.initial_tokens)
        self.sot_index = self.initial_tokens.index(tok.sot)
        self.processors = self._processors()
        self._fused_for: list[LogitsProcessor] | None = None  # the list `_fused_processors` was made for
        self._fused_processors: FusedProcessors | None = None
        if options.beam_size is not None:
            self.chooser = BeamSearchChooser(options.beam_size, tok.eot, options.patience)
        else:
            self.chooser = GreedyChooser(options.temperature, tok.eot, generator)

    def _fused(self) -> FusedProcessors | None:
        """The processors in one call (logits.FusedProcessors), made for the current list and remade if it
        changes; None where they cannot be."""
        if self._fused_for != self.processors:
            self._fused_for = list(self.processors)
            self._fused_processors = FusedProcessors.of(self.processors)
        return self._fused_processors

    def _greedy_argmax(self) -> bool:
        """Whether the chooser is greedy's argmax (temperature 0)."""
        return type(self.chooser) is GreedyChooser and self.chooser.temperature == 0

    def _initial_tokens(self) -> tuple[int, ...]:
        tok, opts = self.tokenizer, self.options
        tokens = list(self.sot_sequence)
        if prefix := opts.prefix:
            prefix_tokens = tok.encode(" " + prefix.strip()) if isinstance(prefix, str) else list(prefix)
            # as the reference: with the default sample_len this is [-0:], i.e. the whole prefix
            max_prefix_len = self.n_ctx // 2 - self.sample_len
            tokens += prefix_tokens[-max_prefix_len:]
        if prompt := opts.prompt:
            prompt_tokens = tok.encode(" " + prompt.strip()) if isinstance(prompt, str) else list(prompt)
            tokens = [tok.sot_prev] + prompt_tokens[-(self.n_ctx // 2 - 1) :] + tokens
        return tuple(tokens)

    def suppress_tokens(self) -> list[int]:
        tok = self.tokenizer
        suppress = suppress_token_ids(self.options.suppress_tokens)
        if -1 in suppress:
            suppress = [t for t in suppress if t >= 0] + list(tok.non_speech_tokens)
        suppress += [tok.transcribe, tok.translate, tok.sot, tok.sot_prev, tok.sot_lm]
        if tok.no_speech is not None:
            suppress.append(tok.no_speech)
        return sorted(set(suppress))

    def _processors(self) -> list[LogitsProcessor]:
        tok, opts = self.tokenizer, self.options
        processors: list[LogitsProcessor] = []
        if opts.suppress_blank:
            processors.append(SuppressBlank(tok, self.sample_begin))
        if opts.suppress_tokens:
            processors.append(SuppressTokens(self.suppress_tokens(), self.model.dims.n_vocab))
        if not opts.without_timestamps:
            precision = CHUNK_LENGTH / self.model.dims.n_audio_ctx  # 0.02 s per timestamp step
            max_initial = None
            if opts.max_initial_timestamp:
                max_initial = round(opts.max_initial_timestamp / precision)
            processors.append(ApplyTimestampRules(tok, self.sample_begin, max_initial))
        return processors

    # -- the pieces of a decode ----------------------------------------------------------------------------
    def audio_features(self, mel: Tensor) -> Tensor:
        """mel (N, n_mels, 3000) or already-encoded features (N, n_audio_ctx, n_audio_state)."""
        d = self.model.dims
        if mel.shape[-2:] == (d.n_audio_ctx, d.n_audio_state):
            return mel.to(self.model.device, self.model.dtype)
        return self.model.embed_audio(mel)

    def languages(self, audio_features: Tensor, tokens: Tensor) -> tuple[list[str], list[dict] | None]:
        """The language of each window; detected (and written after <|startoftranscript|>) when not given."""
        n_audio = audio_features.shape[0]
        if not self.model.is_multilingual:
            return ["en"] * n_audio, None
        if self.options.language is not None and self.options.task != "lang_id":
            return [self.options.language] * n_audio, None
        lang_tokens, lang_probs = detect_language(self.model, audio_features, self.tokenizer)
        if self.options.language is None:
            tokens[:, self.sot_index + 1] = lang_tokens
        languages = [max(p, key=p.get) for p in lang_probs]
        return (languages if self.options.language is None else [self.options.language] * n_audio), lang_probs

    def start(self, audio_features: Tensor, tokens: Tensor) -> DecodeState:
        """The state before the first step: rows repeated per group, a fresh cache."""
        tokens = tokens.repeat_interleave(self.n_group, dim=0).to(audio_features.device)
        capacity = min(self.n_ctx, tokens.shape[1] + self.sample_len)
        runner = DecoderRunner(
            self.model,
            audio_features,
            tokens.shape[0],
            capacity,
            self.options.kv_cache,
            self.options.compile,
            group=self.n_group,
        )
        self.chooser.reset(audio_features.shape[0])
        sum_logprobs = torch.zeros(tokens.shape[0], device=audio_features.device)
        return DecodeState(tokens, sum_logprobs, runner)

    def step(
        self, state: DecodeState, force: Tensor | None = None, inspect: bool = False, want_qk: bool = False
    ):
        """One decode step (see the module docstring); returns a StepOutput."""
        no_speech = self.tokenizer.no_speech if state.step == 0 else None
        # only the positions used are projected onto the vocabulary: <|startoftranscript|> and the last one
        positions = (-1,) if no_speech is None else (self.sot_index, -1)
        logits, qk = state.runner.logits(state.tokens, positions=positions, want_qk=want_qk)  # 1.
        return self.choose(state, logits, qk, force=force, inspect=inspect)

    def choose(
        self,
        state: DecodeState,
        logits: Tensor,
        qk: list[Tensor] | None = None,
        *,
        force: Tensor | None = None,
        inspect: bool = False,
    ) -> StepOutput:
        """Steps 2 to 5 on the decoder's logits (B, P, V) at the step's positions (<|startoftranscript|>
        first on the first step, the last fed one last): what `step` does after the decoder call, and what a
        batch of windows decoded together (decoding/batch.py) does for each of them."""
        if state.step == 0 and self.tokenizer.no_speech is not None:  # 2.
            state.no_speech_probs = logits[:, 0].softmax(dim=-1)[:, self.tokenizer.no_speech]
        logits = logits[:, -1]
        raw = logits.clone() if inspect else None
        masks = {}
        fused = None if inspect else self._fused()
        choice = force
        if fused is not None and fused.applies(logits, state.tokens):  # 3. in one call (logits.py)
            argmax = fused.apply(logits, state.tokens, argmax=force is None and self._greedy_argmax())
            if argmax is not None:  # greedy at temperature 0 takes the argmax found with them
                choice = argmax
        else:
            for processor in self.processors:  # 3.
                before = logits.isinf() if inspect else None
                processor.apply(logits, state.tokens)
                if inspect:
                    masks[processor.name] = logits.isinf() & ~before
        tokens, sources, completed = self.chooser.update(
            state.tokens, logits, state.sum_logprobs, choice
        )  # 4.
        if sources is not None:
            state.runner.reorder(sources)
        state.tokens, state.step = tokens, state.step + 1
        state.completed = (
            bool(completed) or tokens.shape[-1] > self.n_ctx or state.step >= self.sample_len
        )  # 5.
        return StepOutput(state.runner.fed_last, raw, logits, sources, masks, qk)

    def finish(
        self, state: DecodeState, audio_features: Tensor, languages, language_probs
    ) -> list[DecodingResult]:
        """Rank the candidates of each window and build the results."""
        tok, n_audio = self.tokenizer, audio_features.shape[0]
        tokens = state.tokens.reshape(n_audio, self.n_group, -1)
        sum_logprobs = state.sum_logprobs.reshape(n_audio, self.n_group)
        candidates, logprobs = self.chooser.finalize(tokens, sum_logprobs)
        candidates = [
            [t[self.sample_begin : int((t == tok.eot).nonzero()[0, 0])] for t in s] for s in candidates
        ]
        selected = rank_candidates(candidates, logprobs, self.options.length_penalty)
        no_speech = state.no_speech_probs
        no_speech = no_speech[:: self.n_group].tolist() if no_speech is not None else [np.nan] * n_audio
        results = []
        for i in range(n_audio):
            chosen = candidates[i][selected[i]].tolist()
            text = tok.decode(chosen).strip()
            results.append(
                DecodingResult(
                    audio_features=audio_features[i],
                    language=languages[i],
                    language_probs=language_probs[i] if language_probs else None,
                    tokens=chosen,
                    text=text,
                    avg_logprob=logprobs[i][selected[i]] / (len(chosen) + 1),
                    no_speech_prob=no_speech[i],
                    temperature=self.options.temperature,
                    compression_ratio=compression_ratio(text),
                )
            )
        return results

    @torch.no_grad()
    def run(self, mel: Tensor) -> list[DecodingResult]:
        audio_features = self.audio_features(mel)  # encoder: once per window
        n_audio = audio_features.shape[0]
        tokens = torch.tensor([self.initial_tokens]).repeat(n_audio, 1)
        languages, language_probs = self.languages(audio_features, tokens)
        if self.options.task == "lang_id":
            return [
                DecodingResult(audio_features=f, language=lang, language_probs=p)
                for f, lang, p in zip(audio_features, languages, language_probs)
            ]
        state = self.start(audio_features, tokens)
        while not state.completed:
            self.step(state)
        return self.finish(state, audio_features, languages, language_probs)


@torch.no_grad()
def decode(
    model: Whisper,
    mel: Tensor,
    options: DecodingOptions | None = None,
    *,
    generator: torch.Generator | None = None,
    **kwargs,
):
    """Decode 30-second window(s): mel (n_mels, 3000) -> DecodingResult, or (N, n_mels, 3000) -> list of N
    (a tensor or a numpy array; audio features (n_audio_ctx, n_audio_state) are taken in place of a mel).

    Options may be given as a DecodingOptions and/or as keyword arguments overriding its fields. Samples
    (temperature > 0) are drawn from `generator` (None: torch's global generator, as the reference).
    """
    options = replace(options or DecodingOptions(), **kwargs)
    task = DecodingTask(model, options, generator)  # options first: a bad option is reported before any input
    batch, single = window_input(mel, model)
    results = task.run(batch)
    return results[0] if single else results
