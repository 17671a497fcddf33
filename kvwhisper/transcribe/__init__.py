"""Long-form transcription: the seek loop over 30-second windows, segments, hallucination guards, writers.

`transcribe(model, audio, **options)` has openai-whisper's semantics and defaults (seek.py).
"""

from .seek import transcribe
from .segments import Segment, TranscriptionResult

__all__ = ["Segment", "TranscriptionResult", "transcribe"]
