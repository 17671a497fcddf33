"""How close bf16 decoding stays to fp32: greedy tokens of every English clip of the corpus, bf16 against fp32.

A steadier measure of bf16's accuracy than the long file's WER, which moves by a point or more when one window
goes another way (and conditioning on previous text carries that into the next windows). Each clip's first
30 s window is decoded greedily (timestamps on, the CLI's defaults) by the fp32 model and by the bf16 model in
several variants; the table gives how many clips get exactly fp32's tokens, and the mean |difference| of the
encoder output.

- bf16: the default: `load_model(dtype="bf16")` on the CPU (model/registry.py's `exact`): the encoder's and the
  audio K/V's products in bf16, the encoder's residual stream, biases and positional embedding in fp32, the
  decoder's other matrices the checkpoint's fp16 numbers, its residual stream fp32; encoder self-attention on
  AMX where the CPU has it, probabilities rounded to bf16, else in fp32 head by head;
- bf16, every matrix and bias bf16: the model without `exact` (what the CPU kernels' absence gives, and the
  default before), its encoder's residual stream bf16;
- bf16, bf16 stream: the decoder's residual stream rounded to bf16;
- bf16, fp32 encoder attention: the encoder's self-attention in fp32 head by head (the default without AMX);
- bf16, AMX attention, 16-bit probabilities: the AMX kernel with the probabilities as hi + lo bf16 (`amx.SPLIT`,
  AMX CPUs only);
- bf16, SDPA encoder: the encoder's self-attention through the bf16 flash kernel;
- bf16 encoder + fp32 decoder / fp32 encoder + bf16 decoder: where the differences come from.

    python benchmarks/bf16_agreement.py [--threads 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import common
import torch
import torch.nn.functional as F

import kvwhisper
from kvwhisper.cpu import amx
from kvwhisper.cpu.ops import CPUOps
from kvwhisper.decoding import decode
from kvwhisper.model import network as model_mod


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(common.OUT / "bf16_agreement.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    mels = common.english_clip_mels()
    fp32 = kvwhisper.load_model(args.model, dtype="fp32")
    bf16 = kvwhisper.load_model(args.model, dtype="bf16")
    all_bf16 = common.load_all_bf16(args.model)
    embed, self_attend = model_mod.TextDecoder.embed, CPUOps.self_attend

    def sdpa(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)

    def bf16_stream(self, tokens, position):
        return embed(self, tokens, position).to(torch.bfloat16)

    variants = [
        "bf16",
        "bf16, every matrix and bias bf16",
        "bf16, bf16 stream",
        "bf16, fp32 encoder attention",
        *(["bf16, AMX attention, 16-bit probabilities"] if amx.available() else []),
        "bf16, SDPA encoder",
        "bf16 encoder + fp32 decoder",
        "fp32 encoder + bf16 decoder",
    ]
    same = dict.fromkeys(variants, 0)
    enc_diff = dict.fromkeys(variants, 0.0)
    try:
        with torch.inference_mode():
            for mel in mels:
                f32 = fp32.embed_audio(mel[None])
                ref = decode(fp32, f32)[0].tokens
                for v in variants:
                    model_mod.TextDecoder.embed = bf16_stream if v == "bf16, bf16 stream" else embed
                    CPUOps.self_attend = sdpa if "SDPA" in v else self_attend
                    amx.ENABLED = v != "bf16, fp32 encoder attention"
                    amx.SPLIT = v == "bf16, AMX attention, 16-bit probabilities"
                    model = all_bf16 if v == "bf16, every matrix and bias bf16" else bf16
                    f16 = model.embed_audio(mel[None])
                    if v == "bf16 encoder + fp32 decoder":
                        tokens = decode(fp32, f16.float())[0].tokens
                    elif v == "fp32 encoder + bf16 decoder":
                        tokens = decode(bf16, f32)[0].tokens
                    else:
                        tokens = decode(model, f16)[0].tokens
                    same[v] += tokens == ref
                    enc_diff[v] += (f16.float() - f32).abs().mean().item() / len(mels)
    finally:
        model_mod.TextDecoder.embed, CPUOps.self_attend = embed, self_attend
        amx.ENABLED, amx.SPLIT = True, False
    rows = [{"variant": v, "same": same[v], "clips": len(mels), "enc_diff": enc_diff[v]} for v in variants]
    title = f"Greedy tokens equal to fp32's, {args.model}, {len(mels)} English clips (first 30 s each)"
    cols = [
        ("variant", "variant", ""),
        ("same", "clips with fp32's tokens", "d"),
        ("clips", "clips", "d"),
        ("enc_diff", "mean |encoder output - fp32|", ".4f"),
    ]
    return common.report("bf16_agreement", title, rows, cols, Path(args.out))


if __name__ == "__main__":
    raise SystemExit(main())
