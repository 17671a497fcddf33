"""The Whisper network: audio encoder, text decoder and cache-aware attention, in plain PyTorch.

Parameter names follow the reference checkpoint (`encoder.blocks.0.attn.query.weight`, ...), so a reference
`.pt` state dict loads as it is. The decoder takes an explicit `KVCache` (kv_cache.py).

Dtype policy: linear/conv/embedding weights are in the model's dtype; LayerNorm parameters stay fp32 and
LayerNorm runs in fp32; softmax runs in fp32 (inside scaled_dot_product_attention, or explicitly when the
attention weights are asked for); returned logits are fp32. A loader may keep some tensors wider than the
weights (registry.py's `exact` bf16 model on the CPU): a bias wider than its weight is added in its own dtype
after the product, so the encoder's residual stream takes the biases' dtype; `Whisper.dtype` is the encoder's.

Speed is applied from outside, at load, through two seams (`kvwhisper.cpu` uses both on CPU):
- every product is a `Linear` module, which may be swapped for a subclass that takes the same
  `forward(x, gelu=, add=)` (the MLP's GELU and the residual adds are passed in, so a faster product can fuse
  them);
- the few operations that are not a module (attention, the tied output projection, the q/k/v products as a
  group, and the dtypes of the residual stream and of the cached K/V) are the methods of an `Ops`
  object (ops.py), `Whisper.use_ops` hands every module the same one; so is a decoder block's whole one-token step,
  which a backend may run at once (`Ops.block_step`; the block runs op by op where it returns None).
With neither applied, this file is the whole network.

Inspection goes through the same forward: `collect`, when given, is called as `collect(name, x)` with the
residual stream after each stage (inspection/activations.py turns that into statistics).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dims import ModelDims
from .kv_cache import KVCache, LayerKV
from .ops import TORCH_OPS, Ops

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer

Collect = Callable[[str, Tensor], None]  # collect(name, activations): what inspection is shown


class Linear(nn.Linear):
    """`nn.Linear` that takes the GELU after it and a residual added to it: `gelu(x W^T + b)`,
    `add + x W^T + b`. The input is cast to the weight's dtype (the residual stream may be wider)."""

    @classmethod
    def adopt(cls, layer: nn.Linear) -> Linear:
        """A Linear holding `layer`'s own parameters (no copy): undoes a swapped-in subclass."""
        new = cls(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        new.weight, new.bias = layer.weight, layer.bias
        return new

    def forward(self, x: Tensor, *, gelu: bool = False, add: Tensor | None = None) -> Tensor:
        w, b = self.weight, self.bias
        if b is not None and b.dtype != w.dtype:  # a bias kept wider than its weight: added in its dtype
            y = F.linear(x.to(w.dtype), w).to(b.dtype) + b
        else:
            y = F.linear(x.to(w.dtype), w, b)
        if gelu:
            y = F.gelu(y)
        return y if add is None else add + y


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the activations' dtype (its parameters are kept fp32).

    On the CPU, bf16 activations go to torch's mixed-dtype layer_norm, which computes in fp32 and rounds once on
    output, as the cast-compute-cast below does, without the two copies (the same numbers up to the order of its
    sums: a last-bit difference in a few outputs)."""

    def forward(self, x: Tensor) -> Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        if x.dtype == torch.bfloat16 and x.device.type == "cpu":
            return F.layer_norm(x, self.normalized_shape, w, b, self.eps)
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


def conv_gelu(conv: nn.Conv1d, x: Tensor) -> Tensor:
    """GELU(conv(x)), the product in the weight's dtype; a bias wider than the weight added in its own."""
    w, b = conv.weight, conv.bias
    if b is None or b.dtype == w.dtype:
        return F.gelu(conv(x.to(w.dtype)))
    y = F.conv1d(x.to(w.dtype), w, None, conv.stride, conv.padding)
    return F.gelu(y.to(b.dtype) + b[:, None])


def sinusoids(length: int, channels: int, max_timescale: float = 10000) -> Tensor:
    """Sinusoidal position embedding of the encoder: (length, channels), sin half then cos half.

    Computed on the CPU even under a ``torch.device("meta")`` block (where load_model builds the network):
    arithmetic on meta tensors goes through torch's Python decompositions, whose first use imports
    torch._dynamo, over a second of start-up."""
    if channels % 2:
        raise ValueError("channels must be even")
    log_timescale_increment = np.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_timescale_increment * torch.arange(channels // 2, device="cpu"))
    scaled_time = torch.arange(length, device="cpu")[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


class MultiHeadAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = Linear(n_state, n_state)
        self.key = Linear(n_state, n_state, bias=False)
        self.value = Linear(n_state, n_state)
        self.out = Linear(n_state, n_state)
        self.ops: Ops = TORCH_OPS

    def heads(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, H, T, D)"""
        B, T, C = x.shape
        return x.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)

    def merge(self, x: Tensor) -> Tensor:
        """(B, H, T, D) -> (B, T, C)"""
        B, H, T, D = x.shape
        return x.transpose(1, 2).reshape(B, T, H * D)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of `x` (B, S, C): two (B, H, S, D) tensors."""
        return self.heads(self.key(x)), self.heads(self.value(x))

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values of `x` (B, T, C): three (B, H, T, D) tensors."""
        q, k, v = self.ops.linears(x, (self.query, self.key, self.value))
        return self.heads(q), self.heads(k), self.heads(v)

    def full(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """Unmasked self-attention over all of x (the encoder): (B, T, C) -> (B, T, C), plus `residual`."""
        q, k, v = self.project_qkv(x)
        return self.out(self.merge(self.ops.self_attend(q, k, v)), add=residual)

    def cached(
        self, x: Tensor, k_buf: Tensor, v_buf: Tensor, position: int, residual: Tensor | None = None
    ) -> Tensor:
        """Causal self-attention of T new tokens at `position`, their K/V written into the static buffers.

        x: (B, T, C); k_buf, v_buf: (B, H, capacity, D). Only the new tokens' K/V are computed. Returns
        (B, T, C), plus `residual` when given.
        """
        T = x.shape[1]
        q, k, v = self.project_qkv(x)  # (B, H, T, D)
        end = position + T
        k_buf[:, :, position:end] = k
        v_buf[:, :, position:end] = v
        k_all, v_all = k_buf[:, :, :end], v_buf[:, :, :end]  # (B, H, end, D)
        if T == 1:  # one new token attends to everything before it: no mask needed
            return self.out(self.merge(self.ops.attend(q, k_all, v_all)), add=residual)
        q = q.to(k_buf.dtype)
        if position == 0:
            o = F.scaled_dot_product_attention(q, k_all, v_all, is_causal=True)
        else:  # several new tokens after a filled prefix: query i sees keys 0..position+i
            allowed = torch.ones(T, end, dtype=torch.bool, device=x.device).tril(diagonal=position)
            o = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=allowed)
        return self.out(self.merge(o), add=residual)

    def cross(
        self, x: Tensor, k: Tensor, v: Tensor, want_qk: bool = False, residual: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Attention of x (N*G, T, C) over one window's audio K/V (N, H, S, D), shared by its G rows.

        The G rows of a window (beams or samples) are folded into the query axis, (N, H, G*T, D), so the
        window's K/V are used as they are: no per-beam copy. With want_qk, also returns the pre-softmax
        scores (N*G, H, T, S) in fp32 (word timestamps and inspection need them). With `residual`, returns
        `residual +` the attention output.
        """
        B, T, C = x.shape
        N, H, S, D = k.shape
        G = B // N
        q = self.query(x).view(N, G * T, H, D).transpose(1, 2)  # (N, H, G*T, D)
        if not want_qk:
            o = self.ops.attend(q, k, v)
            qk = None
        else:
            qk = (q.float() @ k.float().transpose(-1, -2)) * D**-0.5  # (N, H, G*T, S)
            o = torch.softmax(qk, dim=-1) @ v.float()
            qk = qk.view(N, H, G, T, S).permute(0, 2, 1, 3, 4).reshape(B, H, T, S)
        o = o.transpose(1, 2).reshape(B, T, C)  # (N, G*T, H, D) -> (N*G, T, C)
        return self.out(o, add=residual), qk


class ResidualAttentionBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int, cross_attention: bool = False):
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = LayerNorm(n_state)
        self.cross_attn = MultiHeadAttention(n_state, n_head) if cross_attention else None
        self.cross_attn_ln = LayerNorm(n_state) if cross_attention else None
        n_mlp = n_state * 4
        self.mlp = nn.Sequential(Linear(n_state, n_mlp), nn.GELU(), Linear(n_mlp, n_state))
        self.mlp_ln = LayerNorm(n_state)

    def encode(self, x: Tensor) -> Tensor:
        x = self.attn.full(self.attn_ln(x), residual=x)
        return self.feed_forward(x)

    def decode(
        self, x: Tensor, kv: LayerKV, position: int, want_qk: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """One decoder block on T new tokens; `kv` is this layer's view of the cache."""
        if not want_qk and x.shape[1] == 1:
            y = self.attn.ops.block_step(self, x, [(slice(0, x.shape[0]), kv, position)])
            if y is not None:
                return y, None
        x = self.attn.cached(self.attn_ln(x), kv.self_k, kv.self_v, position, residual=x)
        x, qk = self.cross_attn.cross(self.cross_attn_ln(x), kv.cross_k, kv.cross_v, want_qk, residual=x)
        return self.feed_forward(x), qk

    def feed_forward(self, x: Tensor) -> Tensor:
        """x + mlp(mlp_ln(x)), the MLP being `mlp.0`, GELU, `mlp.2`."""
        fc1, fc2 = self.mlp[0], self.mlp[2]
        return fc2(fc1(self.mlp_ln(x), gelu=True), add=x)


class AudioEncoder(nn.Module):
    def __init__(self, n_mels: int, n_ctx: int, n_state: int, n_head: int, n_layer: int):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(n_ctx, n_state))
        self.blocks = nn.ModuleList([ResidualAttentionBlock(n_state, n_head) for _ in range(n_layer)])
        self.ln_post = LayerNorm(n_state)

    def forward(self, mel: Tensor, collect: Collect | None = None) -> Tensor:
        """mel (N, n_mels, 2 * n_audio_ctx) -> audio features (N, n_audio_ctx, n_audio_state)."""
        x = conv_gelu(self.conv1, mel)
        if collect:
            collect("encoder.conv1", x)
        x = conv_gelu(self.conv2, x)
        x = x.permute(0, 2, 1)  # (N, n_audio_ctx, C)
        if x.shape[1:] != self.positional_embedding.shape:
            raise ValueError(
                f"mel of {mel.shape[-1]} frames gives {x.shape[1]} positions; "
                f"the encoder needs {self.positional_embedding.shape[0]} (pad or trim to 30 s)"
            )
        x = (x + self.positional_embedding).to(x.dtype)  # the stream: the convolutions' (their biases') dtype
        if collect:
            collect("encoder.conv2+pos", x)
        for i, block in enumerate(self.blocks):
            x = block.encode(x)
            if collect:
                collect(f"encoder.blocks.{i}", x)
        x = self.ln_post(x)
        if collect:
            collect("encoder.ln_post", x)
        return x


def select_positions(x: Tensor, positions: tuple[int, ...] | None) -> Tensor:
    """x (B, T, C) at the given positions (all of them for None): what the decoder projects onto the
    vocabulary. A decode needs two rows of a prompt's projection (no-speech and the last), and projecting the
    whole prompt would cost most of the first step."""
    if positions is None:
        return x
    if tuple(positions) == (-1,):
        return x[:, -1:]
    return x[:, list(positions)]


class TextDecoder(nn.Module):
    def __init__(self, n_vocab: int, n_ctx: int, n_state: int, n_head: int, n_layer: int):
        super().__init__()
        self.n_head = n_head
        # built on the meta device (load_model, whose checkpoint brings the weights), the embedding is given
        # uninitialized: its normal_() fill on meta tensors imports torch._dynamo, over a second of start-up
        meta = torch.get_default_device().type == "meta"
        weight = torch.empty(n_vocab, n_state) if meta else None
        self.token_embedding = nn.Embedding(n_vocab, n_state, _weight=weight)
        self.positional_embedding = nn.Parameter(torch.empty(n_ctx, n_state))
        self.blocks = nn.ModuleList(
            [ResidualAttentionBlock(n_state, n_head, cross_attention=True) for _ in range(n_layer)]
        )
        self.ln = LayerNorm(n_state)
        self.ops: Ops = TORCH_OPS

    def cross_kv(self, audio_features: Tensor) -> tuple[Tensor, Tensor]:
        """Every layer's cross-attention K/V of the windows: two (L, N, H, S, D) tensors."""
        ks, vs = zip(*(block.cross_attn.project_kv(audio_features) for block in self.blocks))
        dtype = self.ops.cross_kv_dtype(self.blocks[0].cross_attn.key.weight.dtype)
        return torch.stack(ks).to(dtype), torch.stack(vs).to(dtype)

    def forward(
        self,
        tokens: Tensor,
        cache: KVCache,
        *,
        positions: tuple[int, ...] | None = None,
        want_qk: bool = False,
        collect: Collect | None = None,
        step: Callable | None = None,
    ) -> tuple[Tensor, list[Tensor] | None]:
        """Decode T new tokens (B, T) at `cache.position`, writing their K/V into the cache.

        Returns logits (B, T, n_vocab) in fp32, and with want_qk the cross-attention scores of every layer,
        each (B, H, T, S). Only some positions are projected onto the vocabulary with `positions` (indices
        into the T fed tokens, negative from the end: logits (B, len(positions), n_vocab)). The cache must
        hold cross K/V. `step` replaces `decode_at` (a compiled copy of it, decoding/compiled.py).
        """
        if not cache.has_cross:
            raise RuntimeError("KV cache has no cross-attention K/V: call fill_cross first")
        position, T = cache.position, tokens.shape[1]
        if position + T > self.positional_embedding.shape[0]:
            raise ValueError(f"decoder context is {self.positional_embedding.shape[0]} tokens")
        kv = (cache.self_k, cache.self_v, cache.cross_k, cache.cross_v)
        if step is not None:
            logits, qks = step(self, tokens, position, *kv, positions, want_qk)
        else:
            logits, qks = self.decode_at(tokens, position, *kv, positions, want_qk, collect)
        cache.advance(T)
        return logits, qks

    def decode_at(
        self,
        tokens: Tensor,
        position: int,
        self_k: Tensor,
        self_v: Tensor,
        cross_k: Tensor,
        cross_v: Tensor,
        positions: tuple[int, ...] | None = None,
        want_qk: bool = False,
        collect: Collect | None = None,
    ) -> tuple[Tensor, list[Tensor] | None]:
        """`forward` on the cache's tensors (L, ...) and an int position: plain arguments, so it compiles.
        `collect` sees the last fed position of each stage (the one whose logits choose the next token)."""
        x = self.embed(tokens, position)
        if collect:
            collect("decoder.embedding", x[:, -1])
        qks = [] if want_qk else None
        for i, block in enumerate(self.blocks):
            x, qk = block.decode(x, LayerKV(self_k[i], self_v[i], cross_k[i], cross_v[i]), position, want_qk)
            if collect:
                collect(f"decoder.blocks.{i}", x[:, -1])
            if want_qk:
                qks.append(qk)
        x = self.ln(select_positions(x, positions))
        if collect:
            collect("decoder.ln", x[:, -1])
        return self.project(x), qks  # output tied to the token embedding

    def embed(self, tokens: Tensor, position: int) -> Tensor:
        """Token + position embedding of tokens (B, T) at `position`: the residual stream, (B, T, C), in
        `ops.residual_dtype` (each Linear casts its input to its own dtype)."""
        T = tokens.shape[1]
        x, pos = self.token_embedding(tokens), self.positional_embedding[position : position + T]
        dtype = self.ops.residual_dtype(x.dtype)
        return x.to(dtype) + pos.to(dtype)

    def project(self, x: Tensor) -> Tensor:
        """Logits in fp32: x (..., n_state) times the token embedding transposed."""
        return self.ops.project(x, self.token_embedding.weight).float()


class Whisper(nn.Module):
    """Encoder + decoder, with the tokenizer and alignment heads of its checkpoint attached by the loader."""

    def __init__(self, dims: ModelDims):
        super().__init__()
        self.dims = dims
        self.encoder = AudioEncoder(
            dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer
        )
        self.decoder = TextDecoder(
            dims.n_vocab, dims.n_text_ctx, dims.n_text_state, dims.n_text_head, dims.n_text_layer
        )
        # the reference's default: every head of the last half of the decoder layers aligns text to audio
        heads = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
        heads[dims.n_text_layer // 2 :] = True
        self.register_buffer("alignment_heads", heads, persistent=False)  # (n_text_layer, n_text_head)
        self._tokenizer: Tokenizer | None = None
        self.name: str | None = None  # "tiny.en", ... when loaded by name
        self.source: str | None = None  # the file or folder the weights came from
        self.tokenizer_path = None  # the checkpoint's own tokenizer file, when it has one

    # -- properties -------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.decoder.token_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype (the encoder's: the mel is fed in it; see the module docstring)."""
        return self.encoder.conv1.weight.dtype

    @property
    def is_multilingual(self) -> bool:
        return self.dims.n_vocab >= 51865

    @property
    def num_languages(self) -> int:
        return self.dims.n_vocab - 51765 - int(self.is_multilingual)

    @property
    def tokenizer(self) -> Tokenizer:
        """The checkpoint's own tokenizer (or the standard one for this vocabulary when none was attached)."""
        if self._tokenizer is None:
            from ..tokenizer import get_tokenizer

            self._tokenizer = get_tokenizer(self.is_multilingual, num_languages=self.num_languages)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer

    def set_alignment_heads(self, heads: Tensor | list[tuple[int, int]]) -> None:
        """Heads used for word timestamps: a (n_text_layer, n_text_head) bool mask or (layer, head) pairs."""
        mask = torch.zeros(self.dims.n_text_layer, self.dims.n_text_head, dtype=torch.bool)
        if isinstance(heads, Tensor) and heads.dtype == torch.bool:
            mask[:] = heads.reshape(mask.shape)
        else:
            for layer, head in heads:
                mask[int(layer), int(head)] = True
        self.alignment_heads = mask.to(self.alignment_heads.device)

    def set_dtype(self, dtype: torch.dtype) -> Whisper:
        """Convert the weights once; LayerNorm parameters stay fp32 (see the module docstring)."""
        self.to(dtype)
        for m in self.modules():
            if isinstance(m, LayerNorm):
                m.float()
        self.alignment_heads = self.alignment_heads.bool()
        return self

    def use_ops(self, ops: Ops) -> Whisper:
        """Hand every module `ops` (the seam of the module docstring); `TORCH_OPS` restores plain torch."""
        for m in self.modules():
            if isinstance(m, (MultiHeadAttention, TextDecoder)):
                m.ops = ops
        return self

    def use_plain(self) -> Whisper:
        """This file's network alone: every Linear layer of this class (same parameters) and `TORCH_OPS`."""
        for module in list(self.modules()):
            for name, child in module.named_children():
                if isinstance(child, nn.Linear) and type(child) is not Linear:
                    setattr(module, name, Linear.adopt(child))
        return self.use_ops(TORCH_OPS)

    # -- forward pieces -----------------------------------------------------------------------------------
    def embed_audio(self, mel: Tensor, collect: Collect | None = None) -> Tensor:
        """mel (N, n_mels, 3000) -> audio features (N, n_audio_ctx, n_audio_state)."""
        return self.encoder(mel.to(device=self.device, dtype=self.dtype), collect)

    def new_cache(self, batch: int, capacity: int | None = None) -> KVCache:
        d = self.dims
        return KVCache(
            d.n_text_layer,
            batch,
            d.n_text_head,
            d.n_text_state // d.n_text_head,
            capacity or d.n_text_ctx,
            device=self.device,
            dtype=self.decoder.ops.kv_dtype(self.dtype),
        )

    def fill_cross(self, cache: KVCache, audio_features: Tensor) -> None:
        """Compute the cross-attention K/V of the windows once and store them in the cache."""
        cache.set_cross(*self.decoder.cross_kv(audio_features.to(self.device, self.dtype)))

    def decoder_pass(
        self,
        tokens: Tensor,
        audio_features: Tensor,
        *,
        positions: tuple[int, ...] | None = None,
        want_qk: bool = False,
    ) -> tuple[Tensor, list[Tensor] | None]:
        """One decoder pass over whole token sequences (B, T) in a fresh cache of exactly T positions:
        language detection, word alignment and inspection. Returns `TextDecoder.forward`'s (logits, qks)."""
        cache = self.new_cache(tokens.shape[0], tokens.shape[1])
        self.fill_cross(cache, audio_features)
        return self.decoder(tokens.to(self.device), cache, positions=positions, want_qk=want_qk)

    def logits(self, tokens: Tensor, audio_features: Tensor) -> Tensor:
        """Uncached convenience: logits (B, T, n_vocab) of a whole token sequence over the windows."""
        return self.decoder_pass(tokens, audio_features)[0]

    def forward(self, mel: Tensor, tokens: Tensor) -> Tensor:
        return self.logits(tokens, self.embed_audio(mel))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dims={self.dims}"
