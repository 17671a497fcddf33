"""kvwhisper: Whisper speech recognition with an explicit, inspectable KV-cached decoder.

audio -> tokenizer -> engine. The public names mirror openai-whisper's, so `import kvwhisper as whisper` works.
"""

from .audio import AudioError, load_audio, log_mel_spectrogram, pad_or_trim
from .engine import (
    DecodingOptions,
    DecodingResult,
    KVCache,
    ModelDims,
    ModelLoadError,
    Whisper,
    available_models,
    decode,
    detect_language,
    load_model,
    transcribe,
)

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "DecodingOptions",
    "DecodingResult",
    "KVCache",
    "ModelDims",
    "ModelLoadError",
    "Whisper",
    "available_models",
    "decode",
    "detect_language",
    "load_audio",
    "load_model",
    "log_mel_spectrogram",
    "pad_or_trim",
    "transcribe",
]
