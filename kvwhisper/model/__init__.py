"""The network and its weights: dimensions, encoder and decoder, the KV cache, checkpoint formats, loading."""

from .checkpoints import ModelLoadError
from .dims import ModelDims
from .kv_cache import CACHE_MODES, KVCache
from .network import Whisper
from .registry import available_models, load_model

__all__ = [
    "CACHE_MODES",
    "KVCache",
    "ModelDims",
    "ModelLoadError",
    "Whisper",
    "available_models",
    "load_model",
]
