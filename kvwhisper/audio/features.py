"""Whisper's log-Mel features and the 30-second windows the encoder reads.

Same constants and the same math as openai-whisper's ``whisper/audio.py``, so features match the reference
to float rounding (bit-identical on CPU in our tests).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .files import SAMPLE_RATE, AudioSource, load_audio

N_FFT = 400  # 25 ms STFT window at 16 kHz
HOP_LENGTH = 160  # 10 ms between STFT frames
CHUNK_LENGTH = 30  # seconds of audio in one encoder window


def exact_div(x: int, y: int) -> int:
    """``x // y`` for a ``y`` that divides ``x``; ValueError otherwise (the frame counts below must be exact)."""
    if x % y != 0:
        raise ValueError(f"{x} is not a multiple of {y}")
    return x // y


N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in a 30-second window
N_FRAMES = exact_div(N_SAMPLES, HOP_LENGTH)  # 3000 mel frames in a 30-second window

N_SAMPLES_PER_TOKEN = HOP_LENGTH * 2  # 320: the encoder's stem convolutions have stride 2
FRAMES_PER_SECOND = exact_div(SAMPLE_RATE, HOP_LENGTH)  # 100: 10 ms per mel frame
TOKENS_PER_SECOND = exact_div(SAMPLE_RATE, N_SAMPLES_PER_TOKEN)  # 50: 20 ms per audio token

SUPPORTED_N_MELS = (80, 128)  # 80 for most Whisper models, 128 for large-v3 / turbo
LOG_FLOOR = 1e-10  # mel power is clamped here before log10
DYNAMIC_RANGE = 8.0  # log10 units (80 dB) kept below the loudest bin; quieter bins are raised to it

Device = str | torch.device


# the Slaney mel scale: linear below 1 kHz (200/3 Hz a mel), logarithmic above (27 mels an octave of 6.4)
MEL_LINEAR_HZ = 200.0 / 3
MEL_LOG_START_HZ = 1000.0
MEL_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Frequencies (Hz, float64 array) on the Slaney mel scale."""
    mels = hz / MEL_LINEAR_HZ
    log = hz >= MEL_LOG_START_HZ
    mels[log] = MEL_LOG_START_HZ / MEL_LINEAR_HZ + np.log(hz[log] / MEL_LOG_START_HZ) / MEL_LOG_STEP
    return mels


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """The inverse of hz_to_mel."""
    hz = MEL_LINEAR_HZ * mels
    log = mels >= MEL_LOG_START_HZ / MEL_LINEAR_HZ
    hz[log] = MEL_LOG_START_HZ * np.exp(MEL_LOG_STEP * (mels[log] - MEL_LOG_START_HZ / MEL_LINEAR_HZ))
    return hz


@lru_cache(maxsize=len(SUPPORTED_N_MELS))
def _mel_filters_cpu(n_mels: int) -> torch.Tensor:
    """Slaney-style mel filterbank, shape (n_mels, N_FFT // 2 + 1) = (n_mels, 201), float32 on CPU.

    Triangles between n_mels + 2 points evenly spaced in mels from 0 Hz to the Nyquist frequency, each scaled
    to unit area ("slaney" norm): the arrays the reference ships in ``whisper/assets/mel_filters.npz``, bit for
    bit (they were saved from ``librosa.filters.mel``, whose float64 arithmetic this repeats).
    """
    if n_mels not in SUPPORTED_N_MELS:
        raise ValueError(f"unsupported n_mels {n_mels!r}: Whisper models use one of {SUPPORTED_N_MELS}")
    fft_hz = np.fft.rfftfreq(n=N_FFT, d=1.0 / SAMPLE_RATE)  # (201,)
    edges = hz_to_mel(np.array([0.0, SAMPLE_RATE / 2]))
    points = mel_to_hz(np.linspace(edges[0], edges[1], n_mels + 2))  # (n_mels + 2,) Hz
    widths = np.diff(points)
    ramps = np.subtract.outer(points, fft_hz)  # (n_mels + 2, 201)
    weights = np.zeros((n_mels, len(fft_hz)), dtype=np.float32)
    for i in range(n_mels):
        rising, falling = -ramps[i] / widths[i], ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0, np.minimum(rising, falling))
    weights *= (2.0 / (points[2 : n_mels + 2] - points[:n_mels]))[:, None]
    return torch.from_numpy(weights)


@lru_cache(maxsize=16)
def mel_filters(device: Device, n_mels: int) -> torch.Tensor:
    """The mel filterbank on ``device``, shape (n_mels, 201). ``n_mels`` must be 80 or 128."""
    return _mel_filters_cpu(n_mels).to(device)


def log_mel_spectrogram(
    audio: AudioSource,
    n_mels: int = 80,
    padding: int = 0,
    device: Device | None = None,
) -> torch.Tensor:
    """Whisper's log-Mel spectrogram of ``audio``, shape (n_mels, n_frames), float32.

    ``audio`` is a 16 kHz waveform, shape (n_samples,): a float tensor or numpy array is used as given,
    like the reference (cast to float32); anything else goes through :func:`load_audio` (a path, bytes,
    a binary file object, an int16 / int32 PCM array). ``padding`` zero samples are appended before the STFT.
    ``n_frames = (n_samples + padding) // HOP_LENGTH``. The STFT runs on ``device`` when given (e.g.
    ``"cuda"``), else where the tensor lives.
    """
    samples = as_waveform(audio)
    if samples.shape[0] + max(padding, 0) == 0:
        raise ValueError("log_mel_spectrogram: the waveform is empty (no samples, no padding)")
    if device is not None:
        samples = samples.to(device)
    if padding > 0:
        samples = F.pad(samples, (0, padding))
    window = torch.hann_window(N_FFT, device=samples.device)  # periodic Hann, as in the reference
    stft = torch.stft(samples, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2  # (201, n_frames): the last centred frame is dropped

    mel = mel_filters(samples.device, n_mels) @ power
    log_spec = torch.clamp(mel, min=LOG_FLOOR).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - DYNAMIC_RANGE)
    return (log_spec + 4.0) / 4.0  # roughly into [-1, 1]


def as_waveform(audio: AudioSource) -> torch.Tensor:
    """A float32 waveform tensor from a float tensor or array (as given, like the reference), or from
    anything else through load_audio (encoded sources; integer PCM arrays, scaled to [-1, 1))."""
    if isinstance(audio, torch.Tensor) and audio.is_floating_point():
        return _checked(audio if audio.dtype == torch.float32 else audio.float())
    if isinstance(audio, np.ndarray) and audio.dtype.kind == "f":
        return _checked(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)))
    return torch.from_numpy(load_audio(audio))


def _checked(samples: torch.Tensor) -> torch.Tensor:
    """A waveform given as numbers: one channel, finite values (NaN or Inf would spread over the whole mel)."""
    if samples.ndim != 1:
        raise ValueError(
            f"expected a mono waveform (16 kHz) of shape (n_samples,), got shape {tuple(samples.shape)}"
            + (": downmix the channels first (load_audio does)" if samples.ndim == 2 else "")
        )
    # a finite sum means finite samples (one pass, no mask); a NaN, an Inf or an overflow of the sum is looked
    # at sample by sample
    if not math.isfinite(float(samples.sum())) and not bool(torch.isfinite(samples).all()):
        raise ValueError("the waveform contains NaN or infinite samples")
    return samples


def pad_or_trim(
    array: np.ndarray | torch.Tensor, length: int = N_SAMPLES, *, axis: int = -1
) -> np.ndarray | torch.Tensor:
    """Zero-pad or trim ``array`` along ``axis`` to ``length`` (default: 30 s of samples).

    Works on numpy arrays and torch tensors of any shape; only ``axis`` changes size. When nothing is
    trimmed or padded the input comes back as it is; a trimmed result may be a view of the input.
    """
    size = array.shape[axis]
    if size > length:
        index = [slice(None)] * array.ndim
        index[axis] = slice(0, length)
        array = array[tuple(index)]
    elif size < length:
        axis = axis % array.ndim
        if isinstance(array, torch.Tensor):
            widths = [0, 0] * (array.ndim - 1 - axis) + [0, length - size]  # F.pad counts from the last dim
            array = F.pad(array, widths)
        else:
            widths = [(0, 0)] * array.ndim
            widths[axis] = (0, length - size)
            array = np.pad(array, widths)
    return array


MEL_CHUNK_FRAMES = 6000  # mel frames per STFT call in whole_file_mel (1 minute of audio)


def whole_file_mel(
    audio: AudioSource, n_mels: int = 80, chunk_frames: int = MEL_CHUNK_FRAMES
) -> torch.Tensor:
    """Log-Mel of the whole waveform plus N_SAMPLES zeros, (n_mels, n_samples // HOP_LENGTH + N_FRAMES).

    Bit-identical to ``log_mel_spectrogram(audio, n_mels, padding=N_SAMPLES)`` (the STFT is frame-local, so
    it is computed ``chunk_frames`` frames at a time; the global max floor is applied at the end), but the
    peak memory is the output plus one chunk instead of several whole-file complex spectra.
    """
    x = as_waveform(audio).detach().cpu()
    if x.ndim != 1:
        raise ValueError(f"whole_file_mel needs a mono waveform (n_samples,), got {tuple(x.shape)}")
    n = x.shape[0]
    n_frames = (n + N_SAMPLES) // HOP_LENGTH
    half = N_FFT // 2
    window = torch.hann_window(N_FFT)
    filters = mel_filters("cpu", n_mels)
    # the padded signal of torch.stft(center=True): `half` reflected samples, x, N_SAMPLES zeros (+ `half`)
    head = torch.nn.functional.pad(x[: half + 1], (0, max(0, half + 1 - n)))
    reflected = head.flip(0)[:half]  # head[half], ..., head[1]

    def padded(lo: int, hi: int) -> torch.Tensor:
        """Samples [lo, hi) of the padded signal."""
        parts = []
        if lo < half:
            parts.append(reflected[lo : min(hi, half)])
            lo = half
        if lo < hi:
            a, b = lo - half, hi - half
            if a < n:
                parts.append(x[a : min(b, n)])
            if b > n:
                parts.append(torch.zeros(b - max(a, n)))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    mel = torch.empty(n_mels, n_frames)
    for a in range(0, n_frames, chunk_frames):
        b = min(n_frames, a + chunk_frames)
        chunk = padded(a * HOP_LENGTH, (b - 1) * HOP_LENGTH + N_FFT)
        stft = torch.stft(chunk, N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True)
        mel[:, a:b] = torch.clamp(filters @ stft.abs() ** 2, min=1e-10).log10()
    floor = mel.max() - 8.0
    torch.maximum(mel, floor, out=mel)
    return mel.add_(4.0).div_(4.0)


class MelWindows:
    """The log-Mel spectrogram of a whole recording, computed once, cut into 30-second encoder windows.

    Follows the reference's ``transcribe()``: the mel is computed over the whole waveform plus
    ``N_SAMPLES`` (30 s) of trailing zeros, so normalization (the loudest bin sets the floor) is over the
    whole file and the last frames see zeros rather than reflection padding; each window takes the content
    frames from ``seek`` and pads them to ``N_FRAMES`` with 0.0 in the normalized log-mel domain, as the
    reference does (not with the stored padding frames, which hold the floor value of silence).

    Attributes:
        mel: (n_mels, content_frames + N_FRAMES) float32, on ``device``.
        content_frames: mel frames that cover real audio, ``n_samples // HOP_LENGTH``.
        duration: seconds of audio those frames cover, ``content_frames * HOP_LENGTH / SAMPLE_RATE``.
    """

    def __init__(self, audio: AudioSource, n_mels: int = 80, device: Device | None = None) -> None:
        """``audio``: a path, bytes, file object, or a 16 kHz mono waveform of shape (n_samples,)."""
        samples = as_waveform(audio)
        if samples.ndim != 1:
            raise ValueError(
                f"MelWindows needs a mono waveform of shape (n_samples,), got {tuple(samples.shape)}: "
                "downmix with load_audio() first"
            )
        self.n_samples = samples.shape[0]
        self.n_mels = n_mels
        if device is None or torch.device(device).type == "cpu":  # chunked: no whole-file complex spectrum
            self.mel = whole_file_mel(samples, n_mels)
        else:
            self.mel = log_mel_spectrogram(samples, n_mels, padding=N_SAMPLES, device=device)
        self.content_frames = self.mel.shape[-1] - N_FRAMES
        self.duration = float(self.content_frames * HOP_LENGTH / SAMPLE_RATE)

    @classmethod
    def from_mel(cls, mel: torch.Tensor) -> MelWindows:
        """Windows over a mel already computed the same way: (n_mels, content_frames + N_FRAMES)."""
        windows = cls.__new__(cls)
        windows.mel, windows.n_mels = mel, mel.shape[0]
        windows.content_frames = mel.shape[-1] - N_FRAMES
        windows.n_samples = windows.content_frames * HOP_LENGTH
        windows.duration = float(windows.content_frames * HOP_LENGTH / SAMPLE_RATE)
        return windows

    @property
    def device(self) -> torch.device:
        return self.mel.device

    def segment_size(self, seek: int, end: int | None = None) -> int:
        """Content frames in the window starting at frame ``seek``: ``min(N_FRAMES, end - seek)``.

        ``end`` (default ``content_frames``) is an exclusive frame limit, clamped to ``content_frames``,
        like the reference's clip end.
        """
        end = self.content_frames if end is None else min(end, self.content_frames)
        if not 0 <= seek <= end:
            raise ValueError(f"seek {seek} is outside the content frames [0, {end}]")
        return min(N_FRAMES, end - seek)

    def window(self, seek: int, end: int | None = None) -> torch.Tensor:
        """The encoder input starting at frame ``seek``, shape (n_mels, N_FRAMES).

        Frames ``[seek, seek + segment_size(seek, end))`` of :attr:`mel`, zero-padded on the right to
        ``N_FRAMES``; exactly the reference's ``pad_or_trim(mel[:, seek : seek + segment_size], N_FRAMES)``.
        May be a view of :attr:`mel`: clone it before modifying it in place.
        """
        size = self.segment_size(seek, end)
        return pad_or_trim(self.mel[:, seek : seek + size], N_FRAMES)

    def __repr__(self) -> str:
        return (
            f"MelWindows(n_mels={self.n_mels}, content_frames={self.content_frames}, "
            f"duration={self.duration:.2f}s, device={self.device})"
        )
