"""Nothing lost: damaged audio is salvaged like ffmpeg does, outputs are written whole or not at all, output
names never clash silently, pipes and FIFOs are read as streams, endless streams stop at a bound, and input or
environment errors are one line, never a traceback."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import kvwhisper
from kvwhisper import AudioDamageWarning, AudioError, ModelLoadError, load_audio
from kvwhisper.cli import main
from kvwhisper.transcribe.writers import FORMATS, atomic_open, get_writer, output_basename

REPO = Path(__file__).resolve().parent.parent
JFK_WORDS = "ask not what your country can do for you"
GREEDY = ["--beam-size", "None", "--best-of", "None"]


def ffmpeg_exe() -> str:
    imageio_ffmpeg = pytest.importorskip(
        "imageio_ffmpeg", reason="imageio-ffmpeg (the ffmpeg oracle) missing"
    )
    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_samples(path: Path) -> int:
    """Samples the ffmpeg CLI recovers from ``path`` (the reference's command line, 16 kHz mono s16)."""
    cmd = [
        ffmpeg_exe(),
        "-nostdin",
        "-v",
        "quiet",
        "-i",
        str(path),
        "-f",
        "s16le",
        "-ac",
        "1",
        "-ar",
        "16000",
        "-",
    ]
    return len(subprocess.run(cmd, capture_output=True, check=False).stdout) // 2


def kvwhisper_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """The real entry point in a child process (stdout and stderr as text)."""
    cmd = [sys.executable, "-m", "kvwhisper", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, **kwargs)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single `kvwhisper: error:` line a failed run must print (no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvwhisper: error: "), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def model():
    return kvwhisper.load_model("tiny.en", device="cpu")


# ------------------------------------------------------------------------------------------------------------
# damaged audio: decoded past the damage, like ffmpeg


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, jfk_path) -> dict[str, tuple[Path, Path]]:
    """name -> (damaged file, the clean file it was made from): 33 s of real speech (jfk.flac three times)."""
    folder = tmp_path_factory.mktemp("damaged")
    concat = ["-i", str(jfk_path)] * 3 + ["-filter_complex", "concat=n=3:v=0:a=1"]
    clean = {}
    for name, extra in (
        ("long.mp3", ["-ar", "16000", "-ac", "1", "-b:a", "64k"]),
        ("long.flac", []),
        ("long.wav", ["-ar", "16000", "-ac", "1"]),
    ):
        clean[name] = folder / name
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *concat, *extra, str(clean[name])], check=True)
    mp3 = clean["long.mp3"].read_bytes()
    middle = len(mp3) // 2
    noise = np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    (folder / "corrupt_middle.mp3").write_bytes(mp3[:middle] + noise + mp3[middle + 20_000 :])
    flac = clean["long.flac"].read_bytes()
    (folder / "cut_at_half.flac").write_bytes(flac[: len(flac) // 2])
    wav = bytearray(clean["long.wav"].read_bytes())
    data = wav.find(b"data")
    size = struct.unpack("<I", wav[data + 4 : data + 8])[0]
    wav[data + 4 : data + 8] = struct.pack("<I", 2 * size)  # the header promises twice the audio there is
    wav[4:8] = struct.pack("<I", 2 * size + 36)
    (folder / "lying_header.wav").write_bytes(bytes(wav))
    return {
        "corrupt_middle.mp3": (folder / "corrupt_middle.mp3", clean["long.mp3"]),
        "cut_at_half.flac": (folder / "cut_at_half.flac", clean["long.flac"]),
        "lying_header.wav": (folder / "lying_header.wav", clean["long.wav"]),
    }


DAMAGED = ("corrupt_middle.mp3", "cut_at_half.flac", "lying_header.wav")


def load_with_damage_warnings(path: Path) -> tuple[np.ndarray, list[str]]:
    """load_audio's samples and the messages of the AudioDamageWarnings it gave."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        audio = load_audio(path)
    return audio, [str(w.message) for w in record if issubclass(w.category, AudioDamageWarning)]


@pytest.mark.parametrize("name", DAMAGED)
def test_damaged_audio_length_is_what_ffmpeg_recovers(damaged, name) -> None:
    path, clean = damaged[name]
    ours, damage = load_with_damage_warnings(path)
    theirs = ffmpeg_samples(path)
    print(f"\n{name}: ours {len(ours) / 16000:.2f} s, ffmpeg {theirs / 16000:.2f} s")
    assert theirs > 0 and abs(len(ours) - theirs) <= 0.01 * theirs
    if name != "lying_header.wav":  # a WAV header's data size is not damage to decoding: ffmpeg is silent
        assert len(damage) == 1 and str(path) in damage[0] and "kept" in damage[0]
        assert len(ours) < len(load_audio(clean))


@pytest.mark.parametrize("name", DAMAGED)
def test_damaged_audio_transcript_before_the_damage_equals_the_clean_one(damaged, model, name) -> None:
    path, clean = damaged[name]
    audio, damage = load_with_damage_warnings(path)
    damage_at = float(damage[0].split(" from ")[1].split(" s")[0]) if damage else len(audio) / 16000
    options = dict(beam_size=None, best_of=None, temperature=0.0, clip_timestamps=[0.0, damage_at])
    ours = kvwhisper.transcribe(model, audio, **options).segments
    reference = kvwhisper.transcribe(model, str(clean), **options).segments
    before = [s.text for s in ours if s.end < damage_at - 1.0]
    assert before, f"no segment ends before the damage at {damage_at:.2f} s"
    assert before == [s.text for s in reference[: len(before)]]
    print(f"\n{name}: {len(before)} segment(s) before {damage_at:.2f} s equal the clean file's")


def test_nothing_decodable_is_still_an_error(tmp_path, jfk_path) -> None:
    path = tmp_path / "garbage_after_header.flac"
    path.write_bytes(
        jfk_path.read_bytes()[:4000] + bytes(np.random.default_rng(1).integers(0, 256, 9000, np.uint8))
    )
    with pytest.raises(AudioError, match="corrupt or truncated"):
        load_audio(path)


@pytest.mark.slow
def test_cli_salvages_with_one_warning_line(damaged) -> None:
    path, _ = damaged["cut_at_half.flac"]
    proc = kvwhisper_cli("transcribe", str(path), *GREEDY)
    assert proc.returncode == 0, proc.stderr
    assert JFK_WORDS in proc.stdout.lower().replace(",", "")
    assert "Traceback" not in proc.stderr
    warning_lines = [line for line in proc.stderr.splitlines() if "damaged" in line]
    assert len(warning_lines) == 1 and warning_lines[0].startswith("kvwhisper: warning: "), proc.stderr


# ------------------------------------------------------------------------------------------------------------
# atomic outputs


def result_with(n_segments: int) -> dict:
    segments = [
        {"id": i, "start": float(i), "end": i + 0.9, "text": f" Segment number {i} of the test.", "words": []}
        for i in range(n_segments)
    ]
    for s in segments:
        del s["words"]
    return {"text": "".join(s["text"] for s in segments), "segments": segments, "language": "en"}


def test_a_write_failing_mid_file_leaves_the_old_file(tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    write_all = get_writer("all", out)
    old = {p: Path(p).read_bytes() for p in write_all(result_with(3), "talk.wav")}
    from kvwhisper.transcribe import writers

    def full_disk(self, result, file, options=None, **kwargs):
        file.write("start of a transcript that does not fit\n")
        file.flush()
        raise OSError(28, "No space left on device")

    for cls in writers.WRITERS.values():
        monkeypatch.setattr(cls, "write_result", full_disk)
    for fmt in FORMATS:
        with pytest.raises(OSError, match="No space left") as e:
            get_writer(fmt, out)(result_with(50), "talk.wav")
        assert e.value.filename == str(out / f"talk.{fmt}")  # named as the output, not its temporary file
        with pytest.raises(OSError):
            get_writer(fmt, tmp_path / "fresh_out_is_missing")(result_with(50), "talk.wav")
    assert {p: Path(p).read_bytes() for p in old} == old
    assert sorted(os.listdir(out)) == sorted(f"talk.{fmt}" for fmt in FORMATS)  # no temporary file left


def test_an_interrupted_write_leaves_the_old_file_or_none(tmp_path) -> None:
    path = tmp_path / "talk.txt"
    with pytest.raises(KeyboardInterrupt), atomic_open(path) as f:
        f.write("half")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []
    path.write_text("old\n")
    with pytest.raises(KeyboardInterrupt), atomic_open(path) as f:
        f.write("half")
        raise KeyboardInterrupt
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["talk.txt"]
    with atomic_open(path) as f:
        f.write("new\n")
    assert path.read_text() == "new\n" and os.listdir(tmp_path) == ["talk.txt"]


WRITE_FOREVER = """
import os, sys
from kvwhisper.transcribe.writers import get_writer
segments = [{"id": i, "start": float(i), "end": i + 0.9, "text": f" Segment number {i}."} for i in range(5000)]
result = {"text": "".join(s["text"] for s in segments), "segments": segments, "language": "en"}
os.makedirs(sys.argv[1], exist_ok=True)
write = get_writer("all", sys.argv[1])
print("writing", flush=True)
while True:
    write(result, "talk.wav")
"""


@pytest.mark.slow
def test_sigkill_while_writing_leaves_no_partial_output(tmp_path) -> None:
    reference = tmp_path / "reference"
    subprocess.run(
        [sys.executable, "-c", WRITE_FOREVER.replace("while True:", "for _ in range(1):"), str(reference)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    expected = {p.name: p.read_bytes() for p in reference.iterdir()}
    assert sorted(expected) == sorted(f"talk.{fmt}" for fmt in FORMATS)
    out = tmp_path / "out"
    out.mkdir()
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITE_FOREVER, str(out)], cwd=REPO, stdout=subprocess.PIPE
        )
        assert proc.stdout.readline() == b"writing\n"
        time.sleep(float(rng.uniform(0.05, 1.0)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for name in os.listdir(out):
            if not name.startswith("."):  # a killed process can leave only its hidden temporary file
                assert (out / name).read_bytes() == expected[name], f"{name} is partial"
                checked += 1
    assert checked > 0  # some outputs were complete before a kill, and were checked


# ------------------------------------------------------------------------------------------------------------
# the CLI: output folder, name clashes, interrupts, model and device errors


@pytest.fixture
def no_model_load(monkeypatch):
    """The CLI must not get to loading the model: loading fails with a line the tests can tell apart."""
    import kvwhisper.model

    def refuse(*args, **kwargs):
        raise kvwhisper.model.ModelLoadError("model loading reached")

    monkeypatch.setattr(kvwhisper.model, "load_model", refuse)


def test_output_folder_that_is_a_file_is_reported_before_any_work(
    tmp_path, jfk_path, capsys, no_model_load
) -> None:
    not_a_folder = tmp_path / "out"
    not_a_folder.write_text("")
    status = main(["transcribe", str(jfk_path), "-o", str(not_a_folder), "--model", "tiny.en"])
    err = capsys.readouterr().err
    assert (
        status == 1
        and err.strip() == f"kvwhisper: error: output folder {not_a_folder}: is a file, not a folder"
    )
    status = main(["transcribe", str(jfk_path), "-o", str(not_a_folder / "sub"), "--model", "tiny.en"])
    err = capsys.readouterr().err
    assert status == 1 and f"output folder {not_a_folder / 'sub'}: cannot create it" in err


def test_read_only_output_folder_is_reported_before_any_work(
    tmp_path, jfk_path, capsys, monkeypatch, no_model_load
) -> None:
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: make the folder refuse new files as a read-only mount would
        real_open = os.open

        def refuse(path, *args, **kwargs):
            if os.path.dirname(os.fspath(path)) == str(read_only):
                raise PermissionError(13, "Permission denied", path)
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse)
    status = main(["transcribe", str(jfk_path), "-o", str(read_only), "--model", "tiny.en"])
    err = capsys.readouterr().err
    assert status == 1
    assert (
        err.strip() == f"kvwhisper: error: output folder {read_only}: cannot write there (Permission denied)"
    )


def test_missing_parents_of_the_output_folder_are_created(tmp_path) -> None:
    from kvwhisper.cli.outputs import prepare_output_dir

    nested = tmp_path / "a" / "b" / "c"
    assert prepare_output_dir(str(nested)) == str(nested) and nested.is_dir() and list(nested.iterdir()) == []


def test_inputs_with_the_same_base_name_are_one_error_before_any_work(
    tmp_path, jfk_path, capsys, no_model_load
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = tmp_path / "a" / "clip.flac", tmp_path / "b" / "clip.wav"
    shutil.copy(jfk_path, a)
    shutil.copy(jfk_path, b)
    out = tmp_path / "out"
    status = main(["transcribe", str(a), str(b), "-o", str(out), "--model", "tiny.en"])
    err = capsys.readouterr().err.strip()
    assert status == 1 and err.startswith("kvwhisper: error: ") and len(err.splitlines()) == 1
    assert f"{a} and {b} would both be written to {out / 'clip'}.*" in err
    assert list(out.iterdir()) == []
    status = main(["transcribe", str(a), str(a), "-o", str(out), "--model", "tiny.en"])
    err = capsys.readouterr().err  # the same file twice is no clash: it got to the model
    assert "would both" not in err and "model loading reached" in err


def test_same_base_name_outputs_to_stdout_or_distinct_folders_are_fine(
    tmp_path, jfk_path, model, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(kvwhisper.model, "load_model", lambda *a, **k: model)
    (tmp_path / "a").mkdir()
    shutil.copy(jfk_path, tmp_path / "a" / "jfk.wav")
    status = main(["transcribe", str(jfk_path), str(tmp_path / "a" / "jfk.wav"), *GREEDY])
    out = capsys.readouterr().out
    assert status == 0 and out.lower().replace(",", "").count(JFK_WORDS) == 2


@pytest.mark.slow
def test_sigint_while_transcribing_exits_130_with_whole_outputs(tmp_path, jfk_path, damaged) -> None:
    long_flac = damaged["cut_at_half.flac"][1]
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "kvwhisper",
        "transcribe",
        str(jfk_path),
        str(long_flac),
        "-o",
        str(out),
        *GREEDY,
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "jfk.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "kvwhisper: interrupted"
    for fmt in FORMATS:  # the first file's outputs are whole; the second's absent or whole
        assert JFK_WORDS in (out / f"jfk.{fmt}").read_text().lower().replace(",", "")
    json.loads((out / "jfk.json").read_text())
    for name in os.listdir(out):
        assert not name.startswith("."), f"temporary file {name} left behind"
        if name.endswith(".json"):
            json.loads((out / name).read_text())


def test_interrupt_after_defers_ctrl_c_until_the_block_is_done() -> None:
    from kvwhisper.cli.outputs import interrupt_after

    done = []
    with pytest.raises(KeyboardInterrupt), interrupt_after():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        done.append("outputs written")
    assert done == ["outputs written"]


@pytest.fixture(scope="module")
def tiny_random(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).parent))
    from helpers import tiny_random_model

    return tiny_random_model()


@pytest.mark.parametrize(
    "config, field",
    [
        ({"alignment_heads": [[0, 99]], "lang_ids": [], "suppress_ids": []}, "alignment_heads"),
        ({"alignment_heads": [[7, 0]], "lang_ids": [], "suppress_ids": []}, "alignment_heads"),
        ({"alignment_heads": "all", "lang_ids": [], "suppress_ids": []}, "alignment_heads"),
        ([1, 2, 3], "JSON object"),
    ],
)
def test_ctranslate2_config_errors_name_the_field(tmp_path, tiny_random, config, field) -> None:
    from helpers import write_ct2

    write_ct2(tiny_random, tmp_path / "ct2")
    (tmp_path / "ct2" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=field) as e:
        kvwhisper.load_model(tmp_path / "ct2", device="cpu")
    assert "config.json" in str(e.value)
    proc = kvwhisper_cli("transcribe", "tests/data/jfk.flac", "--model", str(tmp_path / "ct2"))
    assert proc.returncode == 1 and field in one_error_line(proc)


def test_random_bytes_pt_is_one_line(tmp_path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    with pytest.raises(ModelLoadError, match="not a readable PyTorch checkpoint") as e:
        kvwhisper.load_model(path, device="cpu")
    assert "\n" not in str(e.value)
    proc = kvwhisper_cli("transcribe", "tests/data/jfk.flac", "--model", str(path))
    assert proc.returncode == 1 and str(path) in one_error_line(proc)


def test_cuda_device_without_cuda_is_one_line() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: nothing to refuse")
    with pytest.raises(ModelLoadError, match="device cuda"):
        kvwhisper.load_model("tiny.en", device="cuda")
    proc = kvwhisper_cli("transcribe", "tests/data/jfk.flac", "--device", "cuda")
    assert proc.returncode == 1 and "cuda" in one_error_line(proc)


# ------------------------------------------------------------------------------------------------------------
# pipes, stdin, FIFOs and endless streams


@pytest.mark.slow
def test_stdin_dash_prints_the_transcript(jfk_path) -> None:
    with open(jfk_path, "rb") as f:
        proc = kvwhisper_cli("transcribe", "-", *GREEDY, stdin=f)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert JFK_WORDS in proc.stdout.lower().replace(",", "")


@pytest.mark.slow
def test_dev_stdin_through_a_pipe_writes_stdin_outputs(jfk_path, tmp_path) -> None:
    cat = subprocess.Popen(["cat", str(jfk_path)], stdout=subprocess.PIPE)
    proc = kvwhisper_cli(
        "transcribe", "/dev/stdin", "-o", str(tmp_path), "-f", "txt", *GREEDY, stdin=cat.stdout
    )
    cat.wait()
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert JFK_WORDS in (tmp_path / "stdin.txt").read_text().lower().replace(",", "")
    assert output_basename("-") == output_basename("/dev/stdin") == "stdin"


@pytest.mark.slow
def test_fifo_is_read_as_a_stream(jfk_path, tmp_path) -> None:
    fifo = tmp_path / "f"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as w:
            w.write(jfk_path.read_bytes())

    writer = threading.Thread(target=feed)
    writer.start()
    audio = load_audio(fifo)
    writer.join(timeout=30)
    assert not writer.is_alive()  # the writer is never left blocked
    np.testing.assert_array_equal(audio, load_audio(jfk_path))
    writer = threading.Thread(target=feed)
    writer.start()
    proc = kvwhisper_cli("transcribe", str(fifo), *GREEDY)
    writer.join(timeout=30)
    assert proc.returncode == 0 and not writer.is_alive(), proc.stderr
    assert JFK_WORDS in proc.stdout.lower().replace(",", "")


@pytest.mark.slow
def test_empty_pipe_is_not_called_an_empty_file(tmp_path) -> None:
    proc = kvwhisper_cli("transcribe", "-", stdin=subprocess.DEVNULL)
    line = one_error_line(proc)
    assert proc.returncode == 1 and "empty file" not in line and "no data" in line


def wav_header_of_an_endless_stream(rate: int = 44100, channels: int = 2) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    unknown = struct.pack("<I", 0xFFFFFFFF)  # sizes of a WAV being streamed
    return b"RIFF" + unknown + b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + unknown


ENDLESS_FILE_OBJECT = """
import io, sys
from kvwhisper import AudioError, load_audio
header = bytes.fromhex(sys.argv[1])

class Endless(io.RawIOBase):  # a WAV header, then zeros forever
    def readable(self):
        return True
    def readinto(self, b):
        global header
        n = min(len(b), len(header)) if header else len(b)
        b[:n] = header[:n] if header else bytes(n)
        header = header[n:]
        return n

try:
    load_audio(io.BufferedReader(Endless()), max_duration=float(sys.argv[2]))
except AudioError as e:
    print(e)
print(next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")))
"""

ENDLESS_PIPE = """
import sys
from kvwhisper import AudioError, load_audio
try:
    load_audio("-", max_duration=float(sys.argv[1]))
except AudioError as e:
    print(e)
print(next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")))
"""

ZEROS_FOREVER = """
import sys
sys.stdout.buffer.write(bytes.fromhex(sys.argv[1]))
zeros = bytes(1 << 16)
try:
    while True:
        sys.stdout.buffer.write(zeros)
except BrokenPipeError:
    pass
"""


@pytest.mark.parametrize("source", ["file object", "pipe"])
def test_endless_stream_stops_at_max_duration_with_bounded_memory(source) -> None:
    """Peak RSS is the child's VmHWM (ru_maxrss would carry the forking test process's peak over exec)."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc/self/status (Linux) to read the peak RSS")
    header = wav_header_of_an_endless_stream().hex()
    if source == "file object":
        cmd = [sys.executable, "-c", ENDLESS_FILE_OBJECT, header, "600"]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    else:
        gen = subprocess.Popen([sys.executable, "-c", ZEROS_FOREVER, header], stdout=subprocess.PIPE)
        cmd = [sys.executable, "-c", ENDLESS_PIPE, "600"]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, stdin=gen.stdout)
        gen.stdout.close()
        gen.kill()
        gen.wait()
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    message, peak = proc.stdout.strip().splitlines()
    assert "longer than max_duration=600 s of audio" in message
    print(f"\n{source}: stopped after 600 s of audio, peak RSS {int(peak) / 2**20:.0f} MB")
    assert int(peak) < 2 * 2**30


def test_max_duration_must_be_positive_or_none(jfk_path) -> None:
    with pytest.raises(ValueError, match="max_duration"):
        load_audio(jfk_path, max_duration=0)
    assert len(load_audio(jfk_path, max_duration=None)) == len(load_audio(jfk_path))
    with pytest.raises(AudioError, match="longer than max_duration=5 s"):
        load_audio(io.BytesIO(jfk_path.read_bytes()), max_duration=5)
