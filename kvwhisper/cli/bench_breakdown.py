"""`kvwhisper bench --breakdown`: where the time of a cached ("full") decode step goes.

Wraps the decoder's parts (blocks: self-attention, cross-attention, MLP; output projection), the logits
processors, the chooser and the cache reordering with timers (removed afterwards), runs decodes, and splits
each step's time among them. `benchmarks/peers.py --profile` uses the same timers on a whole transcription.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def _sync(device) -> Callable[[], None]:
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


class _Timers:
    """Wraps callables on given objects (instance attributes, restored afterwards) and sums their time."""

    def __init__(self, sync: Callable[[], None]):
        self.sync = sync
        self.total: dict[str, float] = {}
        self._patched: list[tuple[object, str, bool, Callable]] = []

    def wrap(self, obj, attr: str, name: str) -> None:
        inner = getattr(obj, attr)
        had_own = attr in getattr(obj, "__dict__", {})

        def timed(*args, **kwargs):
            self.sync()
            t0 = time.perf_counter()
            out = inner(*args, **kwargs)
            self.sync()
            self.total[name] = self.total.get(name, 0.0) + time.perf_counter() - t0
            return out

        setattr(obj, attr, timed)
        self._patched.append((obj, attr, had_own, inner))

    def restore(self, keep: int = 0) -> None:
        """Undo the wraps made after the first `keep` ones (all of them by default)."""
        while len(self._patched) > keep:
            obj, attr, had_own, inner = self._patched.pop()
            if had_own:
                setattr(obj, attr, inner)
            else:
                delattr(obj, attr)


def _wrap_decoder(timers: _Timers, decoder) -> None:
    """Time the decoder's blocks (self-attention, cross-attention and MLP inside each), its whole forward, the
    token embedding and the final LayerNorm."""
    for block in decoder.blocks:
        timers.wrap(block, "decode", "blocks")
        timers.wrap(block.attn, "cached", "self_attention")
        timers.wrap(block.cross_attn, "cross", "cross_attention")
        timers.wrap(block, "feed_forward", "mlp")
    timers.wrap(decoder, "forward", "decoder_forward")
    timers.wrap(decoder.token_embedding, "forward", "embedding")
    timers.wrap(decoder.ln, "forward", "final_layernorm")


def timed_start(task, audio_features, sync: Callable[[], None]):
    """`task.start` on the window's prompt, timed: (its state, seconds)."""
    import torch

    tokens = torch.tensor([task.initial_tokens])
    sync()
    t0 = time.perf_counter()
    state = task.start(audio_features, tokens)
    sync()
    return state, time.perf_counter() - t0


def _timed_decode(model, audio_features, options, timers: _Timers) -> tuple[float, float, int]:
    """One decode with the task's logits processors, chooser and cache runner timed too (their wraps undone
    afterwards): (seconds in `DecodingTask.start`, seconds in the steps, steps)."""

    from ..decoding import DecodingTask

    sync = timers.sync
    keep = len(timers._patched)
    task = DecodingTask(model, options)
    for p in task.processors:
        timers.wrap(p, "apply", f"processor:{p.name}")
    timers.wrap(task.chooser, "update", "chooser")
    state, start_s = timed_start(task, audio_features, sync)
    timers.wrap(state.runner, "logits", "runner_logits")
    timers.wrap(state.runner, "reorder", "cache_reorder")
    steps_s, n_steps = 0.0, 0
    while not state.completed:
        t0 = time.perf_counter()
        task.step(state)
        sync()
        steps_s += time.perf_counter() - t0
        n_steps += 1
    timers.restore(keep=keep)
    return start_s, steps_s, n_steps


def _parts_ms(t: dict[str, float], step_total: float, n_steps: int) -> dict[str, float]:
    """Milliseconds per step of each part, from the timers' totals (parts that hold others net of them)."""

    def ms(x: float) -> float:
        return 1000 * x / max(n_steps, 1)

    blocks = t.get("blocks", 0.0)
    inner = t.get("self_attention", 0.0) + t.get("cross_attention", 0.0) + t.get("mlp", 0.0)
    forward = t.get("decoder_forward", 0.0)
    head = forward - blocks - t.get("embedding", 0.0) - t.get("final_layernorm", 0.0)
    processors = {k: v for k, v in t.items() if k.startswith("processor:")}
    accounted = (
        t.get("runner_logits", 0.0)
        + sum(processors.values())
        + t.get("chooser", 0.0)
        + t.get("cache_reorder", 0.0)
    )
    return {
        "self_attention": ms(t.get("self_attention", 0.0)),
        "cross_attention": ms(t.get("cross_attention", 0.0)),
        "mlp": ms(t.get("mlp", 0.0)),
        "block_layernorms_residuals": ms(blocks - inner),
        "embedding": ms(t.get("embedding", 0.0)),
        "final_layernorm": ms(t.get("final_layernorm", 0.0)),
        "output_projection_and_glue": ms(head),
        "cache_mode_work": ms(t.get("runner_logits", 0.0) - forward),
        **{k: ms(v) for k, v in processors.items()},
        "chooser": ms(t.get("chooser", 0.0)),
        "cache_reorder": ms(t.get("cache_reorder", 0.0)),
        "step_bookkeeping": ms(step_total - accounted),
    }


def step_breakdown(model, audio_features, options, runs: int = 1) -> dict:
    """Milliseconds per step spent in each part of a decode step (means over `runs` forced decodes).

    Parts: decoder self-attention / cross-attention (their residual adds included) / MLP with its LayerNorm and
    residual add (all layers), the rest of the blocks (the attention LayerNorms), token + position embedding,
    final LayerNorm, output projection and glue (the decoder forward minus all of those: mostly the (B, C) x
    (C, n_vocab) logits matmul), the cache-mode work around the decoder (cross K/V refills when not "full"),
    each logits processor, the chooser, cache reordering (beam search) and the step's own bookkeeping
    (everything else in `DecodingTask.step`). The model is left as it was.
    """
    import torch

    timers = _Timers(_sync(model.device))
    start_total, step_total, n_steps = 0.0, 0.0, 0
    try:
        _wrap_decoder(timers, model.decoder)
        with torch.no_grad():
            for _ in range(runs):
                start_s, steps_s, steps = _timed_decode(model, audio_features, options, timers)
                start_total += start_s
                step_total += steps_s
                n_steps += steps
    finally:
        timers.restore()
    return {
        "mode": options.kv_cache,
        "beam_size": options.beam_size or 1,
        "steps": n_steps,
        "step_ms": 1000 * step_total / max(n_steps, 1),
        "start_ms": 1000 * start_total / max(runs, 1),
        "parts_ms": _parts_ms(timers.total, step_total, n_steps),
    }
