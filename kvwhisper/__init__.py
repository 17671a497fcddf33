"""kvwhisper: Whisper speech recognition with an explicit, inspectable KV-cached decoder.

audio -> tokenizer -> model -> decoding -> timing -> transcribe (and, beside them, inspection, cpu, cli).
The public names mirror openai-whisper's, so `import kvwhisper as whisper` works.
"""

# submodules loaded with the package, as in openai-whisper (`import whisper; whisper.utils.get_writer(...)`)
from . import timing, tokenizer, utils
from .audio import AudioDamageWarning, AudioError, load_audio, log_mel_spectrogram, pad_or_trim
from .audio.vad import VadOptions, VadUnavailableError, speech_regions
from .decoding import DecodingOptions, DecodingResult, decode, detect_language
from .inspection import decode_session
from .model import KVCache, ModelDims, ModelLoadError, Whisper, available_models, load_model
from .transcribe import BatchTranscriptionError, transcribe, transcribe_iter

# openai-whisper's model has these as methods (`model.transcribe(...)`); they are bound here, above every layer
# they use, so that the network imports nothing of decoding, transcription or inspection.
Whisper.decode = decode
Whisper.detect_language = detect_language
Whisper.decode_session = decode_session
Whisper.transcribe = transcribe

__version__ = "0.1.0"

__all__ = [
    "AudioDamageWarning",
    "AudioError",
    "BatchTranscriptionError",
    "DecodingOptions",
    "DecodingResult",
    "KVCache",
    "ModelDims",
    "ModelLoadError",
    "VadOptions",
    "VadUnavailableError",
    "Whisper",
    "available_models",
    "decode",
    "decode_session",
    "detect_language",
    "load_audio",
    "load_model",
    "log_mel_spectrogram",
    "pad_or_trim",
    "speech_regions",
    "timing",
    "tokenizer",
    "transcribe",
    "transcribe_iter",
    "utils",
]
