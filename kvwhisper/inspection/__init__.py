"""Step-through decoding: a decode you can step, rewind, force and look inside (what the cache holds, what
each logits processor did, activations and attention), through the model's own forward."""

from .batch_session import BatchDecodeSession, BatchRow, BatchStepTrace
from .records import Candidate, Hypothesis, StepTrace
from .session import DecodeSession, decode_session

__all__ = [
    "BatchDecodeSession",
    "BatchRow",
    "BatchStepTrace",
    "Candidate",
    "DecodeSession",
    "Hypothesis",
    "StepTrace",
    "decode_session",
]
