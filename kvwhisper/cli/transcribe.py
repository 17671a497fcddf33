"""`kvwhisper transcribe FILE...`: transcribe files (first 30-second window; long-form comes with transcribe.py)."""

from __future__ import annotations

import sys

from ..audio import AudioError, load_audio, log_mel_spectrogram, pad_or_trim
from ..engine import DecodingOptions, load_model


def add_parser(sub) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio or video files")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--model", default="tiny.en", help="model name or checkpoint path (default: tiny.en)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=("fp32", "fp16", "bf16"))
    p.add_argument("--language", default=None)
    p.add_argument("--beam-size", type=int, default=None)
    p.set_defaults(func=run)


def run(args) -> int:
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    options = DecodingOptions(language=args.language, beam_size=args.beam_size)
    failed = 0
    for path in args.files:
        try:
            mel = log_mel_spectrogram(pad_or_trim(load_audio(path)), n_mels=model.dims.n_mels)
        except AudioError as e:
            print(f"kvwhisper: error: {e}", file=sys.stderr)
            failed += 1
            continue
        print(model.decode(mel, options).text)
    return 1 if failed else 0
