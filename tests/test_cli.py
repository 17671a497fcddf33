"""`kvwhisper transcribe`: stdout transcript, transcript files, one-line errors per bad file, option checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

import kvwhisper
import kvwhisper.model
from kvwhisper.cli import main

JFK_WORDS = "ask not what your country can do for you"
FORMATS = ("txt", "vtt", "srt", "tsv", "json")
GREEDY = ["--beam-size", "None", "--best-of", "None"]


@pytest.fixture(scope="module")
def cached_model():
    return kvwhisper.load_model("tiny.en", device="cpu")


@pytest.fixture
def cli(monkeypatch, cached_model):
    """Run `kvwhisper ...` in this process with the model loaded once; returns the exit status."""
    monkeypatch.setattr(kvwhisper.model, "load_model", lambda *a, **k: cached_model)
    return main


@pytest.mark.slow
def test_transcribe_prints_the_transcript(jfk_path, tmp_path):
    """The real entry point, default options (beam search 5, segments printed as decoded, as the reference's
    CLI)."""
    proc = subprocess.run(
        [sys.executable, "-m", "kvwhisper", "transcribe", str(jfk_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines and all(line.startswith("[00:") and " --> " in line for line in lines), proc.stdout
    text = " ".join(line.split("]", 1)[1].strip() for line in lines)
    assert JFK_WORDS in text.lower().replace(",", "")
    assert list(tmp_path.iterdir()) == []  # nothing written without --output-dir / --output-format


def test_bad_files_get_one_line_each_and_the_good_one_is_still_written(cli, jfk_path, tmp_path, capsys):
    missing = tmp_path / "no_such_file.wav"
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("this is not audio\n" * 50)
    out = tmp_path / "out"
    status = cli(
        ["transcribe", str(missing), str(jfk_path), str(not_audio), "-o", str(out), "-f", "txt", *GREEDY]
    )
    captured = capsys.readouterr()
    assert status != 0
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2, captured.err
    assert str(missing) in errors[0] and "not found" in errors[0]
    assert str(not_audio) in errors[1]
    assert all(line.startswith("kvwhisper: error: ") for line in errors)
    assert JFK_WORDS in (out / "jfk.txt").read_text().lower().replace(",", "")
    assert sorted(p.name for p in out.iterdir()) == ["jfk.txt"]


def test_several_files_to_stdout_are_labelled(cli, jfk_path, tmp_path, capsys):
    missing = tmp_path / "gone.mp3"
    assert cli(["transcribe", str(jfk_path), str(missing), "--verbose", "False", *GREEDY]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == f"==> {jfk_path} <==" and JFK_WORDS in lines[1].lower().replace(",", "")
    assert len(lines) == 2
    errors = [line for line in captured.err.splitlines() if line.startswith("kvwhisper: error: ")]
    assert len(errors) == 1 and str(missing) in errors[0]
    assert "11.0/11.0" in captured.err  # --verbose False: a progress bar over the audio's seconds


def test_output_format_all_writes_the_five_files(cli, jfk_path, tmp_path, capsys):
    out = tmp_path / "subs"
    assert cli(["transcribe", str(jfk_path), "-o", str(out), "-f", "all", "--verbose", "False", *GREEDY]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"jfk.{ext}" for ext in FORMATS)
    assert capsys.readouterr().out == ""  # files written instead of printing
    data = json.loads((out / "jfk.json").read_text())
    assert set(data) == {"text", "segments", "language"} and data["language"] == "en"
    assert (out / "jfk.srt").read_text().startswith("1\n00:00:00,000 --> 00:00:")
    assert (out / "jfk.vtt").read_text().startswith("WEBVTT\n\n00:00.000 --> ")
    assert (out / "jfk.tsv").read_text().startswith("start\tend\ttext\n0\t")
    txt = (out / "jfk.txt").read_text()
    assert txt.strip() == "\n".join(s["text"].strip() for s in data["segments"])


def test_word_timestamps_subtitles_and_reference_spellings(cli, jfk_path, tmp_path):
    out = tmp_path / "w"
    status = cli(
        [
            "transcribe",
            str(jfk_path),
            "--output_dir",
            str(out),
            "--output_format",
            "srt",
            "--word_timestamps",
            "True",
            "--max-line-width",
            "24",
            "--max-line-count",
            "2",
            "--highlight-words",
            "True",
            *GREEDY,
        ]
    )
    assert status == 0
    srt = (out / "jfk.srt").read_text()
    assert "<u>" in srt and "</u>" in srt
    assert all(len(line) <= 24 + len("<u></u>") for line in srt.splitlines() if not line[:1].isdigit())


def test_word_options_need_word_timestamps(jfk_path, capsys):
    assert main(["transcribe", str(jfk_path), "--max-line-width", "30"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--word-timestamps True" in err


def test_bool_options_take_true_or_false(jfk_path, capsys):
    with pytest.raises(SystemExit):
        main(["transcribe", str(jfk_path), "--word-timestamps", "yes"])
    assert "expected True or False" in capsys.readouterr().err


def test_help_says_where_the_output_goes(capsys):
    with pytest.raises(SystemExit):
        main(["transcribe", "--help"])
    out = capsys.readouterr().out
    for option in (
        "--temperature-increment-on-fallback",
        "--clip-timestamps",
        "--hallucination-silence-threshold",
        "--carry-initial-prompt",
        "--output-format",
    ):
        assert option in out
    assert "printed to stdout" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], 0.2),
        (["--repeat-no-speech-threshold", "None"], None),
        (["--repeat_no_speech_threshold", "0.5"], 0.5),
    ],
)
def test_repeat_guard_option_reaches_transcribe(argv, expected, cached_model):
    import argparse

    from kvwhisper.cli import transcribe as cli_transcribe

    parser = argparse.ArgumentParser()
    cli_transcribe.add_parser(parser.add_subparsers())
    args = parser.parse_args(["transcribe", "x.wav", *argv])
    options = cli_transcribe.transcribe_options(args, cached_model)
    assert options["repeat_no_speech_threshold"] == expected
    assert options["compile"] is False
    args = parser.parse_args(["transcribe", "x.wav", "--compile"])
    assert cli_transcribe.transcribe_options(args, cached_model)["compile"] is True


@pytest.mark.slow
def test_bench_cli_writes_table_json_and_plot(jfk_path, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    argv = ["bench", str(jfk_path), "--dtype", "fp32", "--beam-size", "1", "--runs", "1", "--sample-len", "6"]
    assert main([*argv, "--breakdown", "--out", str(tmp_path), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    final = json.loads(out.strip().splitlines()[-1])
    assert final["benchmark"] == "kv_cache" and final["fp32_beam1_w0_full_step_ms"] > 0
    assert final["fp32_beam1_w0_full_vs_none"]["6"] > 0
    report = json.loads((tmp_path / "kv_cache.json").read_text())
    assert (tmp_path / "kv_cache.png").stat().st_size > 0
    assert "Where a cached (full) step's time goes" in out and "| full |" in out
    assert sorted(r["mode"] for r in report["results"]) == ["full", "none", "self_only"]
    assert all(len(r["step_ms"]) == 6 for r in report["results"])  # a latency per generated position


def test_batch_size_writes_what_the_unbatched_run_writes(cli, jfk_path, tmp_path, capsys):
    """--batch-size: the files' windows decoded together; each file's transcript files are byte for byte the
    unbatched run's, a bad file gets its one line and the others are still written."""
    data = jfk_path.parent
    files = [
        str(jfk_path),
        str(data / "librosa_robin.ogg"),
        str(tmp_path / "gone.wav"),
        str(data / "common_voice_en_22058267.mp3"),
    ]
    common = ["-f", "all", "--verbose", "False", "--word-timestamps", "True", *GREEDY]
    assert cli(["transcribe", *files, "-o", str(tmp_path / "alone"), *common]) == 1
    alone_err = capsys.readouterr().err
    assert cli(["transcribe", *files, "-o", str(tmp_path / "batched"), "--batch-size", "3", *common]) == 1
    batched_err = capsys.readouterr().err
    names = sorted(p.name for p in (tmp_path / "alone").iterdir())
    assert len(names) == 3 * len(FORMATS)
    assert names == sorted(p.name for p in (tmp_path / "batched").iterdir())
    for name in names:
        assert (tmp_path / "batched" / name).read_bytes() == (tmp_path / "alone" / name).read_bytes(), name
    errors = [line for line in batched_err.splitlines() if line.startswith("kvwhisper: error: ")]
    assert errors == [line for line in alone_err.splitlines() if line.startswith("kvwhisper: error: ")]
    assert len(errors) == 1 and "gone.wav" in errors[0]


def test_batch_size_prints_each_file_when_it_finishes(cli, jfk_path, capsys):
    assert cli(["transcribe", str(jfk_path), "--batch-size", "2", *GREEDY]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.startswith("[00:") for line in lines)
    assert JFK_WORDS in " ".join(lines).lower().replace(",", "")
    assert cli(["transcribe", str(jfk_path), "--batch-size", "2", "--verbose", "False", *GREEDY]) == 0
    captured = capsys.readouterr()
    assert "11.0/11.0" in captured.err  # the progress bar counts audio seconds
    assert JFK_WORDS in captured.out.lower().replace(",", "")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch-size", "0"], "--batch-size: must be >= 1"),
        (["--split", "True"], "--split: requires --batch-size"),
    ],
)
def test_batch_options_are_checked_first(jfk_path, capsys, argv, message):
    assert main(["transcribe", str(jfk_path), *argv]) == 2
    assert message in capsys.readouterr().err
