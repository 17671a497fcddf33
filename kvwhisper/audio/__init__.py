"""Audio frontend: decoding to 16 kHz mono, Whisper's log-Mel features, and 30-second encoder windows.

Names and behaviour follow openai-whisper's ``whisper.audio`` (``load_audio``, ``log_mel_spectrogram``,
``pad_or_trim``, ``mel_filters``, ``exact_div`` and the constants), decoding with PyAV instead of the ffmpeg CLI.
"""

from .damage import AudioDamageWarning
from .features import (
    CHUNK_LENGTH,
    FRAMES_PER_SECOND,
    HOP_LENGTH,
    N_FFT,
    N_FRAMES,
    N_SAMPLES,
    N_SAMPLES_PER_TOKEN,
    SUPPORTED_N_MELS,
    TOKENS_PER_SECOND,
    MelWindows,
    exact_div,
    log_mel_spectrogram,
    mel_filters,
    pad_or_trim,
    whole_file_mel,
)
from .files import MAX_DURATION, SAMPLE_RATE, AudioError, AudioSource, load_audio

__all__ = [
    "CHUNK_LENGTH",
    "FRAMES_PER_SECOND",
    "HOP_LENGTH",
    "N_FFT",
    "N_FRAMES",
    "N_SAMPLES",
    "N_SAMPLES_PER_TOKEN",
    "SAMPLE_RATE",
    "SUPPORTED_N_MELS",
    "TOKENS_PER_SECOND",
    "AudioDamageWarning",
    "AudioError",
    "MAX_DURATION",
    "AudioSource",
    "MelWindows",
    "whole_file_mel",
    "exact_div",
    "load_audio",
    "log_mel_spectrogram",
    "mel_filters",
    "pad_or_trim",
]
