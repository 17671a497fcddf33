"""Looking inside a forward pass: activation statistics per block, and cross-attention weights.

No forward hooks: the encoder and the decoder are run here block by block, mirroring
`AudioEncoder.forward` and `TextDecoder.forward` op for op (same modules, same order, same dtypes), so the
outputs are the model's own and a decode that records statistics samples exactly the tokens of one that does
not. If those forwards change, these mirrors must change with them (tests/test_session.py checks that the
outputs match).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from .decoding import DecoderRunner
from .model import select_positions

if TYPE_CHECKING:
    from .kv_cache import KVCache
    from .model import AudioEncoder, TextDecoder, Whisper


def tensor_stats(name: str, x: Tensor) -> dict:
    """{"name", "mean", "std", "absmax"} of a tensor, computed in fp32 over all its elements."""
    x = x.detach().float()
    return {
        "name": name,
        "mean": x.mean().item(),
        "std": x.std(unbiased=False).item(),
        "absmax": x.abs().max().item(),
    }


@torch.no_grad()
def encode_with_stats(encoder: AudioEncoder, mel: Tensor) -> tuple[Tensor, list[dict]]:
    """`AudioEncoder.forward` run block by block: audio features (N, n_audio_ctx, n_audio_state) and the stats
    of the stem convolutions, each block's output (the residual stream) and the final LayerNorm."""
    stats = []
    x = F.gelu(encoder.conv1(mel))
    stats.append(tensor_stats("encoder.conv1", x))
    x = F.gelu(encoder.conv2(x))
    x = x.permute(0, 2, 1)
    if x.shape[1:] != encoder.positional_embedding.shape:
        raise ValueError(
            f"mel of {mel.shape[-1]} frames gives {x.shape[1]} positions; "
            f"the encoder needs {encoder.positional_embedding.shape[0]} (pad or trim to 30 s)"
        )
    x = (x + encoder.positional_embedding).to(x.dtype)
    stats.append(tensor_stats("encoder.conv2+pos", x))
    for i, block in enumerate(encoder.blocks):
        x = block.encode(x)
        stats.append(tensor_stats(f"encoder.blocks.{i}", x))
    x = encoder.ln_post(x)
    stats.append(tensor_stats("encoder.ln_post", x))
    return x, stats


def embed_audio_with_stats(model: Whisper, mel: Tensor) -> tuple[Tensor, list[dict]]:
    """`Whisper.embed_audio` with encoder statistics: mel (N, n_mels, 3000) -> (features, stats)."""
    return encode_with_stats(model.encoder, mel.to(device=model.device, dtype=model.dtype))


@torch.no_grad()
def decode_with_stats(
    decoder: TextDecoder,
    tokens: Tensor,
    cache: KVCache,
    *,
    positions: tuple[int, ...] | None = None,
    want_qk: bool = False,
) -> tuple[Tensor, list[Tensor] | None, list[dict]]:
    """`TextDecoder.forward` run block by block: (logits, qks, stats).

    The stats are those of the last position fed (the one whose logits choose the next token), over every
    row: the token + position embedding, each block's output, and the final LayerNorm. The last position only
    makes a cached step (1 token fed) and an uncached one (the whole prefix fed) report the same numbers.
    """
    if not cache.has_cross:
        raise RuntimeError("KV cache has no cross-attention K/V: call fill_cross first")
    position, T = cache.position, tokens.shape[1]
    if position + T > decoder.positional_embedding.shape[0]:
        raise ValueError(f"decoder context is {decoder.positional_embedding.shape[0]} tokens")
    x = decoder.embed(tokens, position)
    stats = [tensor_stats("decoder.embedding", x[:, -1])]
    qks = [] if want_qk else None
    for i, block in enumerate(decoder.blocks):
        x, qk = block.decode(x, cache.layer(i), position, want_qk)
        stats.append(tensor_stats(f"decoder.blocks.{i}", x[:, -1]))
        if want_qk:
            qks.append(qk)
    cache.advance(T)
    x = decoder.ln(select_positions(x, positions))
    stats.append(tensor_stats("decoder.ln", x[:, -1]))
    logits = decoder.project(x)
    return logits, qks, stats


class StatsRunner(DecoderRunner):
    """A `DecoderRunner` that runs the decoder through `decode_with_stats` and keeps the last call's stats.

    It adopts an existing runner (its cache, features and mode) instead of allocating a new cache.
    The feeding logic is `DecoderRunner.logits`'s; only the decoder call (`forward`) differs.
    """

    def __init__(self, base: DecoderRunner):  # adopts `base`'s state, allocates nothing
        self.model, self.audio_features, self.mode = base.model, base.audio_features, base.mode
        self.cache = base.cache
        self.group, self.calls, self.fed_last = base.group, base.calls, base.fed_last
        self.last_stats: list[dict] | None = None

    def forward(self, new_tokens: Tensor, cache: KVCache, positions: tuple[int, ...] | None, want_qk: bool):
        logits, qks, self.last_stats = decode_with_stats(
            self.model.decoder, new_tokens, cache, positions=positions, want_qk=want_qk
        )
        return logits, qks


def head_mask(model: Whisper, heads: str | Tensor = "alignment") -> Tensor:
    """(n_text_layer, n_text_head) bool: "alignment" (the model's alignment heads), "all", or a mask."""
    if isinstance(heads, Tensor):
        return heads.bool().reshape(model.dims.n_text_layer, model.dims.n_text_head).cpu()
    if heads == "alignment":
        return model.alignment_heads.bool().cpu()
    if heads == "all":
        return torch.ones(model.dims.n_text_layer, model.dims.n_text_head, dtype=torch.bool)
    raise ValueError(f"heads must be 'alignment', 'all' or a bool mask, not {heads!r}")


def attention_weights(qks: list[Tensor]) -> Tensor:
    """Per-layer pre-softmax cross-attention scores [(B, H, T, S)] -> weights (B, L, H, T, S) (softmax)."""
    return torch.stack([qk.float().softmax(dim=-1) for qk in qks], dim=1)


def mean_over_heads(weights: Tensor, mask: Tensor) -> Tensor:
    """weights (L, H, ...) averaged over the heads selected by mask (L, H): (...)."""
    return weights[mask.to(weights.device)].mean(dim=0)


@torch.no_grad()
def cross_attention_map(
    model: Whisper,
    audio_features: Tensor,
    tokens: list[int],
    sample_begin: int,
    heads: str | Tensor = "alignment",
) -> Tensor:
    """Cross-attention of a finished sequence, in one uncached pass: (n_sampled, n_audio_ctx).

    tokens: the initial tokens followed by the sampled ones (eot last, when the decode ended with it).
    Row i is the attention of the query that chose sampled token i (the position before it), averaged over
    the selected heads.
    """
    if len(tokens) <= sample_begin:
        return torch.zeros(0, model.dims.n_audio_ctx)
    fed = torch.tensor([tokens[:-1]], device=model.device)
    features = audio_features[None] if audio_features.dim() == 2 else audio_features
    cache = model.new_cache(1, fed.shape[1])
    model.fill_cross(cache, features.to(model.device, model.dtype))
    _, qks = model.decoder(fed, cache, want_qk=True)
    weights = attention_weights(qks)[0]  # (L, H, T, S)
    rows = weights[:, :, sample_begin - 1 :]  # queries that chose sampled tokens 0..n-1
    return mean_over_heads(rows, head_mask(model, heads)).cpu()
