"""The optional compiled one-token decoder step: ``DecodingOptions(compile=True)`` (CLI ``--compile``).

The eager step (``TextDecoder.forward``) is the reference; this is the same computation, the cached decode
of one new token per row with the full KV cache, handed to ``torch.compile`` as one function of plain
tensors and an int position (``dynamic=True``: one graph for every position and batch size). Only that step
is compiled: the first call of a window (the prompt and start tokens), ``want_qk`` (word timestamps,
inspection) and the ``self_only``/``none`` cache modes stay eager.

Compiling costs tens of seconds on the first use in a process (Inductor writes C++ on CPU); the compiled
function is kept per decoder for the life of the process. Logits agree with the eager step's to fp32
rounding (see tests/test_engine.py), not bit for bit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .kv_cache import LayerKV

if TYPE_CHECKING:
    from .kv_cache import KVCache
    from .model import TextDecoder

_compiled: dict[int, object] = {}  # id(decoder) -> its compiled step


def _one_token(
    decoder: TextDecoder,
    tokens: Tensor,
    position: int,
    self_k: Tensor,
    self_v: Tensor,
    cross_k: Tensor,
    cross_v: Tensor,
) -> Tensor:
    """Logits (B, 1, V) of one new token per row at `position`; writes its K/V into self_k/self_v."""
    x = decoder.token_embedding(tokens) + decoder.positional_embedding[position : position + 1]
    x = x.to(self_k.dtype)
    for i, block in enumerate(decoder.blocks):
        x, _ = block.decode(x, LayerKV(self_k[i], self_v[i], cross_k[i], cross_v[i]), position)
    return decoder.project(decoder.ln(x))


def compiled_step(decoder: TextDecoder):
    """The decoder's compiled one-token step (compiled lazily, once per decoder)."""
    fn = _compiled.get(id(decoder))
    if fn is None:
        fn = torch.compile(_one_token, dynamic=True, fullgraph=True)
        _compiled[id(decoder)] = fn
    return fn


def decode_one(decoder: TextDecoder, tokens: Tensor, cache: KVCache) -> Tensor:
    """The compiled counterpart of ``decoder(tokens, cache, last_only=True)`` for one token per row."""
    if tokens.shape[1] != 1 or not cache.has_cross:
        raise ValueError("the compiled step decodes one token per row, with the cross K/V filled")
    position = cache.position
    if position + 1 > decoder.positional_embedding.shape[0]:
        raise ValueError(f"decoder context is {decoder.positional_embedding.shape[0]} tokens")
    logits = compiled_step(decoder)(
        decoder,
        tokens,
        position,
        cache.self_k,
        cache.self_v,
        cache.cross_k,
        cache.cross_v,
    )
    cache.advance(1)
    return logits
