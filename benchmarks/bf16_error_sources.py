"""Where a bf16 encoder's error comes from: an fp32 encoder with bf16 roundings switched on one kind at a time.

The encoder of the fp32 model is run in plain fp32 torch operations, with these roundings to bf16 (round to
nearest even) applied or not:

- weights: every matrix (linear and convolution) weight rounded, as a bf16 model holds it;
- activations: every product's input (the mel, the convolutions' and linears' inputs) rounded, as a bf16
  product rounds it;
- attention: the self-attention's q, k and v rounded;
- probabilities: the attention probabilities rounded before their product with v (as the AMX kernel and
  torch's bf16 flash attention do);
- stream: the residual stream rounded after every add (a bf16 model's stream is bf16);
- output: the encoder's output rounded;
- biases: every bias (linear and convolution) and the positional embedding rounded, as a bf16 model holds them;
- convolutions: the convolutions' outputs and their GELUs' rounded (each a bf16 tensor in a bf16 model).

For each combination the table gives the mean |encoder output - fp32's| over the first 30 s of every English
clip of the shared corpus, and on how many clips the fp32 decoder, given that output, chooses fp32's greedy
tokens; the last rows are the bf16 models' own encoders: `load_model(dtype="bf16")`'s (on a CPU with the C
kernels its encoder keeps the residual stream, biases and positional embedding in fp32: model/registry.py's
`exact`) and the model with every matrix and bias in bf16 (without `exact`).

    python benchmarks/bf16_error_sources.py [--threads 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import common
import torch
import torch.nn.functional as F

import kvwhisper
from kvwhisper.decoding import decode

KINDS = ("weights", "activations", "attention", "probabilities", "stream", "output", "biases", "convolutions")
SIX = KINDS[:6]
CASES = {
    "none (fp32)": (),
    "weights": ("weights",),
    "activations": ("activations",),
    "attention q/k/v": ("attention",),
    "weights + activations + attention": ("weights", "activations", "attention"),
    "... + probabilities": ("weights", "activations", "attention", "probabilities"),
    "... + output": ("weights", "activations", "attention", "output"),
    "... + stream": ("weights", "activations", "attention", "stream"),
    "the six above": SIX,
    "the six but the stream": ("weights", "activations", "attention", "probabilities", "output"),
    "the six + biases": (*SIX, "biases"),
    "the six + convolutions": (*SIX, "convolutions"),
    "all eight": KINDS,
}


def _round(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).float()


def encode(model, rounded_weights, mel: torch.Tensor, kinds: tuple[str, ...]) -> torch.Tensor:
    """The fp32 encoder of `model` on mel (1, n_mels, 3000) with the bf16 roundings of `kinds`."""
    e = model.encoder
    w = rounded_weights if "weights" in kinds else {}
    a = _round if "activations" in kinds else (lambda t: t)
    s = _round if "stream" in kinds else (lambda t: t)

    b = _round if "biases" in kinds else (lambda t: t)
    c = _round if "convolutions" in kinds else (lambda t: t)

    def weight(module):
        return w.get(id(module.weight), module.weight)

    def linear(x, m):
        return F.linear(a(x), weight(m), None if m.bias is None else b(m.bias))

    x = c(F.gelu(c(F.conv1d(a(mel), weight(e.conv1), b(e.conv1.bias), padding=1))))
    x = c(F.gelu(c(F.conv1d(a(x), weight(e.conv2), b(e.conv2.bias), stride=2, padding=1)))).permute(0, 2, 1)
    x = s(x + b(e.positional_embedding))
    for block in e.blocks:
        attn = block.attn
        h = block.attn_ln(x)
        q, k, v = (linear(h, m) for m in (attn.query, attn.key, attn.value))
        N, T, C = q.shape
        H = attn.n_head
        q, k, v = (t.view(N, T, H, C // H).transpose(1, 2) for t in (q, k, v))
        if "attention" in kinds:
            q, k, v = _round(q), _round(k), _round(v)
        p = torch.softmax((q * (C // H) ** -0.5) @ k.transpose(-1, -2), dim=-1)
        if "probabilities" in kinds:
            p = _round(p)
        o = (p @ v).transpose(1, 2).reshape(N, T, C)
        x = s(x + linear(o, attn.out))
        x = s(x + linear(F.gelu(linear(block.mlp_ln(x), block.mlp[0])), block.mlp[2]))
    y = e.ln_post(x)
    return _round(y) if "output" in kinds else y


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(common.OUT / "bf16_error_sources.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    mels = common.english_clip_mels()
    fp32 = kvwhisper.load_model(args.model, dtype="fp32")
    bf16 = kvwhisper.load_model(args.model, dtype="bf16")
    all_bf16 = common.load_all_bf16(args.model)
    models = {
        "the bf16 model's encoder": bf16,
        "every matrix and bias bf16 (the model without exact)": all_bf16,
    }
    rounded = {
        id(m.weight): _round(m.weight)
        for m in fp32.encoder.modules()
        if getattr(m, "weight", None) is not None and m.weight.dim() >= 2
    }
    names = [*CASES, *models]
    same = dict.fromkeys(names, 0)
    diff = dict.fromkeys(names, 0.0)
    with torch.inference_mode():
        for mel in mels:
            reference = fp32.embed_audio(mel[None])
            tokens = decode(fp32, reference)[0].tokens
            for name in names:
                if name in CASES:
                    features = encode(fp32, rounded, mel[None], CASES[name])
                else:
                    features = models[name].embed_audio(mel[None]).float()
                diff[name] += (features - reference).abs().mean().item() / len(mels)
                same[name] += decode(fp32, features)[0].tokens == tokens
    rows = [{"roundings": n, "enc_diff": diff[n], "same": same[n], "clips": len(mels)} for n in names]
    title = f"bf16 roundings in an fp32 encoder, {args.model}, {len(mels)} English clips (first 30 s each)"
    cols = [
        ("roundings", "bf16 roundings", ""),
        ("enc_diff", "mean |encoder output - fp32|", ".5f"),
        ("same", "clips with fp32's tokens (fp32 decoder)", "d"),
        ("clips", "clips", "d"),
    ]
    return common.report("bf16_error_sources", title, rows, cols, Path(args.out))


if __name__ == "__main__":
    raise SystemExit(main())
