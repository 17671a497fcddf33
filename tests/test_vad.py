"""Voice activity detection (audio/vad.py) and transcribing only the speech (transcribe/speech.py), with the
silero-vad package's own model and real speech: the probabilities and regions equal the package's own
frame-by-frame run, times map back to the recording, the CLI shows the regions, bad parameters are named."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, require_shared_speech, shared_audio_files

import kvwhisper
import kvwhisper.model
from kvwhisper.audio import SAMPLE_RATE, load_audio
from kvwhisper.audio import vad as vad_module
from kvwhisper.audio.vad import VadOptions, speech_samples, vad_model
from kvwhisper.cli import main
from kvwhisper.transcribe.speech import SpeechMap

GAP = 20.0  # seconds of silence between the clips of the built recording


def _silero():
    """The silero_vad package (imported with torch's thread count kept: its import sets it to 1)."""
    threads = torch.get_num_threads()
    try:
        import silero_vad
    finally:
        torch.set_num_threads(threads)
    return silero_vad


@pytest.fixture(scope="module")
def jfk(jfk_path) -> np.ndarray:
    return load_audio(jfk_path)


@pytest.fixture(scope="module")
def gapped(jfk) -> np.ndarray:
    """5 s of silence, the JFK clip, 20 s of silence, the JFK clip again."""
    zeros = np.zeros(int(GAP * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate([zeros[: 5 * SAMPLE_RATE], jfk, zeros, jfk])


@pytest.fixture(scope="module")
def tiny_en():
    return kvwhisper.load_model("tiny.en", device="cpu")


# -- the model and its regions ------------------------------------------------------------------------------
def _frame_by_frame(audio: np.ndarray) -> torch.Tensor:
    """The package's model called on each 512-sample frame in turn, as its get_speech_timestamps calls it."""
    jit = torch.jit.load(str(vad_module._package_file("data/silero_vad.jit")), map_location="cpu")
    jit.reset_states()
    n = -(-len(audio) // 512)
    padded = torch.zeros(n * 512)
    padded[: len(audio)] = torch.from_numpy(audio)
    with torch.no_grad():
        return torch.cat([jit(padded[i * 512 : (i + 1) * 512][None], SAMPLE_RATE)[:, 0] for i in range(n)])


@pytest.mark.parametrize("recurrence", ["kernel", "nn.LSTM"])
def test_probabilities_equal_the_packages_frame_by_frame_model(gapped, monkeypatch, recurrence):
    """The LSTM through the C kernel (where it runs) and through torch's nn.LSTM (elsewhere)."""
    from kvwhisper.cpu import kernels

    if recurrence == "kernel" and not kernels.lstm_applies(128):
        pytest.skip("the C kernels are not built or this CPU runs neither version")
    monkeypatch.setattr(kernels, "ENABLED", recurrence == "kernel")
    audio = gapped[: 30 * SAMPLE_RATE]
    ref = _frame_by_frame(audio)
    got = vad_model().probabilities(torch.from_numpy(audio))
    assert got.shape == ref.shape
    assert (got - ref).abs().max() < 1e-4
    assert ref.max() > 0.9 and ref[: 4 * SAMPLE_RATE // 512].max() < 0.1  # speech found, silence not
    monkeypatch.setattr(vad_module, "FRAMES_PER_BLOCK", 37)  # blocks carry the LSTM state across
    blocked = vad_model().probabilities(torch.from_numpy(audio))
    assert (blocked - got).abs().max() < 1e-5


@pytest.mark.parametrize(
    "params",
    [
        {},
        {
            "threshold": 0.7,
            "min_silence_duration_ms": 300,
            "speech_pad_ms": 30,
            "min_speech_duration_ms": 250,
        },
    ],
)
def test_regions_equal_the_packages_get_speech_timestamps(gapped, params):
    silero = _silero()
    jit = torch.jit.load(str(vad_module._package_file("data/silero_vad.jit")), map_location="cpu")
    options = VadOptions(**params)
    ref = silero.get_speech_timestamps(
        torch.from_numpy(gapped),
        jit,
        sampling_rate=SAMPLE_RATE,
        **{k: getattr(options, k) for k in vars(options)},
    )
    assert speech_samples(gapped, options) == [(r["start"], r["end"]) for r in ref]


def test_speech_regions_in_seconds_from_a_path_or_an_array(jfk_path, gapped):
    regions = kvwhisper.speech_regions(gapped)
    assert len(regions) == 2
    (a0, b0), (a1, b1) = regions
    assert 4.0 < a0 < 5.5 and 15.5 < b0 < 17.0  # the first clip (5.0 to 16.0 s, padded by 0.4 s)
    assert 35.0 < a1 < 36.5 and b1 == pytest.approx(len(gapped) / SAMPLE_RATE)
    assert kvwhisper.speech_regions(str(jfk_path), {"speech_pad_ms": 0}, threshold=0.5)[0][0] > 0.0
    assert kvwhisper.speech_regions(np.zeros(SAMPLE_RATE, dtype=np.float32)) == []
    assert kvwhisper.speech_regions(np.zeros(0, dtype=np.float32)) == []


@pytest.mark.parametrize(
    "params, name",
    [
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": -0.1}, "threshold"),
        ({"neg_threshold": 2}, "neg_threshold"),
        ({"min_speech_duration_ms": -1}, "min_speech_duration_ms"),
        ({"max_speech_duration_s": 0}, "max_speech_duration_s"),
        ({"min_silence_duration_ms": -5}, "min_silence_duration_ms"),
        ({"speech_pad_ms": -1}, "speech_pad_ms"),
        ({"speech_pad_ms": True}, "speech_pad_ms"),
        ({"window": 3}, "window"),
    ],
)
def test_bad_parameters_are_named(params, name, jfk):
    with pytest.raises(ValueError, match=name):
        VadOptions.from_parameters(params)
    with pytest.raises(ValueError, match=name):
        kvwhisper.speech_regions(jfk, params)


def test_runs_offline_and_leaves_torch_threads_alone(jfk_path):
    """A fresh process with every network connection refused: the model comes from the installed package,
    and importing it (which sets torch's thread count to 1) does not change the caller's."""
    code = f"""
import socket, torch
def refuse(*a, **k):
    raise OSError("network access blocked")
socket.socket.connect = refuse
socket.create_connection = refuse
torch.set_num_threads(2)
import kvwhisper
regions = kvwhisper.speech_regions({str(jfk_path)!r})
print(len(regions), torch.get_num_threads())
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "2"]


# -- the map back to the recording ------------------------------------------------------------------------
def test_speech_map_maps_times_back_and_lists_what_it_skipped():
    sr = SAMPLE_RATE
    m = SpeechMap.from_regions([(2 * sr, 5 * sr), (10 * sr, 12 * sr)], 15 * sr)
    assert m.kept == 5 * sr
    assert m.time(0.0) == 2.0 and m.time(1.5) == 3.5
    assert m.time(3.0) == 10.0  # a start at the join: the second piece
    assert m.time(3.0, end=True) == 5.0  # an end at the join: the first piece
    assert m.time(4.0) == 11.0
    assert m.time(9.0, end=True) == 12.0  # past the last piece: its end
    assert m.skipped() == [(0.0, 2.0), (5.0, 10.0), (12.0, 15.0)]
    wave = np.arange(15 * sr, dtype=np.float32)
    joined = m.gather(wave)
    assert len(joined) == 5 * sr and joined[0] == 2 * sr and joined[3 * sr] == 10 * sr
    empty = SpeechMap.from_regions([], sr)
    assert empty.gather(wave).shape == (0,) and empty.skipped() == [(0.0, 1.0)]


# -- transcription -----------------------------------------------------------------------------------------
def test_vad_filter_decodes_the_speech_and_keeps_the_recordings_timeline(tiny_en, gapped, jfk, capsys):
    alone = kvwhisper.transcribe(tiny_en, jfk, word_timestamps=True)
    result = kvwhisper.transcribe(tiny_en, gapped, vad_filter=True, word_timestamps=True, verbose=True)
    printed = capsys.readouterr().out
    assert "VAD: 2 speech region(s)" in printed and "[skipped 00:16." in printed
    words = [w for s in result.segments for w in s.words]
    n = len([w for s in alone.segments for w in s.words])
    assert abs(len(words) - 2 * n) <= 2  # each copy's words, once
    first, second = words[: len(words) // 2], words[len(words) // 2 :]
    assert all(4.5 <= w.start <= 16.5 for w in first[:-1])  # in the first clip (5 to 16 s) ...
    assert all(35.5 <= w.start <= 47.0 for w in second[1:])  # ... and the second (36 to 47 s)
    assert result.segments[0].start == pytest.approx(alone.segments[0].start + 5.0, abs=0.5)
    assert result.segments[-1].end <= len(gapped) / SAMPLE_RATE + 1e-6
    for s in result.segments:
        assert s.start <= s.end and all(s.start <= w.start <= w.end <= s.end for w in s.words)
    # the segments printed as decoded carry the recording's times too
    assert "[00:04." in printed or "[00:05." in printed


def test_vad_filter_on_silence_gives_no_text_and_off_is_the_default(tiny_en):
    silence = np.zeros(40 * SAMPLE_RATE, dtype=np.float32)
    result = kvwhisper.transcribe(tiny_en, silence, vad_filter=True)
    assert result.text == "" and result.segments == ()
    off = kvwhisper.transcribe(tiny_en, silence, vad_parameters={"threshold": 0.9})  # parameters alone: off
    assert off.to_dict() == kvwhisper.transcribe(tiny_en, silence).to_dict()


def test_batched_vad_filter_equals_each_recording_alone(tiny_en, gapped, jfk):
    pieces = [gapped, jfk]
    batched = kvwhisper.transcribe(tiny_en, pieces, batch_size=4, vad_filter=True, seed=0)
    for got, audio in zip(batched, pieces):
        alone = kvwhisper.transcribe(tiny_en, audio, vad_filter=True, seed=0)
        assert got.to_dict() == alone.to_dict()


def test_bad_vad_options_are_refused_before_any_audio_is_read(tiny_en, tmp_path):
    missing = str(tmp_path / "missing.wav")  # never read: the options fail first
    with pytest.raises(ValueError, match="clip_timestamps"):
        kvwhisper.transcribe(tiny_en, missing, vad_filter=True, clip_timestamps="1,2")
    with pytest.raises(ValueError, match="vad_filter"):
        kvwhisper.transcribe(tiny_en, missing, vad_filter="yes")
    with pytest.raises(ValueError, match="threshold"):
        kvwhisper.transcribe(tiny_en, missing, vad_filter=True, vad_parameters={"threshold": 7})
    with pytest.raises(ValueError, match="min_silence_duration_ms"):
        kvwhisper.transcribe(
            tiny_en, [missing], vad_filter=True, vad_parameters={"min_silence_duration_ms": -1}
        )


# -- CLI ---------------------------------------------------------------------------------------------------
@pytest.fixture
def gapped_file(gapped, tmp_path):
    import soundfile

    path = tmp_path / "gapped.wav"
    soundfile.write(path, gapped, SAMPLE_RATE)
    return path


def test_cli_vad_prints_the_regions(gapped_file, tmp_path, capsys):
    assert main(["vad", str(gapped_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith("[00:04.") and lines[1].startswith("[00:35.")
    assert lines[2].startswith("2 region(s), 22.") and "in 47.0 s" in lines[2]
    assert main(["vad", str(gapped_file), "--json", "--vad-min-silence-duration-ms", "100"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["duration"] == 47.0 and len(record["regions"]) >= 2
    png = tmp_path / "regions.png"
    assert main(["vad", str(gapped_file), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["vad", "X", "--vad-threshold", "1.5"], "--vad-threshold"),
        (["vad", "X", "--vad-neg-threshold", "-1"], "--vad-neg-threshold"),
        (["vad", "X", "--vad-speech-pad-ms", "-3"], "--vad-speech-pad-ms"),
        (["transcribe", "X", "--vad-filter", "True", "--vad-max-speech-duration-s", "0"], "--vad-max-speech"),
        (["transcribe", "X", "--vad-filter", "maybe"], "--vad-filter"),
    ],
)
def test_cli_bad_vad_options_one_line_exit_2(argv, flag, gapped_file, capsys):
    argv = [str(gapped_file) if a == "X" else a for a in argv]
    try:
        status = main(argv)  # a bad value: checked before the model loads ...
    except SystemExit as e:  # ... or a bad type: argparse's exit
        status = e.code
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0], err


def test_cli_vad_reports_an_unreadable_file_and_goes_on(gapped_file, tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    assert main(["vad", str(bad), str(gapped_file)]) == 1
    captured = capsys.readouterr()
    assert "bad.wav" in captured.err and "2 region(s)" in captured.out


def test_cli_transcribe_vad_filter(monkeypatch, tiny_en, gapped_file, tmp_path):
    monkeypatch.setattr(kvwhisper.model, "load_model", lambda *a, **k: tiny_en)
    out = tmp_path / "out"
    argv = [str(gapped_file), "--vad_filter", "True", "-o", str(out), "-f", "json", "--verbose", "False"]
    assert main(["transcribe", *argv]) == 0
    segments = json.loads((out / "gapped.json").read_text())["segments"]
    assert segments and segments[0]["start"] >= 4.5 and segments[-1]["end"] <= 47.0


# -- the shared corpus -------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_every_nonspeech_clip_gives_no_text_with_vad_filter(name):
    """Noise, music, whale song, birdsong, silence: nothing is transcribed (without the VAD, the small models
    write text over several of them)."""
    require_shared_speech()
    try:
        model = kvwhisper.load_model(name, device="cpu")
    except kvwhisper.ModelLoadError as e:
        pytest.skip(f"{name} not installed: {e}")
    files = shared_audio_files("nonspeech")
    assert len(files) >= 10
    texts = {f.name: kvwhisper.transcribe(model, str(f), vad_filter=True).text for f in files}
    assert all(t == "" for t in texts.values()), texts


def test_split_with_vad_filter_cuts_between_speech_regions(tiny_en, jfk):
    """One recording with batch_size: cuts fall in the VAD's gaps (not at the quietest moment inside speech),
    and the parts' segments come back on the recording's timeline."""
    from kvwhisper.transcribe.batched import gap_cuts, quiet_cuts

    sr = SAMPLE_RATE
    zeros = np.zeros(8 * sr, dtype=np.float32)
    audio = np.concatenate([jfk] * 6 + [zeros] + [jfk] * 6)  # 140 s: one gap, at 66 to 74 s
    regions = speech_samples(audio, VadOptions())
    cuts = gap_cuts(audio, 2, regions, search=10.0)
    assert len(cuts) == 1 and 66 * sr < cuts[0] < 74 * sr
    assert gap_cuts(audio, 2, [], search=10.0) == quiet_cuts(audio, 2, 10.0)  # no gap: the quietest moment
    result = kvwhisper.transcribe(tiny_en, audio, batch_size=2, vad_filter=True)
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts) and result.segments[-1].end <= len(audio) / sr
    assert not any(66.5 < s.start < 73.5 for s in result.segments)  # nothing placed in the silence
