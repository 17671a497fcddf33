"""Looking inside a forward pass: activation statistics per stage, and cross-attention weights.

The statistics come from the model's own forward (`collect=`, see model/network.py): a decode that records
them runs exactly the code, and samples exactly the tokens, of one that does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..decoding.loop import DecoderRunner

if TYPE_CHECKING:
    from ..model.kv_cache import KVCache
    from ..model.network import Whisper


def tensor_stats(name: str, x: Tensor) -> dict:
    """{"name", "mean", "std", "absmax"} of a tensor, computed in fp32 over all its elements."""
    x = x.detach().float()
    return {
        "name": name,
        "mean": x.mean().item(),
        "std": x.std(unbiased=False).item(),
        "absmax": x.abs().max().item(),
    }


class StatsCollector:
    """A `collect` for the forward: the `tensor_stats` of every activation it is shown, in order."""

    def __init__(self) -> None:
        self.stats: list[dict] = []

    def __call__(self, name: str, x: Tensor) -> None:
        self.stats.append(tensor_stats(name, x))


@torch.no_grad()
def embed_audio_with_stats(model: Whisper, mel: Tensor) -> tuple[Tensor, list[dict]]:
    """`Whisper.embed_audio` with encoder statistics (the stem convolutions, each block's output, the final
    LayerNorm): mel (N, n_mels, 3000) -> (features (N, n_audio_ctx, n_audio_state), stats)."""
    collector = StatsCollector()
    return model.embed_audio(mel, collector), collector.stats


@torch.no_grad()
def decode_with_stats(
    model: Whisper,
    tokens: Tensor,
    cache: KVCache,
    *,
    positions: tuple[int, ...] | None = None,
    want_qk: bool = False,
) -> tuple[Tensor, list[Tensor] | None, list[dict]]:
    """The decoder's forward with statistics: (logits, qks, stats).

    The stats are those of the last position fed (the one whose logits choose the next token), over every
    row: the token + position embedding, each block's output, and the final LayerNorm. The last position only
    makes a cached step (1 token fed) and an uncached one (the whole prefix fed) report the same numbers.
    """
    collector = StatsCollector()
    logits, qks = model.decoder(tokens, cache, positions=positions, want_qk=want_qk, collect=collector)
    return logits, qks, collector.stats


class StatsRunner(DecoderRunner):
    """A `DecoderRunner` whose decoder calls record statistics (`decode_with_stats`); keeps the last call's.

    It adopts an existing runner (its cache, features and mode) instead of allocating a new cache.
    The feeding logic is `DecoderRunner.logits`'s; only the decoder call (`forward`) differs.
    """

    def __init__(self, base: DecoderRunner):  # adopts `base`'s state, allocates nothing
        self.model, self.audio_features, self.mode = base.model, base.audio_features, base.mode
        self.cache, self.compile = base.cache, False
        self.group, self.calls, self.fed_last = base.group, base.calls, base.fed_last
        self.last_stats: list[dict] | None = None

    def forward(self, new_tokens: Tensor, cache: KVCache, positions: tuple[int, ...] | None, want_qk: bool):
        logits, qks, self.last_stats = decode_with_stats(
            self.model, new_tokens, cache, positions=positions, want_qk=want_qk
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
    _, qks = model.decoder_pass(fed, features, want_qk=True)
    weights = attention_weights(qks)[0]  # (L, H, T, S)
    rows = weights[:, :, sample_begin - 1 :]  # queries that chose sampled tokens 0..n-1
    return mean_over_heads(rows, head_mask(model, heads)).cpu()
