"""The engine: model, weights, KV cache, decoding (and, built on them, long-form transcription)."""

from .checkpoints import ModelLoadError
from .decoding import DecodingOptions, DecodingResult, DecodingTask, decode, detect_language
from .kv_cache import CACHE_MODES, KVCache
from .load import available_models, load_model
from .model import ModelDims, Whisper
from .session import DecodeSession, StepTrace, decode_session
from .transcribe import Segment, TranscriptionResult, Word, transcribe

__all__ = [
    "CACHE_MODES",
    "DecodingOptions",
    "DecodingResult",
    "DecodeSession",
    "DecodingTask",
    "KVCache",
    "ModelDims",
    "ModelLoadError",
    "Segment",
    "StepTrace",
    "TranscriptionResult",
    "Whisper",
    "available_models",
    "decode",
    "decode_session",
    "detect_language",
    "load_model",
    "transcribe",
    "Word",
]
