"""Long-form transcription: the seek loop over 30-second windows, segments, hallucination guards, writers.

`transcribe(model, audio, **options)` has openai-whisper's semantics and defaults (seek.py); a list of
recordings, or `batch_size`, runs windows of several seek loops through the decoder together (batched.py).
"""

from .batched import BatchTranscriptionError, transcribe, transcribe_iter
from .segments import Segment, TranscriptionResult

__all__ = ["BatchTranscriptionError", "Segment", "TranscriptionResult", "transcribe", "transcribe_iter"]
