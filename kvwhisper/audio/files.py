"""Decoding audio to 16 kHz mono float32 samples, the way openai-whisper's ``load_audio`` does.

The reference shells out to the ffmpeg CLI::

    ffmpeg -nostdin -threads 0 -i FILE -f s16le -ac 1 -acodec pcm_s16le -ar 16000 -

and divides the int16 output by 32768. We decode with PyAV (the same libavformat/libavcodec, bundled, no
system ffmpeg needed) and convert with ``av.AudioResampler(format="s16", layout="mono", rate=sr)``, which
runs the same libswresample conversion (downmix, resample, quantize to int16) the CLI's filter graph runs.
On every file of the shared test corpus the result is bit-identical to the reference's.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from typing import Any, BinaryIO, TypeAlias

import av
import numpy as np
import torch

from .damage import Damage

SAMPLE_RATE = 16000  # Hz: every model input is 16 kHz mono
INT16_SCALE = 32768.0  # int16 PCM full scale: the reference divides the s16 samples by this
MAX_DURATION = 10 * 3600.0  # seconds: load_audio's default bound (10 h of 16 kHz int16 is 1.15 GB)
STDIN = "-"  # the path that means standard input, as for the ffmpeg CLI
MAX_CHANNELS = 64  # libswresample's channel limit; a 2-D array axis longer than this cannot be channels
_FLOAT_SAMPLE_FORMATS = {"flt", "fltp", "dbl", "dblp"}  # decoded sample formats that can carry NaN / Inf

# Anything load_audio accepts: a path, encoded bytes, a binary file object, or already-decoded samples.
AudioSource: TypeAlias = (
    str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO | np.ndarray | torch.Tensor
)


class AudioError(ValueError):
    """Audio could not be loaded. ``source`` names what was being loaded, ``cause`` says what went wrong."""

    def __init__(self, source: str, cause: str) -> None:
        super().__init__(source, cause)
        self.source = source
        self.cause = cause

    def __str__(self) -> str:
        return f"cannot load audio from {self.source}: {self.cause}"


def load_audio(
    file: AudioSource, sr: int = SAMPLE_RATE, *, max_duration: float | None = MAX_DURATION
) -> np.ndarray:
    """Decode ``file`` to a mono float32 waveform at ``sr`` Hz, shape (n_samples,), values in [-1, 1).

    ``file`` (openai-whisper's name for the source) may be:
      - a path (``str`` or ``os.PathLike``) to any audio or video file FFmpeg can read (wav, flac, mp3,
        ogg/vorbis, opus, m4a/aac, mp4, webm, mkv, ...): decoded, downmixed to mono and resampled to ``sr``
        by libswresample, exactly like the reference's ffmpeg command line;
      - ``bytes`` (or ``bytearray`` / ``memoryview``) holding such a file, or a binary file object opened
        on one;
      - a numpy array or torch tensor of already-decoded samples, assumed to be at ``sr`` already (no
        resampling): shape (n,), (channels, n) or (n, channels) (the shorter axis is taken as channels,
        ties mean channels-first), downmixed by averaging the channels. Float arrays are used as they
        are; int16 / int32 arrays are treated as PCM and scaled to [-1, 1). May share memory with a
        1-D float32 numpy input.

    The path ``"-"`` reads standard input (like ``ffmpeg -i -``); FIFOs, ``/dev/stdin`` and other files
    that are not regular files are read as streams. Encoded sources longer than ``max_duration`` seconds
    (default 10 hours; None: no bound) raise AudioError once that much has decoded, so an endless stream
    stops with bounded memory (2 bytes a sample are kept while decoding).

    Damaged audio is decoded like the ffmpeg CLI decodes it: packets the decoder rejects are skipped, and
    data that ends early (a cut file) keeps what decoded; either emits an :class:`AudioDamageWarning` that
    says from where and how much was skipped. Only when nothing decodes is it an error.

    A valid file with no samples (a WAV with an empty data chunk, an empty array) gives an empty array.
    Anything else that cannot be turned into finite samples raises :class:`AudioError`, whose message names
    the file and the cause: a missing or empty file, data FFmpeg does not recognise, a container with
    no audio track, a stream whose packets hold data but decode to nothing, audio longer than
    ``max_duration``, NaN or Inf samples, or an unsupported file type.
    """
    if isinstance(sr, bool) or not isinstance(sr, int) or sr <= 0:
        raise ValueError(f"sr must be a positive integer sample rate, got {sr!r}")
    if isinstance(file, np.ndarray | torch.Tensor):
        return _from_array(file)
    if max_duration is not None and not max_duration > 0:
        raise ValueError(f"max_duration must be a positive number of seconds or None, got {max_duration!r}")
    if isinstance(file, str | os.PathLike):
        if os.fspath(file) == STDIN:
            return _decode(_CountingReader(_stdin(), owned=False), "<stdin>", sr, max_duration)
        target = _open_path(file)
        if isinstance(target, str):
            return _decode(target, str(os.fspath(file)), sr, max_duration)
        with target:  # a FIFO or device, read as a stream
            return _decode(target, str(os.fspath(file)), sr, max_duration)
    if isinstance(file, bytes | bytearray | memoryview):
        name = f"<{len(file)} bytes>" if not isinstance(file, memoryview) else f"<{file.nbytes} bytes>"
        if len(file) == 0:
            raise AudioError(name, "no data (0 bytes)")
        return _decode(io.BytesIO(file), name, sr, max_duration)
    if callable(getattr(file, "read", None)):
        name = _file_object_name(file)
        _reject_empty_file_object(file, name)
        return _decode(file, name, sr, max_duration)
    raise AudioError(
        f"<{type(file).__name__} object>",
        "unsupported source type (expected a path, bytes, a binary file object, a numpy array or a tensor)",
    )


def duration_hint(file: Any) -> float | None:
    """Roughly how many seconds ``file`` holds, found without decoding it: a waveform's length, or what a
    regular file's headers announce. None where that is unknown or would consume the source (bytes, file
    objects, pipes, standard input) and for files FFmpeg cannot open (their error comes when they are loaded).
    Used to order work (longest first), never for results."""
    if isinstance(file, (np.ndarray, torch.Tensor)):
        return max(file.shape, default=0) / SAMPLE_RATE if file.ndim else None
    if not isinstance(file, (str, os.PathLike)) or str(os.fspath(file)) == STDIN:
        return None
    name = str(os.fspath(file))
    try:
        if not stat.S_ISREG(os.stat(name).st_mode):
            return None
        with av.open(os.path.abspath(name), metadata_errors="ignore") as container:
            seconds = _claimed_seconds(container, container.streams.best("audio"))
    except (OSError, av.FFmpegError, AttributeError, TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


# --------------------------------------------------------------------------------------------------------
# encoded sources


def _open_path(path: str | os.PathLike[str]) -> str | _CountingReader:
    """The absolute path of a non-empty regular file for ``av.open``, or a FIFO / device opened as a stream."""
    name = str(os.fspath(path))
    try:
        mode = os.stat(name).st_mode
    except FileNotFoundError:
        raise AudioError(name, "file not found") from None
    except OSError as e:
        raise AudioError(name, f"cannot open ({e.strerror or e})") from e
    if stat.S_ISDIR(mode):
        raise AudioError(name, "is a directory, not a file")
    if not stat.S_ISREG(mode):
        try:
            return _CountingReader(open(name, "rb", buffering=0))  # noqa: SIM115 (closed by load_audio)
        except OSError as e:
            raise AudioError(name, f"cannot open ({e.strerror or e})") from e
    if os.path.getsize(name) == 0:
        raise AudioError(name, "empty file (0 bytes)")
    return os.path.abspath(name)  # so FFmpeg never reads "a:b.wav" as protocol "a"


class _CountingReader(io.RawIOBase):
    """A stream (pipe, FIFO, stdin) that counts the bytes read from it, to tell "empty" from "not audio"."""

    def __init__(self, raw: Any, owned: bool = True) -> None:
        super().__init__()
        self.raw, self.owned, self.count = raw, owned, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self.raw.readinto(b) or 0
        self.count += n
        return n

    def close(self) -> None:
        if self.owned and not self.closed:
            self.raw.close()
        super().close()


def _stdin() -> BinaryIO:
    """Standard input as a binary stream (``sys.stdin.buffer``, else file descriptor 0)."""
    stdin = getattr(sys.stdin, "buffer", None)
    return stdin if stdin is not None else open(0, "rb", closefd=False)  # noqa: SIM115


def _file_object_name(f: Any) -> str:
    name = getattr(f, "name", None)
    return str(name) if isinstance(name, str | bytes | os.PathLike) else f"<{type(f).__name__} object>"


def _reject_empty_file_object(f: Any, name: str) -> None:
    """Raise for a seekable file object with nothing left to read (non-seekable ones are left to FFmpeg)."""
    try:
        seekable = f.seekable()
    except (AttributeError, OSError, ValueError):
        return
    if seekable:
        pos = f.tell()
        first = f.read(1)
        f.seek(pos)
        if not first:
            raise AudioError(name, "no data (empty file object)")


def _ffmpeg_cause(e: Exception) -> str:
    """The readable part of a PyAV/FFmpeg error (``strerror`` without the errno and file name)."""
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _decode(target: str | BinaryIO, name: str, sr: int, max_duration: float | None) -> np.ndarray:
    """Decode the best audio stream of ``target`` to mono int16 at ``sr`` and scale it to float32.

    Damage is skipped the way the ffmpeg CLI skips it: a packet the decoder rejects is dropped and decoding
    goes on; a demuxer error ends the input, keeping what decoded. Either gives an AudioDamageWarning.
    """
    try:
        container = av.open(target, mode="r", metadata_errors="ignore")
    except av.FFmpegError as e:
        if isinstance(target, _CountingReader) and target.count == 0:
            raise AudioError(name, "no data (the stream ended before any byte)") from e
        raise AudioError(name, f"unrecognised or truncated audio/video data ({_ffmpeg_cause(e)})") from e
    except OSError as e:
        raise AudioError(name, f"cannot open ({e})") from e
    with container:
        stream = _audio_stream(container, name)
        converter = _MonoS16Converter(sr, max_duration)
        damage = Damage(name, sr)
        _decode_packets(container, stream, name, converter, damage)
        claimed = _claimed_seconds(container, stream)
        if converter.n_samples == 0 and (damage.packet_bytes > 0 or damage.errors):
            raise AudioError(
                name,
                f"corrupt or truncated: {damage.packet_bytes} bytes of audio decoded to nothing"
                + (f" ({damage.first_cause})" if damage.first_cause else ""),
            )
        if converter.n_samples == 0 and claimed > 0:
            raise AudioError(name, f"corrupt or truncated: header says {claimed:.2f} s, nothing decodable")
        damage.warn(converter.n_samples / sr, claimed)
        return converter.finish()


def _decode_packets(
    container: Any, stream: Any, name: str, converter: _MonoS16Converter, damage: Damage
) -> None:
    """Demux and decode every packet of ``stream`` into ``converter``, skipping damage (noted in ``damage``)."""
    trim = _EndTrim(container, stream)
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.FFmpegError as e:  # the demuxer gave up (cut file, garbage): keep what decoded
            damage.ended(_ffmpeg_cause(e), converter.n_samples)
            frames = _flush(stream, damage, converter.n_samples)
        else:
            damage.packet_bytes += packet.size
            trim.observe(packet)
            try:
                frames = packet.decode()  # the final, empty packet flushes the decoder
            except av.FFmpegError as e:
                damage.skipped(packet, _ffmpeg_cause(e), converter.n_samples)
                continue
        for frame in frames:
            _check_finite_frame(frame, name)
            converter.push_all(trim.push(frame))
        converter.check_limit(name)
        if damage.end_cause is not None:
            break
    converter.push_all(trim.finish())


def _flush(stream: Any, damage: Damage, at_sample: int) -> list[av.AudioFrame]:
    """What the decoder still holds after the demuxer stopped early."""
    try:
        return stream.codec_context.decode(None)
    except av.FFmpegError as e:
        damage.skipped(None, _ffmpeg_cause(e), at_sample)
        return []


def _audio_stream(container: Any, name: str) -> Any:
    """The audio stream FFmpeg would pick (``av_find_best_stream``), or AudioError if there is none."""
    try:
        stream = container.streams.best("audio")
    except av.FFmpegError:
        stream = None
    if stream is None:
        kinds = ", ".join(s.type for s in container.streams) or "none"
        raise AudioError(name, f"no audio track in the file (streams: {kinds})")
    return stream


_ISO_BMFF = {"mov", "mp4", "m4a"}  # demuxer names of the QuickTime / MP4 family (edit lists, stts)


class _EndTrim:
    """Edit-listed MP4 audio: drop the encoder padding past the edit list's end from the last frame.

    AAC (1024-sample frames) and MP3 in MP4 pad their last frame; the track's edit list says where the
    audio really ends. Newer FFmpeg (the ffmpeg 9 CLI the tests compare against) discards the padding,
    the FFmpeg 8 libraries bundled with PyAV keep it, so we cut it here, from the last frame only. As
    measured against ffmpeg 9: only when FFmpeg also applied the edit list's start, which shows as a
    first packet before time 0 (encoder priming skipped), so not in fragmented MP4; and not for Opus,
    whose padding ffmpeg 9 keeps. Other containers carry their padding in-band (LAME/Xing headers, Ogg
    granule positions, Matroska DiscardPadding) and the libraries already trim it. Frames pass one late.
    """

    def __init__(self, container: Any, stream: Any) -> None:
        self.enabled = (
            bool(_ISO_BMFF & set(container.format.name.split(",")))
            and stream.codec_context.name != "opus"
            and bool(stream.duration and stream.time_base is not None and stream.sample_rate)
        )
        self.end = round(stream.duration * stream.time_base * stream.sample_rate) if self.enabled else 0
        self.first_packet = True
        self.seen = 0  # decoded samples so far (priming already skipped by the decoder)
        self.last: av.AudioFrame | None = None

    def observe(self, packet: av.Packet) -> None:
        """Called with every demuxed packet: the first one with data shows whether the edit list applies."""
        if self.first_packet and packet.size:
            self.first_packet = False
            self.enabled = self.enabled and packet.pts is not None and packet.pts < 0

    def push(self, frame: av.AudioFrame) -> list[av.AudioFrame]:
        """Frames that are now safe to pass on."""
        if not self.enabled:
            return [frame]
        self.seen += frame.samples
        ready = [self.last] if self.last is not None else []
        self.last = frame
        return ready

    def finish(self) -> list[av.AudioFrame]:
        """The held last frame, cut at the edit list's end when it runs past it."""
        frame, self.last = self.last, None
        if frame is None:
            return []
        excess = self.seen - self.end
        if self.enabled and 0 < excess < frame.samples:
            return [_head(frame, frame.samples - excess)]
        return [frame]


def _head(frame: av.AudioFrame, n: int) -> av.AudioFrame:
    """A copy of the first ``n`` samples of ``frame``, same format, layout, rate and pts."""
    samples = frame.to_ndarray()  # planar: (channels, samples); packed: (1, samples * channels)
    width = n if frame.format.is_planar else n * len(frame.layout.channels)
    head = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(samples[:, :width]), format=frame.format.name, layout=frame.layout.name
    )
    head.sample_rate, head.pts, head.time_base = frame.sample_rate, frame.pts, frame.time_base
    return head


def _claimed_seconds(container: Any, stream: Any) -> float:
    """The duration the headers announce for ``stream`` (0.0 when they announce none)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / 1e6 if container.duration is not None else 0.0


def _check_finite_frame(frame: Any, name: str) -> None:
    """Float-format decoded frames (float PCM, most lossy codecs) must not carry NaN or Inf."""
    if frame.format.name in _FLOAT_SAMPLE_FORMATS and not np.isfinite(frame.to_ndarray()).all():
        at = float(frame.time) if frame.time is not None else 0.0
        raise AudioError(name, f"decoded samples contain NaN or Inf (frame at {at:.3f} s)")


class _MonoS16Converter:
    """Downmix, resample and quantize decoded frames to mono int16 at ``sr`` as they arrive.

    One ``av.AudioResampler`` (libswresample) per run of frames with the same format, layout and rate,
    flushed when the run ends, like the ffmpeg CLI reconfiguring its filter graph on a mid-stream change.
    Samples are kept as int16 in chunks of about a million, so memory follows the audio kept (2 bytes a
    sample), and ``check_limit`` stops a source longer than ``max_duration`` seconds.
    """

    CHUNK = 1 << 20  # samples per consolidated chunk

    def __init__(self, sr: int, max_duration: float | None = None) -> None:
        self.sr = sr
        self.limit = None if max_duration is None else int(max_duration * sr)
        self.max_duration = max_duration
        self.chunks: list[np.ndarray] = []  # consolidated int16 chunks
        self.pending: list[np.ndarray] = []  # per-frame arrays not consolidated yet
        self.n_pending = 0
        self.n_samples = 0  # converted so far
        self.resampler: av.AudioResampler | None = None
        self.signature: tuple[str, str, int] | None = None

    def push(self, frame: av.AudioFrame) -> None:
        signature = (frame.format.name, frame.layout.name, frame.sample_rate)
        if signature != self.signature:
            self._flush()
            self.resampler = av.AudioResampler(format="s16", layout="mono", rate=self.sr)
            self.signature = signature
        self._collect(self.resampler.resample(frame))

    def push_all(self, frames: list[av.AudioFrame]) -> None:
        for frame in frames:
            self.push(frame)

    def check_limit(self, name: str) -> None:
        """AudioError once more than ``max_duration`` seconds were decoded (an endless stream, say)."""
        if self.limit is not None and self.n_samples > self.limit:
            raise AudioError(
                name,
                f"longer than max_duration={self.max_duration:g} s of audio: stopped reading there "
                "(pass a larger max_duration, or None, to load longer audio)",
            )

    def finish(self) -> np.ndarray:
        """All converted samples as float32 in [-1, 1), shape (n_samples,) (each int16 chunk freed once copied)."""
        self._flush()
        self._consolidate()
        out = np.empty(self.n_samples, dtype=np.float32)
        pos = 0
        while self.chunks:
            chunk = self.chunks.pop(0)
            np.divide(chunk, np.float32(INT16_SCALE), out=out[pos : pos + chunk.size], dtype=np.float32)
            pos += chunk.size
        return out

    def _flush(self) -> None:
        if self.resampler is not None:
            self._collect(self.resampler.resample(None))
            self.resampler = None

    def _collect(self, frames: list[av.AudioFrame]) -> None:
        for frame in frames:
            samples = frame.to_ndarray().reshape(-1)
            self.pending.append(samples)
            self.n_pending += samples.size
            self.n_samples += samples.size
        if self.n_pending >= self.CHUNK:
            self._consolidate()

    def _consolidate(self) -> None:
        if self.pending:
            self.chunks.append(np.concatenate(self.pending))
            self.pending, self.n_pending = [], 0


# --------------------------------------------------------------------------------------------------------
# already-decoded samples

_PCM_INT_SCALES = {np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31}  # integer PCM full scale


def _from_array(samples: np.ndarray | torch.Tensor) -> np.ndarray:
    """Validate decoded samples and return them as mono float32, shape (n_samples,)."""
    kind = "tensor" if isinstance(samples, torch.Tensor) else "array"
    name = f"<{kind} of shape {tuple(samples.shape)}, dtype {samples.dtype}>"
    if isinstance(samples, torch.Tensor):
        t = samples.detach().cpu()
        samples = (t.float() if t.is_floating_point() and t.dtype != torch.float64 else t).numpy()
    a = _as_float(samples, name)
    if a.ndim == 2:
        a = _downmix(a, name)
    elif a.ndim != 1:
        raise AudioError(name, "expected shape (n,), (channels, n) or (n, channels)")
    if not np.isfinite(a).all():
        first = int(np.flatnonzero(~np.isfinite(a))[0])
        raise AudioError(name, f"samples contain NaN or Inf (first at index {first})")
    return np.ascontiguousarray(a, dtype=np.float32)


def _as_float(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype in _PCM_INT_SCALES:
        return a.astype(np.float32) / np.float32(_PCM_INT_SCALES[a.dtype])
    if a.dtype.kind != "f":
        raise AudioError(name, f"unsupported sample dtype {a.dtype} (use float, int16 or int32)")
    return a


def _downmix(a: np.ndarray, name: str) -> np.ndarray:
    """Average the channel axis of a 2-D array: the shorter axis, axis 0 on a tie. Shape (n_samples,)."""
    if a.size == 0:
        return np.zeros(0, dtype=np.float32)
    channel_axis = 0 if a.shape[0] <= a.shape[1] else 1
    if a.shape[channel_axis] > MAX_CHANNELS:
        raise AudioError(name, f"neither axis looks like channels (more than {MAX_CHANNELS} on both)")
    if a.shape[channel_axis] == 1:
        return a.reshape(-1)
    return a.mean(axis=channel_axis, dtype=np.float64).astype(np.float32)
