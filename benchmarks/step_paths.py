"""One cached decode step, six CPU code paths side by side: what packed weights, `attend`, fusion, the C kernels
and the one-call layer step buy.

- plain: every decoder linear layer and the output projection through `F.linear`, attention through
  `scaled_dot_product_attention` (kvwhisper before packed.py);
- packed: the linear layers and the output projection through oneDNN-packed weights (packed.py);
- packed+attend: also `CPUOps.attend`, fp32 attention for bf16 decode steps (in fp32 `attend` is SDPA
  itself, so this column equals `packed` there, up to noise);
- packed+attend+fused: also the fused products (packed.FUSE: q/k/v as one product, GELU and the residual
  adds inside the oneDNN calls): the default where the C kernels are not built;
- kernels: also the C kernels of kvwhisper/cpu/kernels.py (products over 2-byte weights in fp32 arithmetic,
  few-query attention), op by op (`ops.BLOCK_STEP = False`);
- kernels, layer call: each decoder layer's step in one C call (`kernels.decoder_layer`): the default where
  the kernels are built (x86-64 with AVX-512 or AVX2).

The paths alternate round by round in one process (the machine is shared and noisy); each round times
`--steps` steps of one token after a short prefix, the table gives the median step time per path.
Also the matrix-vector products alone (each weight shape of tiny.en's decoder, enough copies of it that they
do not stay in cache): `F.linear` against the packed inner product, in GB/s of weight read.

    python benchmarks/step_paths.py [--threads 2] [--rounds 8] [--dtype fp32 bf16] [--beam-size 1 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import common
import torch
import torch.nn.functional as F

import kvwhisper
from kvwhisper.audio import load_audio, log_mel_spectrogram, pad_or_trim
from kvwhisper.cpu import kernels, ops, packed
from kvwhisper.cpu.ops import CPUOps

JFK = common.REPO / "tests" / "data" / "jfk.flac"


def _sdpa(self, q, k, v):
    # in the activations' dtype (bf16 models keep fp32 cross K/V on CPU now: converted here, ~0.1 ms a step)
    return F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype))


ATTEND = CPUOps.attend
PATHS = {  # name: (packed weights, fused products, decode-step attention, C kernels, a layer in one call)
    "plain": (False, False, _sdpa, False, False),
    "packed": (True, False, _sdpa, False, False),
    "packed+attend": (True, False, ATTEND, False, False),
    "packed+attend+fused": (True, True, ATTEND, False, False),
    "kernels": (True, True, ATTEND, True, False),
    "kernels, layer call": (True, True, ATTEND, True, True),
}


def step_times(model_name: str, dtype: str, batch: int, rounds: int, steps: int) -> dict[str, float]:
    model = kvwhisper.load_model(model_name, device="cpu", dtype=dtype)
    mel = log_mel_spectrogram(pad_or_trim(load_audio(JFK)))[None]
    sot = list(model.tokenizer.sot_sequence)
    times: dict[str, list[float]] = {name: [] for name in PATHS}
    try:
        with torch.inference_mode():
            cache = model.new_cache(batch)
            model.fill_cross(cache, model.embed_audio(mel))
            model.decoder(torch.tensor([sot] * batch), cache)
            start = cache.position
            token = torch.tensor([[model.tokenizer.encode(" And")[0]]] * batch)
            for _ in range(rounds):
                for name, (enabled, fuse, attend, kern, layer_call) in PATHS.items():
                    packed.ENABLED, packed.FUSE, CPUOps.attend = enabled, fuse, attend
                    kernels.ENABLED, ops.BLOCK_STEP = kern, layer_call
                    cache.rewind(start)
                    for _ in range(3):  # warm-up (the packed copies are made here)
                        model.decoder(token, cache, positions=(-1,))
                    cache.rewind(start)
                    t0 = time.perf_counter()
                    for _ in range(steps):
                        model.decoder(token, cache, positions=(-1,))
                    times[name].append((time.perf_counter() - t0) / steps * 1e3)
    finally:
        packed.ENABLED, packed.FUSE, CPUOps.attend = True, True, ATTEND
        kernels.ENABLED, ops.BLOCK_STEP = True, True
    return {name: statistics.median(v) for name, v in times.items()}


def gemv_bandwidth(shape: tuple[int, int], dtype: torch.dtype, copies: int) -> dict[str, float]:
    out_f, in_f = shape
    # fp16 numbers, as a checkpoint's weights are (so that the fp16-weight kernel takes the fp32 ones)
    ws = [torch.randn(out_f, in_f).half().to(dtype) for _ in range(copies)]
    x = torch.randn(1, in_f, dtype=dtype)
    fns = {"F.linear": lambda k: F.linear(x, ws[k])}
    if packed._supported(dtype):
        ps = [torch.ops.mkldnn._reorder_linear_weight(w, packed.PACK_BATCH) for w in ws]
        fns["packed"] = lambda k: torch.ops.mkldnn._linear_pointwise(x, ps[k], None, "none", [], "")
    if dtype == torch.float32 and kernels.available():
        hs = [packed.pack_half(w, [None], [out_f])[0] for w in ws]
        fns["kernel"] = lambda k: kernels.gemv(x, hs[k], None, out_f)
    result = {}
    for name, fn in fns.items():
        best = float("inf")
        for _ in range(4):
            t0 = time.perf_counter()
            for k in range(copies):
                fn(k)
            best = min(best, (time.perf_counter() - t0) / copies)
        result[name] = out_f * in_f * ws[0].element_size() / best / 1e9
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--dtype", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--beam-size", nargs="+", type=int, default=[1, 5])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--out", default=str(common.OUT / "step_paths.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = []
    for dtype in args.dtype:
        for batch in args.beam_size:
            t = step_times(args.model, dtype, batch, args.rounds, args.steps)
            rows.append(
                {
                    "config": f"{dtype} rows {batch}",
                    **{k: round(v, 2) for k, v in t.items()},
                    "speedup": round(t["plain"] / t["kernels, layer call"], 2),
                }
            )
            common.log(f"{rows[-1]}")
    print(f"\nCached decode step, {args.model}, {args.threads} threads, median ms of {args.rounds} rounds\n")
    cols = (
        [("config", "config", "")]
        + [(k, f"{k} ms", ".2f") for k in PATHS]
        + [("speedup", "plain / now", ".2f")]
    )
    print(common.format_table(rows, cols))

    gemv = []
    dims = kvwhisper.load_model(args.model, device="cpu").dims
    d, v = dims.n_text_state, dims.n_vocab
    for dtype in (torch.float32, torch.bfloat16):
        for shape, copies in (((d, d), 200), ((4 * d, d), 60), ((d, 4 * d), 60), ((v, d), 3)):
            bw = gemv_bandwidth(shape, dtype, copies)
            gemv.append({"dtype": str(dtype).split(".")[-1], "weight": f"{shape[0]}x{shape[1]}", **bw})
    print(
        "\nOne-row products, GB/s of the weight's bytes in its dtype (higher is better; the fp32 kernel reads "
        "half of them, as fp16)\n"
    )
    print(
        common.format_table(
            gemv,
            [
                ("dtype", "dtype", ""),
                ("weight", "weight", ""),
                ("F.linear", "F.linear", ".1f"),
                ("packed", "packed", ".1f"),
                ("kernel", "fp16-weight kernel", ".1f"),
            ],
        )
    )
    path = common.save_json(Path(args.out), {"steps": rows, "gemv": gemv, "machine": common.machine_info()})
    print(f"\nJSON: {path}")
    common.final_line({"benchmark": "step_paths", "rows": rows, "json": str(path)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
