"""Writers: byte-equal to the reference's (whisper.utils) for every format and subtitle option."""

from __future__ import annotations

import itertools

import pytest

from kvwhisper.timing import Word
from kvwhisper.transcribe import Segment, TranscriptionResult
from kvwhisper.transcribe.writers import FORMATS, format_timestamp, get_writer

whisper_utils = pytest.importorskip("whisper.utils")


def _words(start: float, text: str, step: float = 0.37) -> list[dict]:
    out, t = [], start
    for i, w in enumerate(text.split(" ")):
        out.append(
            {
                "word": (" " if i or start > 0 else "") + w,
                "start": round(t, 2),
                "end": round(t + step, 2),
                "probability": 0.5 + 0.01 * i,
            }
        )
        t += step + (0.05 if i % 3 else 0.0)
    return out


def _segment(i: int, start: float, text: str, with_words: bool = True) -> dict:
    words = _words(start, text.strip())
    seg = {
        "id": i,
        "seek": int(start * 100),
        "start": start,
        "end": words[-1]["end"],
        "text": text,
        "tokens": [50364 + i, 400 + i],
        "temperature": 0.0,
        "avg_logprob": -0.25,
        "compression_ratio": 1.3,
        "no_speech_prob": 0.01,
    }
    if with_words:
        seg["words"] = words
    return seg


def result_dict(with_words: bool = True) -> dict:
    texts = [
        (0.0, "And so, my fellow Americans: ask not what your country can do for you."),
        (6.5, " Ask what you can do --> for your country!"),
        (13.0, " Un café\tnoir, «s'il vous plaît» — merci."),  # tab, non-ASCII
        (25.0, " After a long pause of more than three seconds."),
        (3599.2, " Across the hour mark, with hours shown."),
        (3612.0, " short"),
    ]
    segments = [_segment(i, s, t, with_words) for i, (s, t) in enumerate(texts)]
    return {"text": "".join(t for _, t in texts), "segments": segments, "language": "en"}


OPTION_SETS = [
    {},
    {"max_line_width": 20},
    {"max_line_width": 20, "max_line_count": 2},
    {"max_line_width": 12, "max_line_count": 1},
    {"max_line_count": 2},
    {"highlight_words": True},
    {"highlight_words": True, "max_line_width": 25, "max_line_count": 2},
    {"max_words_per_line": 3},
    {"max_words_per_line": 2, "max_line_count": 3},
]


def _write(get, fmt: str, result, out_dir, **kwargs) -> bytes:
    out_dir.mkdir(parents=True, exist_ok=True)
    get(fmt, str(out_dir))(result, "/some/where/talk.final.mp3", **kwargs)
    return (out_dir / f"talk.final.{fmt}").read_bytes()


@pytest.mark.parametrize("with_words", [True, False])
@pytest.mark.parametrize("fmt", FORMATS)
def test_writers_byte_equal_to_reference(tmp_path, fmt, with_words):
    result = result_dict(with_words)
    option_sets = OPTION_SETS if fmt in ("srt", "vtt") else [{}]
    for n, options in enumerate(option_sets):
        ours = _write(get_writer, fmt, result, tmp_path / f"ours{n}", **options)
        ref = _write(whisper_utils.get_writer, fmt, result, tmp_path / f"ref{n}", **options)
        assert ours == ref, f"{fmt} with {options}:\n{ours.decode()}\n---- reference ----\n{ref.decode()}"
        assert ours  # something was written


def test_options_dict_is_read_like_the_reference(tmp_path):
    result = result_dict()
    options = {"max_line_width": 18, "max_line_count": 2, "highlight_words": True}
    for fmt in ("srt", "vtt"):
        ours = tmp_path / "ours"
        ours.mkdir(exist_ok=True)
        get_writer(fmt, ours)(result, "a.wav", options)
        ref = tmp_path / "ref"
        ref.mkdir(exist_ok=True)
        whisper_utils.get_writer(fmt, str(ref))(result, "a.wav", options)
        assert (ours / f"a.{fmt}").read_bytes() == (ref / f"a.{fmt}").read_bytes()


def test_all_writes_five_files_and_accepts_a_transcription_result(tmp_path):
    d = result_dict()
    segments = tuple(
        Segment(
            s["id"],
            s["seek"],
            s["start"],
            s["end"],
            s["text"],
            tuple(s["tokens"]),
            s["temperature"],
            s["avg_logprob"],
            s["compression_ratio"],
            s["no_speech_prob"],
            tuple(Word(w["word"], w["start"], w["end"], w["probability"]) for w in s["words"]),
        )
        for s in d["segments"]
    )
    result = TranscriptionResult(d["text"], segments, "en")
    assert result.to_dict() == d
    (tmp_path / "ours").mkdir()
    paths = get_writer("all", tmp_path / "ours")(result, "x/talk.wav")
    assert sorted(p.rsplit(".", 1)[1] for p in paths) == sorted(FORMATS)
    (tmp_path / "ref").mkdir()
    whisper_utils.get_writer("all", str(tmp_path / "ref"))(d, "x/talk.wav")
    for fmt in FORMATS:
        assert (tmp_path / "ours" / f"talk.{fmt}").read_bytes() == (
            tmp_path / "ref" / f"talk.{fmt}"
        ).read_bytes()


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown output format"):
        get_writer("docx", tmp_path)


@pytest.mark.parametrize(
    "seconds", [0.0, 0.0004, 0.0005, 0.0015, 1.999, 59.9996, 61.25, 3599.9995, 3600.0, 7322.123, 360000.5]
)
def test_format_timestamp_equals_reference(seconds):
    for hours, marker in itertools.product((False, True), (".", ",")):
        assert format_timestamp(seconds, hours, marker) == whisper_utils.format_timestamp(
            seconds, hours, marker
        )


def test_format_timestamp_refuses_negative():
    with pytest.raises(ValueError):
        format_timestamp(-0.5)
