"""The Whisper network: audio encoder and text decoder.

Parameter names follow the reference checkpoint (`encoder.blocks.0.attn.query.weight`, ...), so a reference
`.pt` state dict loads as it is. The decoder takes an explicit `KVCache` (see kv_cache.py).

Dtype policy (one place): linear/conv/embedding weights are in the model's dtype; LayerNorm parameters stay
fp32 and LayerNorm runs in fp32; attention softmax runs inside scaled_dot_product_attention (fp32 accumulation)
or explicitly in fp32 when weights are asked for; on CPU, bf16/fp16 models keep cross-attention K/V in fp32 and
attend in fp32 in decode steps (see `attend`), the encoder's self-attention runs in fp32 (`self_attend`), and the
decoder's residual stream stays fp32 (`TextDecoder.embed`: each linear layer casts its input to its own dtype);
returned logits are fp32.

Speed only: on CPU every linear layer and the tied output projection multiply through oneDNN-packed copies of
their weights (packed.py), q/k/v are one product, and the MLP's GELU and the residual adds are fused into the
products; the parameters themselves are the checkpoint's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import kernels
from .compiled import compiled
from .kv_cache import KVCache, LayerKV
from .packed import Linear, PackedWeight, fused_linear
from .packed import enabled as packed_enabled
from .packed import linear as packed_linear

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer


@dataclass(frozen=True)
class ModelDims:
    """Sizes of a Whisper model, read from the checkpoint."""

    n_mels: int  # mel bins of the input (80, or 128 for large-v3)
    n_audio_ctx: int  # encoder positions per window (1500 = 3000 mel frames / 2 from the strided conv)
    n_audio_state: int  # encoder width
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int  # 51864 English-only, 51865 multilingual, 51866 large-v3
    n_text_ctx: int  # decoder positions (448)
    n_text_state: int  # decoder width
    n_text_head: int
    n_text_layer: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the activations' dtype (its parameters are kept fp32)."""

    def forward(self, x: Tensor) -> Tensor:
        fp32_params = all(p is None or p.dtype == torch.float32 for p in (self.weight, self.bias))
        if fp32_params and (
            x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and x.device.type == "cpu")
        ):
            # fp32 parameters straight in: CPU layer_norm computes bf16 input in fp32 (same numbers, fewer ops)
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


def sinusoids(length: int, channels: int, max_timescale: float = 10000) -> Tensor:
    """Sinusoidal position embedding of the encoder: (length, channels), sin half then cos half."""
    if channels % 2:
        raise ValueError("channels must be even")
    log_timescale_increment = np.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_timescale_increment * torch.arange(channels // 2))
    scaled_time = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Unmasked attention, (N, H, Tq, D) over (N, H, S, D), in q's dtype.

    On CPU a decode step (few queries) and anything over fp32 cross-attention K/V (see `cross_kv`) attends in
    fp32: for bf16 models the CPU flash-attention kernel is 2-3x slower in bf16 than in fp32 for one query over
    1500 audio positions (benchmarks/RESULTS.md), and fp32 is the more exact of the two. fp32 attention of a
    few queries (a decode step) runs through the C kernel of kernels.py where it is built.
    """
    if q.device.type == "cpu" and (k.dtype == torch.float32 or q.shape[-2] <= 16):
        q32, k32, v32 = q.float(), k.float(), v.float()  # no copies for fp32 tensors
        if kernels.attend_applies(q32, k32, v32):
            return kernels.attend(q32, k32, v32).to(q.dtype)
        return F.scaled_dot_product_attention(q32, k32, v32).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v)


def self_attend(q: Tensor, k: Tensor, v: Tensor, chunk: int = 500) -> Tensor:
    """Unmasked self-attention of the encoder, (N, H, T, D) each.

    On CPU it runs in fp32, head by head and `chunk` queries at a time, as two oneDNN products around a
    softmax whose scores stay in cache. The whole encoder is then 1.4x faster than with the CPU
    flash-attention kernel in fp32, and 1.36x in bf16, where it is also more exact than that kernel in bf16
    (benchmarks/encoder_paths.py). Elsewhere, or when oneDNN is off, `scaled_dot_product_attention`.
    """
    N, H, T, D = q.shape
    if q.device.type != "cpu" or T < chunk or not packed_enabled(torch.float32, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)
    lin = torch.ops.mkldnn._linear_pointwise
    # contiguous operands: oneDNN is pathologically slow on the strided views of the fused q/k/v product
    q = (q.float() * D**-0.5).contiguous()  # (a power of two for every Whisper size: exact, as inside SDPA)
    k = k.float().contiguous()
    v_t = v.float().transpose(-1, -2).contiguous()  # (N, H, D, T): a "weight" of T inputs
    out = torch.empty(N, T, H, D, dtype=torch.float32)
    for n in range(N):
        for h in range(H):
            for i in range(0, T, chunk):
                scores = lin(q[n, h, i : i + chunk], k[n, h], None, "none", [], "")  # (chunk, T)
                out[n, i : i + chunk, h] = lin(torch.softmax(scores, dim=-1), v_t[n, h], None, "none", [], "")
    return out.transpose(1, 2).to(v.dtype)


class MultiHeadAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = Linear(n_state, n_state)
        self.key = Linear(n_state, n_state, bias=False)
        self.value = Linear(n_state, n_state)
        self.out = Linear(n_state, n_state)
        self._qkv_packed = PackedWeight()  # query, key and value stacked: one product (see packed.py)

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
        """Queries, keys and values of `x` (B, T, C): three (B, H, T, D) tensors, from one product."""
        layers = (self.query, self.key, self.value)
        q, k, v = fused_linear(x, [m.weight for m in layers], [m.bias for m in layers], self._qkv_packed)
        return self.heads(q), self.heads(k), self.heads(v)

    def full(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """Unmasked self-attention over all of x (the encoder): (B, T, C) -> (B, T, C), plus `residual`."""
        q, k, v = self.project_qkv(x)
        return self.out(self.merge(self_attend(q, k, v)), add=residual)

    def cached(
        self, x: Tensor, k_buf: Tensor, v_buf: Tensor, position: int, residual: Tensor | None = None
    ) -> Tensor:
        """Causal self-attention of T new tokens at `position`, their K/V written into the static buffers.

        x: (B, T, C); k_buf, v_buf: (B, H, capacity, D). Only the new tokens' K/V are computed. Returns
        (B, T, C), plus `residual` when given (the add is fused into the output projection on CPU).
        """
        T = x.shape[1]
        q, k, v = self.project_qkv(x)  # (B, H, T, D)
        end = position + T
        k_buf[:, :, position:end] = k
        v_buf[:, :, position:end] = v
        k_all, v_all = k_buf[:, :, :end], v_buf[:, :, :end]  # (B, H, end, D)
        if T == 1:  # one new token attends to everything before it: no mask needed
            o = attend(q, k_all, v_all)
            return self.out(self.merge(o), add=residual)
        q = q.to(k_buf.dtype)  # (a bf16 model's few-row products through kernels.py come out in fp32)
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
            o = attend(q, k, v)
            qk = None
        else:
            qk = (q.float() @ k.float().transpose(-1, -2)) * D**-0.5  # (N, H, G*T, S)
            o = (torch.softmax(qk, dim=-1) @ v.float()).to(q.dtype)
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

    # The residual adds and the MLP's GELU are passed into the linear layers: on CPU they are fused into the
    # products (packed.py); elsewhere they run as the plain `x + f(x)` and `gelu(linear(x))`.
    def encode(self, x: Tensor) -> Tensor:
        x = self.attn.full(self.attn_ln(x), residual=x)
        return self.feed_forward(x)

    def decode(self, x: Tensor, kv, position: int, want_qk: bool = False) -> tuple[Tensor, Tensor | None]:
        """One decoder block on T new tokens; `kv` is this layer's `LayerKV`."""
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

    def forward(self, mel: Tensor) -> Tensor:
        """mel (N, n_mels, 2 * n_audio_ctx) -> audio features (N, n_audio_ctx, n_audio_state)."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x))
        x = x.permute(0, 2, 1)  # (N, n_audio_ctx, C)
        if x.shape[1:] != self.positional_embedding.shape:
            raise ValueError(
                f"mel of {mel.shape[-1]} frames gives {x.shape[1]} positions; "
                f"the encoder needs {self.positional_embedding.shape[0]} (pad or trim to 30 s)"
            )
        x = (x + self.positional_embedding).to(x.dtype)
        for block in self.blocks:
            x = block.encode(x)
        return self.ln_post(x)


def select_positions(x: Tensor, positions: tuple[int, ...] | None) -> Tensor:
    """x (B, T, C) at the given positions (all of them for None): what the decoder projects onto the vocabulary.

    The projection of a whole prompt is most of the first step's time (a 224-token prompt: 142 ms, 39 ms for
    its last position alone), and a decode needs two of its rows."""
    if positions is None:
        return x
    if tuple(positions) == (-1,):
        return x[:, -1:]
    return x[:, list(positions)]


class TextDecoder(nn.Module):
    def __init__(self, n_vocab: int, n_ctx: int, n_state: int, n_head: int, n_layer: int):
        super().__init__()
        self.n_head = n_head
        self.token_embedding = nn.Embedding(n_vocab, n_state)
        self.positional_embedding = nn.Parameter(torch.empty(n_ctx, n_state))
        self.blocks = nn.ModuleList(
            [ResidualAttentionBlock(n_state, n_head, cross_attention=True) for _ in range(n_layer)]
        )
        self.ln = LayerNorm(n_state)
        self._output_packed = PackedWeight()  # the output projection's packed weight

    def cross_kv(self, audio_features: Tensor) -> tuple[Tensor, Tensor]:
        """Every layer's cross-attention K/V of the windows: two (L, N, H, S, D) tensors.

        Kept in fp32 on CPU whatever the model's dtype: decode steps attend over them in fp32 (see `attend`).
        """
        ks, vs = zip(*(block.cross_attn.project_kv(audio_features) for block in self.blocks))
        k, v = torch.stack(ks), torch.stack(vs)
        if k.device.type == "cpu":
            k, v = k.float(), v.float()
        return k, v

    def forward(
        self,
        tokens: Tensor,
        cache: KVCache,
        *,
        last_only: bool = False,
        positions: tuple[int, ...] | None = None,
        want_qk: bool = False,
        compile: bool = False,
    ) -> tuple[Tensor, list[Tensor] | None]:
        """Decode T new tokens (B, T) at `cache.position`, writing their K/V into the cache.

        Returns logits (B, T, n_vocab) in fp32, and with want_qk the cross-attention scores of every layer,
        each (B, H, T, S). Only some positions are projected onto the vocabulary with `positions` (indices
        into the T fed tokens, negative from the end: logits (B, len(positions), n_vocab)); `last_only` is
        `positions=(-1,)`. The cache must hold cross K/V. With compile, `decode_at` runs through
        `torch.compile` (see compiled.py).
        """
        if not cache.has_cross:
            raise RuntimeError("KV cache has no cross-attention K/V: call fill_cross first")
        position, T = cache.position, tokens.shape[1]
        if position + T > self.positional_embedding.shape[0]:
            raise ValueError(f"decoder context is {self.positional_embedding.shape[0]} tokens")
        run = compiled(TextDecoder.decode_at) if compile else TextDecoder.decode_at
        kv = (cache.self_k, cache.self_v, cache.cross_k, cache.cross_v)
        positions = (-1,) if last_only else positions
        logits, qks = run(self, tokens, position, *kv, positions, want_qk)
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
    ) -> tuple[Tensor, list[Tensor] | None]:
        """`forward` on the cache's tensors (L, ...) and an int position: plain arguments, so it compiles."""
        x = self.embed(tokens, position)
        qks = [] if want_qk else None
        for i, block in enumerate(self.blocks):
            x, qk = block.decode(x, LayerKV(self_k[i], self_v[i], cross_k[i], cross_v[i]), position, want_qk)
            if want_qk:
                qks.append(qk)
        x = self.ln(select_positions(x, positions))
        return self.project(x), qks  # output tied to the token embedding

    def embed(self, tokens: Tensor, position: int) -> Tensor:
        """Token + position embedding of tokens (B, T) at `position`: the residual stream, (B, T, C).

        On CPU it is kept in fp32 whatever the weights' dtype: each linear layer takes its input in its own
        dtype and the residual adds stay in fp32, so a bf16 model's decoder rounds only inside the blocks
        (its greedy tokens agree with fp32's more often; benchmarks/RESULTS.md). Elsewhere, the model's dtype.
        """
        T = tokens.shape[1]
        x, pos = self.token_embedding(tokens), self.positional_embedding[position : position + T]
        if x.device.type == "cpu":
            return x.float() + pos.float()
        return x + pos

    def project(self, x: Tensor) -> Tensor:
        """Logits in fp32: x (..., n_state) times the token embedding transposed (packed on CPU, see packed.py)."""
        w = self.token_embedding.weight
        return packed_linear(x, w, None, self._output_packed).float()


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
        return self.decoder.token_embedding.weight.dtype

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

    # -- forward pieces -----------------------------------------------------------------------------------
    def embed_audio(self, mel: Tensor) -> Tensor:
        """mel (N, n_mels, 3000) -> audio features (N, n_audio_ctx, n_audio_state)."""
        return self.encoder(mel.to(device=self.device, dtype=self.dtype))

    def new_cache(self, batch: int, capacity: int | None = None) -> KVCache:
        d = self.dims
        return KVCache(
            d.n_text_layer,
            batch,
            d.n_text_head,
            d.n_text_state // d.n_text_head,
            capacity or d.n_text_ctx,
            device=self.device,
            dtype=self.dtype,
        )

    def fill_cross(self, cache: KVCache, audio_features: Tensor) -> None:
        """Compute the cross-attention K/V of the windows once and store them in the cache."""
        cache.set_cross(*self.decoder.cross_kv(audio_features))

    def logits(self, tokens: Tensor, audio_features: Tensor) -> Tensor:
        """Uncached convenience: logits (B, T, n_vocab) of a whole token sequence over the windows."""
        cache = self.new_cache(tokens.shape[0], tokens.shape[1])
        self.fill_cross(cache, audio_features)
        return self.decoder(tokens.to(self.device), cache)[0]

    def forward(self, mel: Tensor, tokens: Tensor) -> Tensor:
        return self.logits(tokens, self.embed_audio(mel))

    # -- high-level API (decoding.py, transcribe.py) -------------------------------------------------------
    def detect_language(self, mel_or_features: Tensor, tokenizer: Tokenizer | None = None):
        from .decoding import detect_language

        return detect_language(self, mel_or_features, tokenizer)

    def decode(self, mel: Tensor, options=None, **kwargs):
        from .decoding import decode

        return decode(self, mel, options, **kwargs)

    def decode_session(
        self,
        audio_or_mel,
        options=None,
        *,
        top_k: int = 5,
        window: int | None = None,
        record_activations: bool = False,
        record_attention: bool = False,
    ):
        """A step-through decode of one window (see session.py): step, rewind, force, inspect."""
        from .session import decode_session

        return decode_session(
            self,
            audio_or_mel,
            options,
            top_k=top_k,
            window=window,
            record_activations=record_activations,
            record_attention=record_attention,
        )

    def transcribe(self, audio, **kwargs):
        from .transcribe import transcribe

        return transcribe(self, audio, **kwargs)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dims={self.dims}"
