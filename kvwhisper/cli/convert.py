"""`kvwhisper convert SRC DST --to openai|hf`: write loaded weights in the reference's or Hugging Face's layout.

So the reference and the peers can run on the very same numbers as kvwhisper (fp32 unless --dtype says otherwise).
"""

from __future__ import annotations

from pathlib import Path

from ..model import load_model
from ..model.checkpoints import write_hf, write_openai


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="write a model's weights as a reference .pt or a Hugging Face folder")
    p.add_argument("src", help="model name (tiny.en, base, ...) or checkpoint file/folder")
    p.add_argument("dst", help="output .pt file (--to openai) or folder (--to hf)")
    p.add_argument("--to", choices=("openai", "hf"), required=True)
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.set_defaults(func=run)


def run(args) -> int:
    model = load_model(args.src, device="cpu", dtype=args.dtype)
    dst = Path(args.dst)
    if args.to == "openai":
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_openai(model, dst)
    else:
        write_hf(model, dst)
    print(f"wrote {args.to} checkpoint of {args.src} ({model.dtype}) to {dst}")
    return 0
