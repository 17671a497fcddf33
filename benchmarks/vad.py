"""Voice activity detection: what it costs, what it saves, what it changes (tiny.en, fp32, greedy, English).

Three parts, in one process (the model loaded once and warmed up):

- `cost`: the VAD alone (`speech_regions`, model loaded) against transcribing the long file of
  benchmarks/peers.py (~11 min) without it, alternated; the VAD's share of that transcription.
- `gaps`: the shared corpus' LibriSpeech clips (and English clips, to ~2 minutes of speech) with 20 s of silence
  between them, transcribed without and with `vad_filter` (default options; and with `batch_size=8` too: the
  recording cut in the gaps between speech regions, its parts decoded together), alternated: wall times against
  the silent share (the target: the time falls by at least 0.7x that share) and WER of each against the clips'
  transcripts; the VAD alone (`speech_regions`) is timed in the same rounds, which gives what the time saved
  would be with a VAD that cost nothing; then, untimed, with word timestamps: the share of words whose start
  lies inside a clip (within 0.2 s).
- `wer`: every English file of the shared corpus (english_misc, librispeech_misc, longform) transcribed without
  and with `vad_filter`: WER against the references, and for the words both runs share (aligned on the
  normalized text), how far apart their start times are; against the same measure for the plain run and the
  plain run of the file with 1 s of silence put before it (its times moved back by 1 s): how far Whisper's
  word times move when only the windows' placement changes.

    python benchmarks/vad.py                 # all three, 3 timed runs each
    python benchmarks/vad.py --parts cost --runs 5

Output: tables on stdout, benchmarks/out/vad.json, and a final JSON line.
"""

from __future__ import annotations

import argparse
import difflib
import time
from pathlib import Path

import common
import numpy as np

GAP = 20.0
SHIFT = 1.0  # seconds of silence put before a file for the `wer` part's baseline
ENGLISH = ("english_misc", "librispeech_misc", "longform")


def _words(result) -> list[tuple[str, float]]:
    """(normalized word, start) of a result with word timestamps."""
    out = []
    for s in result.segments:
        for w in s.words or ():
            norm = common.normalize(w.word)
            for piece in norm.split():
                out.append((piece, w.start))
    return out


def part_cost(model, runs: int) -> list[dict]:
    import kvwhisper

    long = common.build_long_file()
    audio = kvwhisper.load_audio(long.path)
    times = common.alternate(
        {
            "vad": lambda: kvwhisper.speech_regions(audio),
            "transcribe": lambda: kvwhisper.transcribe(model, audio, language="en"),
        },
        runs,
        log=common.log,
    )
    ratios = [v / t for v, t in zip(times["vad"], times["transcribe"])]
    return [
        {
            "part": "cost",
            "audio_s": round(long.seconds, 1),
            "vad_s": round(common.median(times["vad"]), 3),
            "transcribe_s": round(common.median(times["transcribe"]), 2),
            "vad_share_pct": round(100 * common.median(ratios), 2),
        }
    ]


def _gapped_file(target_speech_s: float = 120.0):
    """Clips with GAP seconds of silence between them: (waveform, [(start_s, end_s)], reference text)."""
    import kvwhisper

    speech = common.require_speech()
    pieces, spans, texts, n = [], [], [], 0
    gap = np.zeros(int(GAP * common.SAMPLE_RATE), dtype=np.float32)
    for folder in ("librispeech_misc", "english_misc"):
        for name, text in common.read_transcripts(speech / folder):
            if sum(b - a for a, b in spans) >= target_speech_s:
                break
            clip = kvwhisper.load_audio(speech / folder / name)
            if len(clip) < 2 * common.SAMPLE_RATE:  # single words: no text to place
                continue
            pieces += [gap, clip]
            n += len(gap)
            spans.append((n / common.SAMPLE_RATE, (n + len(clip)) / common.SAMPLE_RATE))
            texts.append(text)
            n += len(clip)
    pieces.append(gap)
    return np.concatenate(pieces), spans, " ".join(texts)


def part_gaps(model, runs: int) -> list[dict]:
    import kvwhisper

    audio, spans, reference = _gapped_file()
    total = len(audio) / common.SAMPLE_RATE
    silent_share = 1 - sum(b - a for a, b in spans) / total
    modes = {  # name -> transcribe options
        "plain": {},
        "vad": {"vad_filter": True},
        "vad, split, batch 8": {"vad_filter": True, "batch_size": 8},
    }
    results = {}

    def runner(name):
        def run():
            results[name] = kvwhisper.transcribe(model, audio, language="en", **modes[name])

        return run

    timed = {name: runner(name) for name in modes}
    timed["speech_regions"] = lambda: kvwhisper.speech_regions(audio)
    times = common.alternate(timed, runs, log=common.log)
    rows = []
    for name, options in modes.items():
        placed = kvwhisper.transcribe(model, audio, language="en", word_timestamps=True, **options)  # untimed
        words = _words(placed)
        inside = sum(any(a - 0.2 <= t <= b + 0.2 for a, b in spans) for _, t in words)
        ratio = common.median([t / p for t, p in zip(times[name], times["plain"])])
        free = [(t - v) / p for t, v, p in zip(times[name], times["speech_regions"], times["plain"])]
        rows.append(
            {
                "part": "gaps",
                "mode": name,
                "audio_s": round(total, 1),
                "silent_pct": round(100 * silent_share, 1),
                "wall_s": round(common.median(times[name]), 2),
                "time_saved_pct": round(100 * (1 - ratio), 1),
                "saved_if_vad_free_pct": round(100 * (1 - common.median(free)), 1) if options else None,
                "vad_s": round(common.median(times["speech_regions"]), 3) if options else None,
                "target_pct": round(70 * silent_share, 1) if options else None,
                "wer_pct": round(100 * common.wer(reference, results[name].text), 2),
                "words_in_their_clip_pct": round(100 * inside / max(1, len(words)), 1),
            }
        )
    return rows


def part_wer(model) -> list[dict]:
    import kvwhisper

    speech = common.require_speech()
    refs, hyps = {False: [], True: []}, {False: [], True: []}
    deltas, shifted = [], []
    at_zero = 0  # words more than 0.2 s apart that are a file's first, at 0.0 s in the plain run
    for folder in ENGLISH:
        for name, text in common.read_transcripts(speech / folder):
            path = speech / folder / name
            out = {
                vad: kvwhisper.transcribe(
                    model, str(path), language="en", word_timestamps=True, vad_filter=vad
                )
                for vad in (False, True)
            }
            for vad in (False, True):
                refs[vad].append(text)
                hyps[vad].append(out[vad].text)
            a, b = _words(out[False]), _words(out[True])
            deltas += _start_deltas(a, b)
            if a and b and a[0][0] == b[0][0] and a[0][1] == 0.0 and b[0][1] > 0.2:
                at_zero += 1
            audio = kvwhisper.load_audio(str(path))
            silence = np.zeros(int(SHIFT * common.SAMPLE_RATE), dtype=np.float32)
            later = kvwhisper.transcribe(
                model, np.concatenate([silence, audio]), language="en", word_timestamps=True
            )
            shifted += _start_deltas(a, [(w, t - SHIFT) for w, t in _words(later)])
    rows = []
    for vad in (False, True):
        rows.append(
            {
                "part": "wer",
                "mode": "vad" if vad else "plain",
                "files": len(refs[vad]),
                "wer_pct": round(100 * common.wer(" ".join(refs[vad]), " ".join(hyps[vad])), 2),
                "shared_words": len(deltas) if vad else None,
                "start_within_0.2s_pct": round(100 * np.mean(np.array(deltas) <= 0.2), 1) if vad else None,
                "start_delta_median_s": round(float(np.median(deltas)), 3) if vad else None,
                "start_delta_p99_s": round(float(np.percentile(deltas, 99)), 3) if vad else None,
                "over_0.2s": int(np.sum(np.array(deltas) > 0.2)) if vad else None,
                "over_0.2s_first_word_at_0": at_zero if vad else None,
            }
        )
    rows.append(
        {
            "part": "wer",
            "mode": f"plain, and plain after {SHIFT:g} s of silence",
            "shared_words": len(shifted),
            "start_within_0.2s_pct": round(100 * np.mean(np.array(shifted) <= 0.2), 1),
            "start_delta_median_s": round(float(np.median(shifted)), 3),
            "start_delta_p99_s": round(float(np.percentile(shifted, 99)), 3),
        }
    )
    return rows


def _start_deltas(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> list[float]:
    """|start difference| of the words two runs share (aligned on the normalized words)."""
    matcher = difflib.SequenceMatcher(a=[w for w, _ in a], b=[w for w, _ in b], autojunk=False)
    return [
        abs(a[block.a + k][1] - b[block.b + k][1])
        for block in matcher.get_matching_blocks()
        for k in range(block.size)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--parts", nargs="+", default=["cost", "gaps", "wer"], choices=["cost", "gaps", "wer"]
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    import kvwhisper

    torch.set_num_threads(args.threads)
    model = kvwhisper.load_model("tiny.en", device="cpu")
    warm = common.require_speech() / "english_misc" / "jfk.flac"
    kvwhisper.transcribe(model, str(warm), vad_filter=True)  # first use: kernels, the VAD's model
    rows = []
    t0 = time.perf_counter()
    if "cost" in args.parts:
        rows += part_cost(model, args.runs)
    if "gaps" in args.parts:
        rows += part_gaps(model, args.runs)
    if "wer" in args.parts:
        rows += part_wer(model)
    common.log(f"done in {time.perf_counter() - t0:.0f} s")
    columns = [(k, k, "") for k in dict.fromkeys(k for r in rows for k in r)]
    return common.report(
        "vad",
        "Voice activity detection (tiny.en, fp32, greedy)",
        rows,
        columns,
        Path(common.OUT / "vad.json"),
    )


if __name__ == "__main__":
    raise SystemExit(main())
