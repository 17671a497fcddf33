"""`kvwhisper mel FILE`: decode a file and print its duration and log-mel shape (a frontend check)."""

from __future__ import annotations

from ..audio import SAMPLE_RATE, load_audio, log_mel_spectrogram


def add_parser(sub) -> None:
    p = sub.add_parser("mel", help="print a file's duration and log-mel spectrogram shape")
    p.add_argument("file")
    p.add_argument("--n-mels", type=int, default=80, choices=(80, 128))
    p.set_defaults(func=run)


def run(args) -> int:
    audio = load_audio(args.file)
    mel = log_mel_spectrogram(audio, n_mels=args.n_mels)
    print(
        f"{args.file}: {len(audio) / SAMPLE_RATE:.2f} s, log-mel {tuple(mel.shape)}, "
        f"min {mel.min().item():.3f} max {mel.max().item():.3f}"
    )
    return 0
