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


def step_breakdown(model, audio_features, options, runs: int = 1) -> dict:
    """Milliseconds per step spent in each part of a decode step (means over `runs` forced decodes).

    Parts: decoder self-attention / cross-attention (their residual adds included) / MLP with its LayerNorm and
    residual add (all layers), the rest of the blocks (the attention LayerNorms), token + position embedding, final LayerNorm, output projection and glue (the decoder
    forward minus all of those: mostly the (B, C) x (C, n_vocab) logits matmul), the cache-mode work around
    the decoder (cross K/V refills when not "full"), each logits processor, the chooser, cache reordering
    (beam search) and the step's own bookkeeping (everything else in `DecodingTask.step`). The model is
    left as it was.
    """
    import torch

    from ..decoding import DecodingTask

    sync = _sync(model.device)
    timers = _Timers(sync)
    dec = model.decoder
    step_total, n_steps, start_total = 0.0, 0, 0.0
    try:
        for block in dec.blocks:
            timers.wrap(block, "decode", "blocks")
            timers.wrap(block.attn, "cached", "self_attention")
            timers.wrap(block.cross_attn, "cross", "cross_attention")
            timers.wrap(block, "feed_forward", "mlp")
        timers.wrap(dec, "forward", "decoder_forward")
        timers.wrap(dec.token_embedding, "forward", "embedding")
        timers.wrap(dec.ln, "forward", "final_layernorm")
        model_wraps = len(timers._patched)
        with torch.no_grad():
            for _ in range(runs):
                task = DecodingTask(model, options)
                for p in task.processors:
                    timers.wrap(p, "apply", f"processor:{p.name}")
                timers.wrap(task.chooser, "update", "chooser")
                tokens = torch.tensor([task.initial_tokens])
                sync()
                t0 = time.perf_counter()
                state = task.start(audio_features, tokens)
                sync()
                start_total += time.perf_counter() - t0
                timers.wrap(state.runner, "logits", "runner_logits")
                timers.wrap(state.runner, "reorder", "cache_reorder")
                while not state.completed:
                    t0 = time.perf_counter()
                    task.step(state)
                    sync()
                    step_total += time.perf_counter() - t0
                    n_steps += 1
                timers.restore(keep=model_wraps)  # this task's wraps
    finally:
        timers.restore()

    t = timers.total

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
    parts = {
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
    return {
        "mode": options.kv_cache,
        "beam_size": options.beam_size or 1,
        "steps": n_steps,
        "step_ms": ms(step_total),
        "start_ms": 1000 * start_total / max(runs, 1),
        "parts_ms": parts,
    }
