"""kvwhisper.audio against openai-whisper's whisper.audio (the reference), on real and generated audio.

The reference's load_audio runs the ffmpeg CLI; the imageio-ffmpeg package provides the binary (a test extra).
Corpus-wide sweeps print their measured numbers: run with ``-s`` to see them.
"""

from __future__ import annotations

import io
import os
import shutil
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import DATA_DIR, require_shared_speech, shared_audio_files

import kvwhisper.audio as kva
from kvwhisper.audio import (
    HOP_LENGTH,
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    AudioDamageWarning,
    AudioError,
    MelWindows,
    load_audio,
    log_mel_spectrogram,
    mel_filters,
    pad_or_trim,
)

whisper_audio = pytest.importorskip("whisper.audio", reason="openai-whisper (the reference) is not installed")

BUNDLED = sorted(
    p for p in DATA_DIR.iterdir() if p.suffix.lower() in {".flac", ".mp3", ".ogg", ".opus", ".wav"}
)
JFK = DATA_DIR / "jfk.flac"
MP3 = DATA_DIR / "common_voice_en_22058267.mp3"
MEL_TOL = 1e-4  # max |ours - reference| for log-mel features, fp32 on CPU


# ------------------------------------------------------------------------------------------------------------
# the reference's decoder (ffmpeg CLI) and shared helpers


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Small STFTs gain nothing from threads, and on a busy 2-core machine OpenMP threads spinning against
    other processes made the corpus sweep 7x slower (88 s vs 12 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ref_load(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Path], np.ndarray]]:
    """whisper.audio.load_audio with an ``ffmpeg`` from imageio-ffmpeg on PATH; results cached per path."""
    imageio_ffmpeg = pytest.importorskip(
        "imageio_ffmpeg", reason="imageio-ffmpeg (an ffmpeg binary for the reference's load_audio) is missing"
    )
    bin_dir = tmp_path_factory.mktemp("ffmpeg-bin")
    (bin_dir / "ffmpeg").symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    cache: dict[Path, np.ndarray] = {}

    def load(path: Path) -> np.ndarray:
        if path not in cache:
            cache[path] = whisper_audio.load_audio(str(path))
        return cache[path]

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        assert shutil.which("ffmpeg") == str(bin_dir / "ffmpeg")
        yield load


def compare_decoding(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Length difference and sample differences (over the common length) of two 16 kHz decodings."""
    n = min(len(ours), len(ref))
    diff = ours[:n].astype(np.float64) - ref[:n]
    return {
        "len_diff": len(ours) - len(ref),
        "max_abs": float(np.abs(diff).max()) if n else 0.0,
        "rms_diff": float(np.sqrt(np.mean(diff**2))) if n else 0.0,
        "rms_ref": float(np.sqrt(np.mean(ref[:n].astype(np.float64) ** 2))) if n else 0.0,
    }


def assert_decoding_close(name: str, stats: dict[str, float], n_ref: int) -> None:
    """Length within one sample per second of audio; RMS difference at least 40 dB below the signal."""
    assert abs(stats["len_diff"]) <= max(1, n_ref // SAMPLE_RATE), f"{name}: length differs: {stats}"
    assert stats["rms_diff"] <= 0.01 * stats["rms_ref"] + 1e-5, f"{name}: samples differ: {stats}"


def dominant_frequency(x: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sr / len(x))


def tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode(
    path: Path,
    codec: str,
    rate: int,
    layout: str,
    video: str | None = None,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    seconds: float = 1.0,
) -> Path:
    """Encode ``seconds`` of a 440 Hz tone (amplitude 0.5, on every channel) with PyAV, plus a tiny 32x32
    video track when ``video`` names a video codec."""
    channels = np.tile(tone(440.0, rate, seconds), (av.AudioLayout(layout).nb_channels, 1))
    with av.open(str(path), "w", options=container_options or {}) as container:
        vstream = None
        if video is not None:
            vstream = container.add_stream(video, rate=10)
            vstream.width, vstream.height, vstream.pix_fmt = 32, 32, "yuv420p"
        astream = container.add_stream(codec, rate=rate, layout=layout, options=options or {})
        planar = astream.codec_context.codec.audio_formats[0].is_planar
        samples = channels if planar else channels.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples), format="fltp" if planar else "flt", layout=layout
        )
        frame.sample_rate, frame.pts = rate, 0
        if vstream is not None:
            for i in range(round(seconds * 10)):
                image = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * i, np.uint8), format="rgb24")
                image.pts = i
                container.mux(vstream.encode(image))
            container.mux(vstream.encode(None))
        container.mux(astream.encode(frame))
        container.mux(astream.encode(None))
    return path


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """16-bit PCM WAV from int16 samples, shape (n,) or (n, channels), with the standard library."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1 if samples.ndim == 1 else samples.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


# ------------------------------------------------------------------------------------------------------------
# constants and filters


def test_constants_match_reference() -> None:
    for name in [
        "SAMPLE_RATE",
        "N_FFT",
        "HOP_LENGTH",
        "CHUNK_LENGTH",
        "N_SAMPLES",
        "N_FRAMES",
        "N_SAMPLES_PER_TOKEN",
        "FRAMES_PER_SECOND",
        "TOKENS_PER_SECOND",
    ]:
        assert getattr(kva, name) == getattr(whisper_audio, name), name
        assert type(getattr(kva, name)) is int, name
    assert (N_SAMPLES, N_FRAMES) == (480000, 3000)


def test_public_names_exported() -> None:
    for name in kva.__all__:
        assert hasattr(kva, name), name
    assert issubclass(AudioError, ValueError)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_equal_reference_assets(n_mels: int) -> None:
    assets = Path(whisper_audio.__file__).parent / "assets" / "mel_filters.npz"
    with np.load(assets) as f:
        expected = torch.from_numpy(f[f"mel_{n_mels}"])
    ours = mel_filters("cpu", n_mels)
    assert ours.shape == (n_mels, 201) and ours.dtype == torch.float32
    assert torch.equal(ours, expected)
    assert mel_filters("cpu", n_mels) is ours  # cached


@pytest.mark.parametrize("n_mels", [0, 40, 64, 256])
def test_mel_filters_reject_other_sizes(n_mels: int) -> None:
    with pytest.raises(ValueError, match="n_mels"):
        mel_filters("cpu", n_mels)


# ------------------------------------------------------------------------------------------------------------
# log-mel parity with the reference


def _mel_diffs(samples: np.ndarray) -> dict[tuple[int, int], float]:
    """max |ours - reference| for each (n_mels, padding) on the same samples."""
    out = {}
    x = torch.from_numpy(samples)
    for n_mels in (80, 128):
        for padding in (0, N_SAMPLES):
            ours = log_mel_spectrogram(samples, n_mels, padding=padding)
            ref = whisper_audio.log_mel_spectrogram(x, n_mels, padding=padding)
            assert ours.shape == ref.shape == (n_mels, (len(samples) + padding) // HOP_LENGTH)
            assert ours.dtype == torch.float32
            out[(n_mels, padding)] = float((ours - ref).abs().max())
    return out


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_log_mel_matches_reference_bundled(path: Path) -> None:
    samples = load_audio(path)
    diffs = _mel_diffs(samples)
    print(f"\n{path.name}: max |mel diff| {diffs}")
    assert max(diffs.values()) <= MEL_TOL, diffs


def test_log_mel_of_a_path_matches_reference_path(ref_load: Callable[[Path], np.ndarray]) -> None:
    """Path in, decoding included: ours (PyAV) vs the reference (ffmpeg CLI)."""
    ours = log_mel_spectrogram(str(JFK), 128, padding=N_SAMPLES)
    ref = whisper_audio.log_mel_spectrogram(str(JFK), 128, padding=N_SAMPLES)
    assert float((ours - ref).abs().max()) <= MEL_TOL
    assert torch.equal(log_mel_spectrogram(JFK), log_mel_spectrogram(JFK.read_bytes()))


@pytest.mark.slow
def test_log_mel_matches_reference_on_shared_corpus(ref_load: Callable[[Path], np.ndarray]) -> None:
    """Every file in the shared speech corpus, 80 and 128 bins, with and without 30 s of padding."""
    require_shared_speech()
    files = shared_audio_files()
    assert files, "shared corpus present but no audio files found"
    worst = {80: (-1.0, ""), 128: (-1.0, "")}
    failures = []
    for path in files:
        diffs = _mel_diffs(ref_load(path))
        for (n_mels, padding), d in diffs.items():
            if d > worst[n_mels][0]:
                worst[n_mels] = (d, f"{path.parent.name}/{path.name} padding={padding}")
            if d > MEL_TOL:
                failures.append((path.name, n_mels, padding, d))
    print(f"\nlog-mel vs reference over {len(files)} corpus files: largest |diff| {worst}")
    assert not failures, failures


# ------------------------------------------------------------------------------------------------------------
# load_audio parity with the reference (ffmpeg CLI)


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_load_audio_matches_reference_bundled(path: Path, ref_load: Callable[[Path], np.ndarray]) -> None:
    ours, ref = load_audio(path), ref_load(path)
    assert ours.dtype == np.float32 and ours.ndim == 1
    stats = compare_decoding(ours, ref)
    print(f"\n{path.name}: {len(ref)} samples, {stats}")
    assert_decoding_close(path.name, stats, len(ref))


@pytest.mark.slow
def test_load_audio_matches_reference_on_shared_corpus(ref_load: Callable[[Path], np.ndarray]) -> None:
    require_shared_speech()
    files = shared_audio_files()
    assert files, "shared corpus present but no audio files found"
    worst_len, worst_max, worst_rel, identical, seconds = 0, 0.0, 0.0, 0, 0.0
    for path in files:
        ours, ref = load_audio(path), ref_load(path)
        stats = compare_decoding(ours, ref)
        assert_decoding_close(f"{path.parent.name}/{path.name}", stats, len(ref))
        worst_len = max(worst_len, abs(stats["len_diff"]))
        worst_max = max(worst_max, stats["max_abs"])
        worst_rel = max(worst_rel, stats["rms_diff"] / max(stats["rms_ref"], 1e-12))
        identical += stats["len_diff"] == 0 and stats["max_abs"] == 0.0
        seconds += len(ref) / SAMPLE_RATE
    print(
        f"\nload_audio vs reference over {len(files)} corpus files ({seconds / 60:.1f} min): "
        f"bit-identical {identical}/{len(files)}, largest |length diff| {worst_len} samples, "
        f"largest |sample diff| {worst_max:.3g}, largest RMS diff / RMS {worst_rel:.3g}"
    )


def test_truncated_mp3_decodes_what_the_reference_decodes(
    tmp_path: Path, ref_load: Callable[[Path], np.ndarray]
) -> None:
    """An MP3 cut after a few frames: both decoders return the same decodable prefix."""
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(MP3.read_bytes()[:3000])
    ours, ref = load_audio(cut), ref_load(cut)
    assert 0 < len(ours) < len(load_audio(MP3))
    assert_decoding_close("cut.mp3", compare_decoding(ours, ref), len(ref))


# ------------------------------------------------------------------------------------------------------------
# formats: generated files in every container we claim, checked for length, pitch and parity

FRAGMENTED = {"movflags": "frag_keyframe+empty_moov"}  # fragmented MP4: FFmpeg ignores its edit list
FORMAT_CASES: dict[str, dict] = {  # file name: encode() arguments (1 s of a 440 Hz tone)
    "aac.m4a": dict(codec="aac", rate=44100, layout="stereo"),
    "aac_51.m4a": dict(codec="aac", rate=48000, layout="5.1"),
    "aac_video.mp4": dict(codec="aac", rate=48000, layout="stereo", video="mpeg4"),
    "aac_fragmented.mp4": dict(codec="aac", rate=44100, layout="mono", container_options=FRAGMENTED),
    "aac_22k.mov": dict(codec="aac", rate=22050, layout="stereo"),
    "opus.mp4": dict(codec="libopus", rate=48000, layout="stereo"),
    "mp3.mp4": dict(codec="libmp3lame", rate=44100, layout="stereo"),
    "alac.m4a": dict(codec="alac", rate=44100, layout="stereo"),
    "opus_vp8.webm": dict(codec="libopus", rate=48000, layout="stereo", video="libvpx"),
    "flac_51_video.mkv": dict(codec="flac", rate=22050, layout="5.1", video="mpeg4"),
    "mono.opus": dict(codec="libopus", rate=48000, layout="mono"),
    "vorbis.ogg": dict(codec="vorbis", rate=44100, layout="stereo", options={"strict": "experimental"}),
    "s16_44k_stereo.wav": dict(codec="pcm_s16le", rate=44100, layout="stereo"),
    "f32_16k_mono.wav": dict(codec="pcm_f32le", rate=16000, layout="mono"),
    "8k_mono.flac": dict(codec="flac", rate=8000, layout="mono"),
    "mp3_44k_stereo.mp3": dict(codec="libmp3lame", rate=44100, layout="stereo"),
}


@pytest.fixture(scope="module")
def format_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("formats")
    return {name: encode(folder / name, **case) for name, case in FORMAT_CASES.items()}


@pytest.mark.parametrize("name", sorted(FORMAT_CASES))
def test_formats_decode_to_16k_mono_tone(name: str, format_files: dict[str, Path]) -> None:
    path, case = format_files[name], FORMAT_CASES[name]
    with av.open(str(path)) as c:
        assert c.streams.audio[0].sample_rate == case["rate"]
        assert (len(c.streams.video) > 0) == ("video" in case)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - SAMPLE_RATE) <= 0.05 * SAMPLE_RATE  # 1 s of tone, give or take codec padding
    assert abs(dominant_frequency(y) - 440.0) < 3.0
    middle = y[len(y) // 4 : 3 * len(y) // 4]  # (the edges may hold codec priming / padding)
    assert 0.45 < np.abs(middle).max() < 0.55  # a 0.5 tone: not silence, not clipped


@pytest.mark.parametrize("name", sorted(FORMAT_CASES))
def test_formats_match_reference(
    name: str, format_files: dict[str, Path], ref_load: Callable[[Path], np.ndarray]
) -> None:
    y, ref = load_audio(format_files[name]), ref_load(format_files[name])
    stats = compare_decoding(y, ref)
    print(f"\n{name}: {len(y)} samples, vs reference {stats}")
    assert_decoding_close(name, stats, len(ref))


def test_mp4_end_padding_is_trimmed(format_files: dict[str, Path]) -> None:
    """AAC pads its last 1024-sample frame; the MP4 edit list says where the tone ends (exactly 1 s)."""
    for name in ("aac.m4a", "aac_51.m4a", "aac_video.mp4", "aac_22k.mov", "mp3.mp4"):
        assert len(load_audio(format_files[name])) == SAMPLE_RATE, name
    # fragmented MP4: FFmpeg ignores the edit list, keeping priming and padding (as the reference does)
    assert len(load_audio(format_files["aac_fragmented.mp4"])) > SAMPLE_RATE


def test_stereo_downmix_is_the_channel_mean(tmp_path: Path) -> None:
    left, right = tone(440.0, SAMPLE_RATE, 1.0, 0.4), tone(1000.0, SAMPLE_RATE, 1.0, 0.4)
    pcm = np.round(np.stack([left, right], axis=1) * 32767).astype(np.int16)  # (n, 2)
    y = load_audio(write_wav(tmp_path / "lr.wav", pcm))
    expected = pcm.astype(np.float64).mean(axis=1) / 32768
    assert len(y) == len(pcm)
    assert np.abs(y - expected).max() <= 1.5 / 32768  # libswresample rounds to int16 once
    assert np.allclose(load_audio(pcm), expected, atol=1e-6)  # the same rule for arrays


def test_resampling_other_rates_keeps_duration_and_pitch(tmp_path: Path) -> None:
    for rate in (8000, 22050, 44100, 48000):
        pcm = np.round(tone(1234.0, rate, 2.0) * 32767).astype(np.int16)
        y = load_audio(write_wav(tmp_path / f"r{rate}.wav", pcm, rate))
        assert abs(len(y) - 2 * SAMPLE_RATE) <= 1, rate
        assert abs(dominant_frequency(y) - 1234.0) < 1.0, rate


def test_other_target_rate() -> None:
    y = load_audio(JFK, sr=8000)
    assert abs(len(y) - 11 * 8000) <= 1
    with pytest.raises(ValueError, match="sr"):
        load_audio(JFK, sr=0)


# ------------------------------------------------------------------------------------------------------------
# source kinds: path, bytes, file object, arrays, tensors


def test_every_source_kind_gives_the_same_samples() -> None:
    expected = load_audio(str(JFK))
    with open(JFK, "rb") as f:
        from_file = load_audio(f)
    variants = {
        "Path": load_audio(JFK),
        "bytes": load_audio(JFK.read_bytes()),
        "bytearray": load_audio(bytearray(JFK.read_bytes())),
        "memoryview": load_audio(memoryview(JFK.read_bytes())),
        "BytesIO": load_audio(io.BytesIO(JFK.read_bytes())),
        "open file": from_file,
        "numpy": load_audio(expected),
        "torch": load_audio(torch.from_numpy(expected)),
        "numpy float64": load_audio(expected.astype(np.float64)),
        "torch float64": load_audio(torch.from_numpy(expected).double()),
        "numpy (1, n)": load_audio(expected[None, :]),
        "numpy (n, 1)": load_audio(expected[:, None]),
    }
    for kind, y in variants.items():
        assert y.dtype == np.float32 and y.ndim == 1, kind
        assert np.array_equal(y, expected), kind


class _NonSeekable:
    """A pipe-like binary stream: read() only."""

    def __init__(self, data: bytes) -> None:
        self._buffer = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._buffer.read(n)


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_non_seekable_stream_and_odd_file_names(path: Path, tmp_path: Path) -> None:
    expected = load_audio(path)
    assert np.array_equal(load_audio(_NonSeekable(path.read_bytes())), expected)
    odd = tmp_path / f"a:b {path.name}"  # FFmpeg would read "a:" as a protocol
    shutil.copy(path, odd)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        assert np.array_equal(load_audio(odd.name), expected)


def test_arrays_are_downmixed_and_scaled() -> None:
    x = np.stack([np.full(1000, 0.25, np.float32), np.full(1000, -0.75, np.float32)])  # (2, n)
    assert np.allclose(load_audio(x), -0.25) and len(load_audio(x)) == 1000
    assert np.allclose(load_audio(x.T), -0.25)  # (n, 2)
    assert np.allclose(load_audio(torch.from_numpy(x)), -0.25)
    assert np.allclose(load_audio(np.full(10, 16384, np.int16)), 0.5)
    assert np.allclose(load_audio(torch.full((10,), -(2**30), dtype=torch.int32)), -0.5)
    assert load_audio(torch.ones(5, dtype=torch.bfloat16, requires_grad=False)).dtype == np.float32


def test_log_mel_accepts_every_source_kind() -> None:
    samples = load_audio(JFK)
    expected = log_mel_spectrogram(samples)
    assert expected.shape == (80, len(samples) // HOP_LENGTH)
    pcm16 = np.round(samples * 32768).astype(np.int16)  # exact: the samples came from int16
    for source in (
        str(JFK),
        JFK,
        JFK.read_bytes(),
        torch.from_numpy(samples),
        samples.astype(np.float64),
        pcm16,
    ):
        assert torch.equal(log_mel_spectrogram(source), expected), type(source)


# ------------------------------------------------------------------------------------------------------------
# bad input: AudioError naming the source and the cause


def _pcm_f32_wav(path: Path, samples: np.ndarray) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_f32le", rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None, :].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, 0
        c.mux(s.encode(frame))
        c.mux(s.encode(None))
    return path


def _video_only_mp4(path: Path) -> Path:
    with av.open(str(path), "w") as c:
        v = c.add_stream("mpeg4", rate=10)
        v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            image = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            image.pts = i
            c.mux(v.encode(image))
        c.mux(v.encode(None))
    return path


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match=r"nope\.wav.*file not found") as e:
        load_audio(path)
    assert e.value.source == str(path) and e.value.cause == "file not found"


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp3"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.mp3.*empty file \(0 bytes\)"):
        load_audio(path)
    with pytest.raises(AudioError, match=r"<0 bytes>.*no data"):
        load_audio(b"")
    with pytest.raises(AudioError, match="no data"):
        load_audio(io.BytesIO(b""))


def test_text_file_named_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio, just a text file with a .wav name\n" * 20)
    with pytest.raises(
        AudioError, match=r"notes\.wav.*unrecognised or truncated audio/video data \(Invalid data"
    ):
        load_audio(path)


def test_truncated_mp3_with_nothing_decodable(tmp_path: Path) -> None:
    path = tmp_path / "cut.mp3"
    path.write_bytes(MP3.read_bytes()[:200])  # ID3 tag and a partial first frame
    with pytest.raises(AudioError, match=r"cut\.mp3.*unrecognised or truncated"):
        load_audio(path)


def test_corrupt_mp3_mid_stream_is_skipped_with_a_warning(
    tmp_path: Path, ref_load: Callable[[Path], np.ndarray]
) -> None:
    """Noise in the middle of an MP3: the frames around it decode, as with ffmpeg, with a warning."""
    data = MP3.read_bytes()
    noise = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    path = tmp_path / "noisy.mp3"
    path.write_bytes(data[:5000] + noise + data[8000:])
    with pytest.warns(AudioDamageWarning, match=r"noisy\.mp3: damaged or truncated audio from \d+\.\d+ s"):
        salvaged = load_audio(path)
    assert abs(len(salvaged) - len(ref_load(path))) <= 0.01 * len(ref_load(path))
    assert 0.5 * len(load_audio(MP3)) < len(salvaged) < len(load_audio(MP3))


def test_header_promising_audio_but_nothing_decodes() -> None:
    data = JFK.read_bytes()[:4000] + np.random.default_rng(0).integers(0, 256, 20000, np.uint8).tobytes()
    with pytest.raises(AudioError, match=r"corrupt or truncated: header says 11\.00 s"):
        load_audio(data)


def test_video_without_audio_track(tmp_path: Path) -> None:
    path = _video_only_mp4(tmp_path / "silent_film.mp4")
    with pytest.raises(AudioError, match=r"silent_film\.mp4.*no audio track.*streams: video"):
        load_audio(path)


def test_nan_or_inf_samples(tmp_path: Path) -> None:
    x = tone(440.0, SAMPLE_RATE, 0.5)
    x[1234] = np.nan
    with pytest.raises(AudioError, match=r"nan\.wav.*decoded samples contain NaN or Inf"):
        load_audio(_pcm_f32_wav(tmp_path / "nan.wav", x))
    with pytest.raises(AudioError, match=r"<array of shape \(8000,\).*NaN or Inf \(first at index 1234\)"):
        load_audio(x)
    with pytest.raises(AudioError, match=r"<tensor of shape \(2, 3\).*NaN or Inf"):
        load_audio(torch.tensor([[0.0, float("inf"), 0.0], [0.0, 0.0, 0.0]]))


@pytest.mark.parametrize(
    ("source", "match"),
    [
        (12345, r"<int object>.*unsupported source type"),
        ([0.0, 0.1], r"<list object>.*unsupported source type"),
        (np.zeros((2, 3, 4), np.float32), r"<array of shape \(2, 3, 4\).*expected shape"),
        (np.zeros((100, 200), np.float32), "neither axis looks like channels"),
        (np.zeros(10, np.complex64), "unsupported sample dtype complex64"),
        (torch.zeros(10, dtype=torch.bool), "unsupported sample dtype bool"),
    ],
    ids=["int", "list", "3-D array", "no channel axis", "complex", "bool tensor"],
)
def test_unsupported_sources(source: object, match: str) -> None:
    with pytest.raises(AudioError, match=match):
        load_audio(source)  # type: ignore[arg-type]


def test_audio_error_pickles() -> None:
    import pickle

    e = pickle.loads(pickle.dumps(AudioError("x.wav", "file not found")))
    assert (e.source, e.cause, str(e)) == (
        "x.wav",
        "file not found",
        "cannot load audio from x.wav: file not found",
    )


# ------------------------------------------------------------------------------------------------------------
# zero-length audio


def test_zero_length_audio_is_valid(tmp_path: Path, ref_load: Callable[[Path], np.ndarray]) -> None:
    path = write_wav(tmp_path / "zero.wav", np.zeros(0, np.int16))
    for source in (path, np.zeros(0, np.float32), torch.zeros(0), np.zeros((2, 0), np.float32)):
        y = load_audio(source)
        assert y.shape == (0,) and y.dtype == np.float32
    assert len(ref_load(path)) == 0  # the reference agrees

    mel = log_mel_spectrogram(pad_or_trim(load_audio(path)))
    assert mel.shape == (80, N_FRAMES)
    assert torch.equal(mel, whisper_audio.log_mel_spectrogram(torch.zeros(N_SAMPLES)))
    assert torch.all(mel == mel[0, 0])  # one padding value everywhere: log10(1e-10) -> -1.5

    windows = MelWindows(load_audio(path))
    assert windows.content_frames == 0 and windows.duration == 0.0
    assert windows.mel.shape == (80, N_FRAMES)
    assert torch.equal(windows.window(0), torch.zeros(80, N_FRAMES))  # the reference pads the mel with 0


# ------------------------------------------------------------------------------------------------------------
# pad_or_trim


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_pad_or_trim_matches_reference(kind: str) -> None:
    rng = np.random.default_rng(0)
    cases = [((100,), 160, -1), ((100,), 60, -1), ((3, 50), 80, -1), ((3, 50), 20, 1)]
    cases += [((7, 5), 9, 0), ((7, 5), 2, 0), ((4, 6, 8), 3, 1)]
    for shape, length, axis in cases:
        a = rng.standard_normal(shape).astype(np.float32)
        x = a if kind == "numpy" else torch.from_numpy(a)
        ours = pad_or_trim(x, length, axis=axis)
        ref = whisper_audio.pad_or_trim(x, length, axis=axis)
        assert type(ours) is type(x) and ours.shape == ref.shape
        assert ours.shape[axis] == length
        assert np.array_equal(np.asarray(ours), np.asarray(ref)), (shape, length, axis)
    same = x[..., :3]
    assert pad_or_trim(same, 3) is same


def test_pad_or_trim_default_is_30_seconds() -> None:
    assert pad_or_trim(np.ones(10, np.float32)).shape == (N_SAMPLES,)
    assert pad_or_trim(torch.ones(N_SAMPLES + 5)).shape == (N_SAMPLES,)
    assert pad_or_trim(torch.ones(80, 3100), N_FRAMES).shape == (80, N_FRAMES)


# ------------------------------------------------------------------------------------------------------------
# MelWindows: whole-file mel once, reference-style windows


def _reference_window(
    mel: torch.Tensor, content_frames: int, seek: int, end: int | None = None
) -> torch.Tensor:
    """What whisper.transcribe() feeds the encoder at ``seek`` (its segment_size rule and pad_or_trim)."""
    clip_end = content_frames if end is None else end
    segment_size = min(N_FRAMES, content_frames - seek, clip_end - seek)
    return whisper_audio.pad_or_trim(mel[:, seek : seek + segment_size], N_FRAMES)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_windows_match_reference_slicing(n_mels: int) -> None:
    samples = np.concatenate([load_audio(JFK)] * 3 + [np.zeros(1234, np.float32)])  # 33.08 s: two windows
    ref_mel = whisper_audio.log_mel_spectrogram(torch.from_numpy(samples), n_mels, padding=N_SAMPLES)
    content_frames = ref_mel.shape[-1] - N_FRAMES

    windows = MelWindows(samples, n_mels)
    assert windows.content_frames == content_frames == len(samples) // HOP_LENGTH == 3307
    assert windows.duration == pytest.approx(content_frames * HOP_LENGTH / SAMPLE_RATE) == 33.07
    assert windows.n_samples == len(samples)
    assert float((windows.mel - ref_mel).abs().max()) <= MEL_TOL

    for seek in (0, 1, 733, 3000, 3001, 3300, content_frames):
        ours = windows.window(seek)
        assert ours.shape == (n_mels, N_FRAMES)
        assert float((ours - _reference_window(ref_mel, content_frames, seek)).abs().max()) <= MEL_TOL, seek
        assert windows.segment_size(seek) == min(N_FRAMES, content_frames - seek)
    assert torch.equal(windows.window(3001)[:, 306:], torch.zeros(n_mels, N_FRAMES - 306))  # zero mel padding
    clipped = windows.window(500, end=1700)
    assert torch.equal(clipped, _reference_window(windows.mel, content_frames, 500, 1700))
    assert windows.segment_size(500, end=1700) == 1200
    assert windows.segment_size(3000, end=10**9) == 307  # the end is clamped to the content


def test_mel_windows_compute_the_mel_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPU the whole-file mel is computed once, by the chunked whole_file_mel; windows are slices of it."""
    calls = []
    real = kva.features.whole_file_mel

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(kva.features, "whole_file_mel", counting)
    windows = MelWindows(str(JFK))
    for seek in range(0, windows.content_frames, 250):
        windows.window(seek)
    assert calls == [1]
    padded = kva.log_mel_spectrogram(kva.load_audio(str(JFK)), padding=N_SAMPLES)
    assert torch.equal(windows.mel, padded)  # bit-identical to one whole-file STFT
    assert windows.content_frames == 1100 and windows.duration == 11.0
    assert "content_frames=1100" in repr(windows)


def test_mel_windows_reject_bad_input() -> None:
    windows = MelWindows(np.zeros(16000, np.float32))
    for seek in (-1, windows.content_frames + 1):
        with pytest.raises(ValueError, match="seek"):
            windows.window(seek)
    with pytest.raises(ValueError, match="mono waveform"):
        MelWindows(torch.zeros(2, 16000))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_log_mel_on_cuda_matches_cpu() -> None:
    samples = load_audio(JFK)
    cpu = log_mel_spectrogram(samples, 128, padding=N_SAMPLES)
    cuda = log_mel_spectrogram(samples, 128, padding=N_SAMPLES, device="cuda")
    assert cuda.device.type == "cuda"
    assert float((cuda.cpu() - cpu).abs().max()) <= 2e-3
    windows = MelWindows(samples, 128, device="cuda")
    assert windows.window(0).device.type == "cuda"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_waveform_with_a_non_finite_sample_is_refused(bad: float) -> None:
    from kvwhisper.audio.features import as_waveform

    samples = np.zeros(16000, dtype=np.float32)
    samples[12345] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        as_waveform(samples)
    with pytest.raises(ValueError, match="NaN or infinite"):
        as_waveform(torch.from_numpy(samples))


def test_a_finite_waveform_whose_sum_overflows_is_taken() -> None:
    """The finiteness check sums first: a sum that overflows with every sample finite is looked at sample by
    sample, not refused."""
    from kvwhisper.audio.features import as_waveform

    samples = np.full(4, 3e38, dtype=np.float32)
    assert torch.equal(as_waveform(samples), torch.from_numpy(samples))
