"""The corpus job (kvwhisper/corpus): inputs, the results table, skipping what is done, bad files as error rows,
outputs byte-equal to `kvwhisper transcribe` alone, and a driver killed midway then rerun. The Ray engine's
tests, on a real multi-node cluster, are in test_corpus_ray.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvwhisper.cli import main
from kvwhisper.corpus import CorpusLockedError, InputError, find_inputs, read_rows
from kvwhisper.corpus import run as run_job
from kvwhisper.corpus.inputs import name_clashes
from kvwhisper.corpus.table import ResultsTable, Source, is_current, remove_temporary_files

DATA = Path(__file__).parent / "data"
GOOD = {  # file -> where it goes in the test corpus
    "jfk.flac": "jfk.flac",
    "librosa_robin.ogg": "birds/librosa_robin.ogg",
    "common_voice_en_22058267.mp3": "cv/common_voice_en_22058267.mp3",
    "mls_es_13697_11991_000000.opus": "cv/mls_es_13697_11991_000000.opus",
}
FAST = ["--beam-size", "None"]  # greedy: the tests' runs are shorter; the options are passed on alike
FORMATS = ("txt", "vtt", "srt", "tsv", "json")


def make_corpus(root: Path) -> Path:
    """The test files in folders, a corrupt FLAC (its first 100 bytes), a text file named .wav, a README."""
    for name, where in GOOD.items():
        (root / where).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA / name, root / where)
    (root / "cv" / "corrupt.flac").write_bytes((DATA / "jfk.flac").read_bytes()[:100])
    (root / "notes.wav").write_text("not audio at all\n")
    (root / "README.md").write_text("a file that is not audio: not an input\n")
    return root


def outputs_of(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix[1:] in FORMATS
    }


# -- inputs ----------------------------------------------------------------------------------------------------
def test_folders_are_searched_recursively_for_audio_and_named_by_their_path(tmp_path):
    root = make_corpus(tmp_path / "in")
    (root / ".hidden.wav").write_bytes(b"x")
    entries = find_inputs([str(root)])
    names = [e.name for e in entries]
    assert names == (  # a folder's files, then its folders', each sorted
        [
            "jfk",
            "notes",
            "birds/librosa_robin",
            "cv/common_voice_en_22058267",
            "cv/corrupt",
            "cv/mls_es_13697_11991_000000",
        ]
    )
    assert all(os.path.isabs(e.path) and os.path.exists(e.path) for e in entries)


def test_manifests_list_paths_relative_to_themselves(tmp_path):
    root = make_corpus(tmp_path / "in")
    (root / "list.txt").write_text("# two files\njfk.flac\n\n cv/corrupt.flac \n")
    (root / "table.csv").write_text("path,speaker\nbirds/librosa_robin.ogg,a\n")
    (root / "rows.jsonl").write_text(json.dumps({"path": str(root / "notes.wav")}) + "\n")
    by_path = {
        e.path: e.name for e in find_inputs([str(root / m) for m in ("list.txt", "table.csv", "rows.jsonl")])
    }
    assert by_path == {
        str(root / "jfk.flac"): "jfk",
        str(root / "cv/corrupt.flac"): "cv/corrupt",  # relative to the listed files' common folder
        str(root / "birds/librosa_robin.ogg"): "librosa_robin",
        str(root / "notes.wav"): "notes",
    }


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("missing", None, "no such file or folder"),
        ("t.csv", "file,x\na.wav,1\n", "a 'path' column"),
        ("t.jsonl", '{"path": "a.wav"}\nnot json\n', "line 2: not JSON"),
        ("t.jsonl", '["a.wav"]\n', "line 1: expected an object"),
    ],
)
def test_a_bad_input_is_an_input_error(tmp_path, name, text, message):
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=message):
        find_inputs([str(tmp_path / name)])


def test_inputs_whose_outputs_share_a_name_are_clashes(tmp_path):
    for where in ("a/x.wav", "a/x.mp3", "a/y.wav"):
        (tmp_path / where).parent.mkdir(exist_ok=True)
        (tmp_path / where).write_bytes(b"")
    entries = find_inputs([str(tmp_path / "a"), str(tmp_path / "a/y.wav")])  # y twice: the same file
    assert len(entries) == 3
    assert name_clashes(entries) == {str(tmp_path / "a/x.wav"): str(tmp_path / "a/x.mp3")}


# -- the results table ---------------------------------------------------------------------------------------------
def test_table_keeps_the_newest_row_per_file_and_skips_a_cut_line(tmp_path):
    table = tmp_path / "results.jsonl"
    rows = [
        {"path": "/a", "status": "error"},
        {"path": "/b", "status": "done"},
        {"path": "/a", "status": "done"},
    ]
    table.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"path": "/c", "sta')
    assert read_rows(str(table)) == {"/b": rows[1], "/a": rows[2]}
    with ResultsTable(str(tmp_path)) as t:  # opening rewrites it with one row per file
        t.add({"path": "/d", "status": "done", "text": " a transcript"})
        assert t.rows == {
            "/b": rows[1],
            "/a": rows[2],
            "/d": {"path": "/d", "status": "done"},
        }  # no text kept
    assert [json.loads(line)["path"] for line in table.read_text().splitlines()] == ["/b", "/a", "/d"]


def test_a_second_job_on_the_same_folder_is_refused(tmp_path):
    with ResultsTable(str(tmp_path)), pytest.raises(CorpusLockedError, match="another corpus job"):
        ResultsTable(str(tmp_path)).__enter__()


def test_temporary_files_of_a_killed_writer_are_removed_and_nothing_else(tmp_path):
    (tmp_path / "d").mkdir()
    left = [tmp_path / ".jfk.txt.0a1b2c3d.tmp", tmp_path / "d" / ".results.jsonl.ffffffff.tmp"]
    kept = [tmp_path / "jfk.txt", tmp_path / ".jfk.txt.tmp", tmp_path / "d" / ".x.0a1b2c3.tmp"]
    for p in left + kept:
        p.write_text("x")
    assert sorted(remove_temporary_files(str(tmp_path))) == sorted(map(str, left))
    assert all(p.exists() for p in kept) and not any(p.exists() for p in left)


def test_a_row_is_current_for_the_same_source_and_settings(tmp_path):
    f = tmp_path / "a.wav"
    f.write_bytes(b"1234")
    source = Source.of(str(f), verify=True)
    row = {"size": 4, "mtime_ns": source.mtime_ns, "sha256": source.sha256, "settings": "s"}
    assert is_current(row, Source(source.size, source.mtime_ns), "s")
    assert not is_current(row, Source(source.size, source.mtime_ns), "other settings")
    assert not is_current(row, Source(5, source.mtime_ns), "s")
    assert is_current(row, Source(4, 0, source.sha256), "s")  # with a hash, a new mtime alone is no change
    assert not is_current(row, Source(4, source.mtime_ns, "0" * 64), "s")
    assert not is_current(None, source, "s")


# -- jobs on real weights ------------------------------------------------------------------------------------------
def transcribe_alone(path: Path, out: Path, *options: str) -> None:
    assert main(["transcribe", str(path), "-o", str(out), "--seed", "0", "--verbose", "False", *options]) == 0


@pytest.mark.slow
def test_cli_job_writes_what_transcribe_writes_records_errors_and_skips_on_rerun(tmp_path, capsys):
    root = make_corpus(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["corpus", str(root), "-o", str(out), *FAST]) == 1
    err = capsys.readouterr().err
    assert "kvwhisper: corpus: 4 done, 0 skipped, 2 failed" in err
    assert f"kvwhisper: error: {root / 'notes.wav'}: unrecognised or truncated audio/video data" in err
    rows = read_rows(str(out / "results.jsonl"))
    assert len(rows) == 6 and len((out / "results.jsonl").read_text().splitlines()) == 6
    assert {Path(p).name for p, r in rows.items() if r["status"] == "error"} == {"notes.wav", "corrupt.flac"}
    jfk = rows[str(root / "jfk.flac")]
    assert (jfk["duration"], jfk["language"], jfk["segments"]) == (11.0, "en", 2)
    assert "ask not what your country can do for you" in jfk["text"]

    alone = tmp_path / "alone"
    for where in GOOD.values():
        transcribe_alone(root / where, alone / Path(where).parent, *FAST)
    assert outputs_of(out) == outputs_of(alone) and len(outputs_of(out)) == 4 * len(FORMATS)

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.*")}
    assert main(["corpus", str(root), "-o", str(out), *FAST]) == 1  # still failed files in the job
    assert (
        "0 done, 6 skipped (2 of them failed before: --retry-errors redoes them), 0 failed"
        in capsys.readouterr().err
    )
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.*") if p.name != "results.jsonl"} == {
        p: t for p, t in stamps.items() if p.name != "results.jsonl"
    }
    assert main(["corpus", str(root), "-o", str(out), *FAST, "--retry-errors"]) == 1
    assert "0 done, 4 skipped, 2 failed" in capsys.readouterr().err


@pytest.mark.slow
def test_only_changed_or_incomplete_files_are_done_again(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    for name in ("jfk.flac", "common_voice_en_22058267.mp3"):
        shutil.copy(DATA / name, root / name)
    out = tmp_path / "out"
    job = dict(options={"beam_size": None}, output_format="txt", batch_size=2)
    assert run_job(str(root), str(out), **job).done == 2

    (out / "jfk.txt").unlink()  # an output missing: done again
    assert (run_job(str(root), str(out), **job).done, run_job(str(root), str(out), **job).done) == (1, 0)
    os.utime(root / "jfk.flac", ns=(1, 1))  # a new mtime: done again, unless the hash says it is the same
    assert run_job(str(root), str(out), verify=True, **job).done == 2  # no hash recorded yet
    os.utime(root / "jfk.flac", ns=(2, 2))
    assert run_job(str(root), str(out), verify=True, **job).done == 0
    assert run_job(str(root), str(out), **job).done == 1
    summary = run_job(str(root), str(out), **{**job, "options": {"beam_size": None, "language": "en"}})
    assert summary.done == 2  # other settings: other outputs
    assert len(read_rows(str(out / "results.jsonl"))) == 2


def wait_for_rows(table: Path, job: subprocess.Popen, rows: int, timeout: float = 240) -> None:
    """Until the job's results table has ``rows`` rows (or the job has ended)."""
    deadline = time.monotonic() + timeout
    while not (table.exists() and table.read_text().count("\n") >= rows) and job.poll() is None:
        assert time.monotonic() < deadline, f"{rows} files not done in {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_job_rerun_ends_with_every_file_done_once_and_no_temporary_file(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    for i in range(8):
        shutil.copy(DATA / "jfk.flac", root / f"jfk{i}.flac")
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "kvwhisper",
        "corpus",
        str(root),
        "-o",
        str(out),
        "--batch-size",
        "2",
        *FAST,
    ]
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    table = out / "results.jsonl"
    wait_for_rows(table, job, 2)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL, job.stderr.read().decode()
    done_before = len(read_rows(str(table)))
    assert 2 <= done_before < 8

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{8 - done_before} done, {done_before} skipped, 0 failed" in rerun.stderr
    lines = table.read_text().splitlines()
    assert sorted(json.loads(line)["path"] for line in lines) == sorted(
        str(root / f"jfk{i}.flac") for i in range(8)
    )
    assert all(json.loads(line)["status"] == "done" for line in lines)
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".txt") == [f"jfk{i}.txt" for i in range(8)]
    assert not [p for p in out.rglob("*.tmp")]
    texts = {(out / f"jfk{i}.json").read_bytes() for i in range(8)}
    assert len(texts) == 1  # the same audio: the same transcript, before and after the kill


def test_bad_corpus_invocations_are_one_line_and_status_2(tmp_path, capsys):
    assert main(["corpus", str(tmp_path / "nowhere"), "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"kvwhisper: error: {tmp_path / 'nowhere'}: no such file or folder\n"
    (tmp_path / "empty").mkdir()
    assert main(["corpus", str(tmp_path / "empty"), "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"kvwhisper: error: no audio or video files in {tmp_path / 'empty'}\n"
    assert main(["corpus", str(tmp_path), "-o", str(tmp_path / "out"), "--workers", "0"]) == 2
    assert capsys.readouterr().err == "kvwhisper: error: --workers: must be >= 1, not 0\n"
    with pytest.raises(SystemExit) as exit_:
        main(["corpus", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--output-dir" in capsys.readouterr().err
