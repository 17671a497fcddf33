"""Voice activity detection: where a recording has speech, by the silero-vad package's bundled model.

    regions = speech_regions("meeting.mp3", min_silence_duration_ms=1000)   # [(start_s, end_s), ...]

The model (silero VAD v5/v6, `silero_vad/data/silero_vad.jit` inside the `silero-vad` wheel: no download) gives
a speech probability per 32 ms frame (512 samples at 16 kHz, each seen with the 64 samples before it). Its
network is a short-time Fourier transform and four convolutions per frame, then an LSTM cell carried from frame
to frame, then a 1x1 convolution. Run frame by frame, as the package's own `get_speech_timestamps` does, an
11-minute file takes ~20,000 calls; here the per-frame part runs over all frames as one batch, the LSTM as one
sequence over the cell's weights (its input products for all frames at once, then the recurrence frame after
frame in the C kernels' `lstm`, or as an `nn.LSTM` where they do not run), giving the same probabilities (to
fp32 rounding; tested against the frame-by-frame calls). Probabilities become regions by the package's
`get_speech_timestamps_from_probs`, with faster-whisper's parameter names and defaults (`VadOptions`), so a
`vad_parameters` dict carries over from it.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cpu import kernels
from .features import SAMPLE_RATE, as_waveform

FRAME = 512  # samples per probability at 16 kHz
CONTEXT = 64  # samples before each frame the model sees with it
FRAMES_PER_BLOCK = 2048  # frames at a time (~65 s of audio): the blocks stay in cache, memory stays flat


class VadUnavailableError(ImportError):
    """The `silero-vad` package (a dependency of kvwhisper) is not installed, or its model file is missing."""


@dataclass(frozen=True)
class VadOptions:
    """What counts as speech (faster-whisper's names and defaults).

    threshold: a frame whose probability is above it is speech. neg_threshold: below it, silence (default
    threshold - 0.15). min_speech_duration_ms: shorter regions are dropped. max_speech_duration_s: longer ones
    are split (at a silence when there is one). min_silence_duration_ms: a region ends after this much
    silence. speech_pad_ms: each region is widened by this much on each side.
    """

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_duration_ms: int = 0
    max_speech_duration_s: float = math.inf
    min_silence_duration_ms: int = 2000
    speech_pad_ms: int = 400

    def __post_init__(self) -> None:
        for name in ("threshold", "neg_threshold"):
            value = getattr(self, name)
            if value is None and name == "neg_threshold":
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
                raise ValueError(f"vad {name} must be a number from 0 to 1, not {value!r}")
        for name in ("min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"vad {name} must be a duration >= 0, not {value!r}")
        value = self.max_speech_duration_s
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise ValueError(f"vad max_speech_duration_s must be > 0, not {value!r}")

    @classmethod
    def from_parameters(cls, parameters: VadOptions | dict | None = None, **more: Any) -> VadOptions:
        """From a VadOptions, a dict of its fields, and/or keywords; an unknown name is a ValueError."""
        if isinstance(parameters, VadOptions):
            values = asdict(parameters)
        elif parameters is None:
            values = {}
        elif isinstance(parameters, dict):
            values = dict(parameters)
        else:
            raise ValueError(f"vad_parameters must be a dict or VadOptions, not {type(parameters).__name__}")
        values.update(more)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown vad parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


# -- the model --------------------------------------------------------------------------------------------
_model: SileroVad | None = None


def _package_file(name: str) -> Path:
    """A file of the installed silero_vad package, found without importing it (its import sets torch's
    thread count to 1 for the whole process)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise VadUnavailableError(
            "voice activity detection needs the silero-vad package: pip install silero-vad"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / name
    if not path.is_file():
        raise VadUnavailableError(
            f"the silero-vad package has no {name}: reinstall it (pip install silero-vad)"
        )
    return path


def _regions_from_probs():
    """silero_vad.get_speech_timestamps_from_probs, imported with torch's thread count kept."""
    _package_file("utils_vad.py")
    threads = torch.get_num_threads()
    try:
        from silero_vad.utils_vad import get_speech_timestamps_from_probs
    finally:
        torch.set_num_threads(threads)
    return get_speech_timestamps_from_probs


class SileroVad:
    """The bundled silero VAD model (16 kHz), run over a whole recording at once."""

    def __init__(self) -> None:
        jit = torch.jit.load(str(_package_file("data/silero_vad.jit")), map_location="cpu").eval()
        self.net = jit._model  # the 16 kHz network: stft, encoder, decoder (rnn cell, then conv + sigmoid)
        if int(self.net.context_size_samples) != CONTEXT:
            raise VadUnavailableError("this silero-vad model has an unexpected context size")
        cell = self.net.decoder.rnn
        self.lstm = nn.LSTM(cell.weight_ih.shape[1], cell.weight_hh.shape[1], batch_first=True)
        with torch.no_grad():  # nn.LSTM and nn.LSTMCell share the gate layout (i, f, g, o)
            self.lstm.weight_ih_l0.copy_(cell.weight_ih)
            self.lstm.weight_hh_l0.copy_(cell.weight_hh)
            self.lstm.bias_ih_l0.copy_(cell.bias_ih)
            self.lstm.bias_hh_l0.copy_(cell.bias_hh)
        # the same cell for kernels.lstm: the recurrent weight transposed, the two biases summed
        self.w_ih = cell.weight_ih.detach().clone()
        self.w_hh_t = cell.weight_hh.detach().t().contiguous()
        self.bias = (cell.bias_ih + cell.bias_hh).detach()
        self.head = self.net.decoder.decoder  # ReLU, 1x1 convolution, sigmoid
        stft = self.net.stft  # a convolution with a periodic-Hann-windowed DFT basis (checked here), hop 128
        self.n_fft, self.hop = int(stft.filter_length), int(stft.hop_length)
        self.window = torch.hann_window(self.n_fft, periodic=True)
        n, k = torch.arange(self.n_fft), torch.arange(self.n_fft // 2 + 1)[:, None]
        angle = 2 * math.pi * (k * n % self.n_fft) / self.n_fft
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * self.window
        if not torch.allclose(stft.forward_basis_buffer[:, 0], basis.float(), atol=1e-6):
            raise VadUnavailableError("this silero-vad model's STFT is not the windowed DFT it is read as")
        if (CONTEXT + FRAME + CONTEXT - self.n_fft) // self.hop + 1 != 4:
            raise VadUnavailableError("this silero-vad model's STFT does not take 4 steps per frame")

    def _stft(self, padded: Tensor, n: int) -> Tensor:
        """The model's STFT magnitude of n frames, (n, 129, 4), from the audio with its context (`padded`:
        CONTEXT + n * FRAME samples). The model reflects each 576-sample frame's end to pad it: the first three
        of its four steps are plain windows of the audio, the fourth holds the reflection. By FFT instead of
        the model's 258 x 256 convolution: the same numbers to fp32 rounding, several times faster."""
        windows = F.pad(padded, (0, self.n_fft)).unfold(0, self.n_fft, self.hop)[: 4 * n].reshape(n, 4, -1)
        windows = windows * self.window  # a copy: the fourth steps are replaced next
        frames = padded.unfold(0, CONTEXT + FRAME, FRAME)[:n]  # (n, 576): each frame after its context
        tail = F.pad(frames[:, None, 3 * self.hop :], (0, CONTEXT), mode="reflect")[:, 0]
        windows[:, 3] = tail * self.window
        return torch.fft.rfft(windows).abs().transpose(1, 2).contiguous()

    @torch.no_grad()
    def probabilities(self, audio: Tensor) -> Tensor:
        """Speech probability of each 512-sample frame of 16 kHz mono audio (the last frame zero-padded)."""
        audio = audio.float().flatten()
        n = max(1, math.ceil(audio.shape[0] / FRAME))
        padded = torch.zeros(CONTEXT + n * FRAME)
        padded[CONTEXT : CONTEXT + audio.shape[0]] = audio
        state = None
        out = []
        for i in range(0, n, FRAMES_PER_BLOCK):
            b = min(FRAMES_PER_BLOCK, n - i)
            block = padded[i * FRAME : CONTEXT + (i + b) * FRAME]
            x = self.net.encoder(self._stft(block, b)).squeeze(-1)  # (b, 128)
            h, state = self._recur(x, state)  # (b, 128): the cell, frame after frame
            p = self.head(h.unsqueeze(-1))  # (b, 1, 1)
            out.append(p.squeeze(1).mean(-1))
        return torch.cat(out)

    def _recur(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The LSTM over frames x (b, input): each frame's h (b, hidden) and the state (h, c) after the last."""
        hidden = self.w_hh_t.shape[0]
        if kernels.lstm_applies(hidden):
            h, c = state if state is not None else (torch.zeros(hidden), torch.zeros(hidden))
            gates = torch.addmm(self.bias, x, self.w_ih.t())  # every frame's input products at once
            return kernels.lstm(gates, self.w_hh_t, h, c), (h, c)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a step of 128 units is too small to share: 2 threads run it 7x slower
        try:
            if state is not None:
                state = (state[0].view(1, 1, -1), state[1].view(1, 1, -1))
            h, (h_n, c_n) = self.lstm(x[None], state)
        finally:
            torch.set_num_threads(threads)
        return h[0], (h_n.view(-1), c_n.view(-1))


def vad_model() -> SileroVad:
    """The bundled model, loaded once per process."""
    global _model
    if _model is None:
        _model = SileroVad()
    return _model


# -- regions ------------------------------------------------------------------------------------------------
def speech_samples(audio: np.ndarray | Tensor, options: VadOptions | None = None) -> list[tuple[int, int]]:
    """Speech regions of 16 kHz mono audio as (start, end) sample indices, in order, not overlapping."""
    options = options or VadOptions()
    audio = torch.as_tensor(np.asarray(audio, dtype=np.float32)) if not isinstance(audio, Tensor) else audio
    if audio.numel() == 0:
        return []
    probs = vad_model().probabilities(audio).tolist()
    params = asdict(options)
    regions = _regions_from_probs()(
        probs, sampling_rate=SAMPLE_RATE, audio_length_samples=int(audio.numel()), **params
    )
    return [(int(r["start"]), int(r["end"])) for r in regions]


def speech_regions(
    audio: Any, parameters: VadOptions | dict | None = None, **more: Any
) -> list[tuple[float, float]]:
    """Speech regions of a recording (a path, bytes, a file object or a 16 kHz waveform) in seconds:
    [(start_s, end_s), ...]. Parameters: `VadOptions`' fields, as a dict/VadOptions and/or keywords."""
    options = VadOptions.from_parameters(parameters, **more)
    waveform = as_waveform(audio).detach().cpu()
    return [(a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in speech_samples(waveform, options)]
