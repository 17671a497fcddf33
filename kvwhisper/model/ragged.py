"""One decode step of several windows together, each with its own KV cache (continuous batching).

The windows may be at different positions, with prompts of different lengths and different numbers of rows
(beams, samples): every product with a weight (q/k/v, the attention outputs, the MLP, the output projection)
runs once over all their rows, and each window's attention runs alone over its own cache, so no padding exists
for a row to attend to. A row's result is what `TextDecoder.forward` gives it alone wherever the products
compute each row on its own (the CPU kernels do: kvwhisper.cpu), and to the products' rounding elsewhere.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .kv_cache import KVCache
from .network import TextDecoder


def step_windows(decoder: TextDecoder, tokens: list[Tensor], caches: list[KVCache]) -> list[Tensor]:
    """Feed one new token per row: tokens[j] (B_j, 1) at `caches[j].position`, writing their K/V there.

    Returns each window's logits (B_j, 1, n_vocab) in fp32, as `decoder(tokens[j], caches[j])` would.
    """
    if len(tokens) != len(caches) or not tokens:
        raise ValueError("one (B_j, 1) token tensor per cache, at least one")
    for t, cache in zip(tokens, caches):
        if t.shape[1] != 1 or t.shape[0] != cache.batch or not cache.has_cross:
            raise ValueError(f"tokens {tuple(t.shape)} for a cache of {cache.batch} rows: one token per row")
        if cache.position + 1 > decoder.positional_embedding.shape[0]:
            raise ValueError(f"decoder context is {decoder.positional_embedding.shape[0]} tokens")
    bounds = [0]
    for t in tokens:
        bounds.append(bounds[-1] + t.shape[0])
    rows = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
    x = torch.cat([decoder.embed(t, cache.position) for t, cache in zip(tokens, caches)])  # (B, 1, C)
    for i, block in enumerate(decoder.blocks):
        y = block.attn.ops.block_step(block, x, [(r, c.layer(i), c.position) for r, c in zip(rows, caches)])
        if y is not None:  # the whole block at once, as a decoder call alone runs it
            x = y
            continue
        # self-attention: each window over its own cache, after writing its new K/V at its position
        attn = block.attn
        q, k, v = attn.project_qkv(block.attn_ln(x))  # (B, H, 1, D)
        outs = []
        for r, cache in zip(rows, caches):
            p, k_buf, v_buf = cache.position, cache.self_k[i], cache.self_v[i]
            k_buf[:, :, p : p + 1] = k[r]
            v_buf[:, :, p : p + 1] = v[r]
            outs.append(attn.ops.attend(q[r], k_buf[:, :, : p + 1], v_buf[:, :, : p + 1]))
        x = attn.out(attn.merge(torch.cat(outs)), add=x)
        # cross-attention: each window's rows over its own audio K/V
        cross = block.cross_attn
        q = cross.query(block.cross_attn_ln(x))  # (B, 1, C)
        outs = []
        for r, cache in zip(rows, caches):
            ck, cv = cache.cross_k[i], cache.cross_v[i]
            N, H, _, D = ck.shape
            qr = q[r].view(N, -1, H, D).transpose(1, 2)  # (N, H, G, D): a window's rows as its queries
            outs.append(cross.ops.attend(qr, ck, cv).transpose(1, 2).reshape(q[r].shape))
        x = cross.out(torch.cat(outs), add=x)
        x = block.feed_forward(x)
    logits = decoder.project(decoder.ln(x))
    for cache in caches:
        cache.advance(1)
    return [logits[r] for r in rows]
