"""`kvwhisper trace`: the per-step table, the JSONL records, the pictures, one-line errors (real tiny.en)."""

from __future__ import annotations

import json

import pytest
from helpers import STEP_TRACE_KEYS

from kvwhisper.cli import main

pytestmark = pytest.mark.slow


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_trace_table_jsonl_and_pictures(jfk_path, tmp_path, capsys):
    image = pytest.importorskip("matplotlib.image")
    out_json, att, mel = tmp_path / "steps.jsonl", tmp_path / "att.png", tmp_path / "mel.png"
    argv = ["trace", str(jfk_path), "--top-k", "3", "--json", str(out_json), "--plot", str(att)]
    assert main([*argv, "--mel-plot", str(mel)]) == 0
    stdout = capsys.readouterr().out
    lines = stdout.splitlines()
    records = read_jsonl(out_json)
    assert len(records) == 28
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["step", "pos", "fed"])
    rows = lines[header + 1 : header + 1 + len(records)]
    for record, row in zip(records, rows, strict=True):
        assert set(record) == STEP_TRACE_KEYS
        assert len(record["top_k"]) == 3
        assert row.split()[0] == str(record["step"])
        assert record["token"]["text"].strip() in row
    assert "blank-2" in rows[0] and "ts-" in rows[0] and "x<|notimestamps|>" in rows[0]
    assert "*' fellow'" in rows[4]
    assert records[-1]["stop_reason"] == "eot" and "[eot]" in rows[-1]
    assert [r["n_fed"] for r in records] == [1] * len(records)
    assert "fellow Americans" in stdout and "stopped by eot" in stdout
    for path, min_rows in ((att, 300), (mel, 200)):
        pixels = image.imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] >= min_rows and pixels.shape[1] >= 600
        assert pixels.std() > 0.01  # not a blank canvas


def test_trace_beam_search_without_cache(jfk_path, tmp_path, capsys):
    out_json = tmp_path / "beam.jsonl"
    argv = [
        "trace",
        str(jfk_path),
        "--beam-size",
        "2",
        "--no-cache",
        "--sample-len",
        "4",
        "--json",
        str(out_json),
    ]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    records = read_jsonl(out_json)
    assert len(records) == 4 and records[-1]["stop_reason"] == "sample_len"
    assert [r["n_fed"] for r in records] == [1, 2, 3, 4]  # no cache: the whole prefix every step
    assert all(r["position"] == 0 for r in records)
    for record in records:
        assert len(record["beams"]) == 2 and {b["source"] for b in record["beams"]} <= {0, 1}
    assert "beam search (2)" in stdout and "kv_cache=none" in stdout and "beam 1 <-" in stdout


@pytest.mark.parametrize(
    ("extra", "message", "status"),
    [
        (["--window", "1"], "past the end", 1),
        (["--top-k", "0"], "--top-k", 2),
        (["--json", "/nonexistent-dir/x.jsonl"], "does not exist", 2),
    ],
)
def test_trace_errors_are_one_line(jfk_path, capsys, extra, message, status):
    assert main(["trace", str(jfk_path), "--sample-len", "1", *extra]) == status
    err = capsys.readouterr().err.strip()
    assert err.startswith("kvwhisper: error:") and message in err and "\n" not in err


def test_trace_missing_file(tmp_path, capsys):
    assert main(["trace", str(tmp_path / "missing.flac")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"kvwhisper: error: {tmp_path / 'missing.flac'}: no such file"
