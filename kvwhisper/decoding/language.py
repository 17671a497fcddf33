"""Language identification: the language token the decoder prefers after <|startoftranscript|>."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .inputs import window_input
from .options import task_tokenizer

if TYPE_CHECKING:
    from ..model import Whisper
    from ..tokenizer import Tokenizer


@torch.no_grad()
def detect_language(model: Whisper, mel: Tensor, tokenizer: Tokenizer | None = None):
    """Language token and per-language probabilities from the logits after <|startoftranscript|>.

    mel: (N, n_mels, 3000), or audio features (N, n_audio_ctx, n_audio_state), or one of them without N.
    Returns (tokens (N,), [ {code: prob} ] * N), or a single token / dict for a single input.
    """
    if not model.is_multilingual:
        raise ValueError("this model is English-only: it has no language tokens to detect a language with")
    tokenizer = tokenizer or task_tokenizer(model, None, "transcribe")
    x, single = window_input(mel, model)
    features = (
        x if x.shape[-2:] == (model.dims.n_audio_ctx, model.dims.n_audio_state) else model.embed_audio(x)
    )
    features = features.to(model.device, model.dtype)
    sot = torch.full((features.shape[0], 1), tokenizer.sot, device=model.device)
    logits = model.decoder_pass(sot, features)[0][:, 0]  # (N, V)
    language_ids = torch.tensor(tokenizer.all_language_tokens, device=logits.device)
    mask = torch.ones(logits.shape[-1], dtype=torch.bool, device=logits.device)
    mask[language_ids] = False
    logits = logits.masked_fill(mask, float("-inf"))
    tokens = logits.argmax(dim=-1)
    probs = logits.softmax(dim=-1)[:, language_ids].cpu().tolist()
    dicts = [dict(zip(tokenizer.all_language_codes, row)) for row in probs]
    return (tokens[0], dicts[0]) if single else (tokens, dicts)
