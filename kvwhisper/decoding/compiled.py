"""The optional compiled decode step: ``DecodingOptions(compile=True)`` (CLI ``--compile``).

The eager step is the reference; the compiled one is the same code, ``TextDecoder.decode_at`` (the decoder on
the cache's tensors and an int position), handed to ``torch.compile`` with ``dynamic=True``: one graph for every
position and batch size. Only the one-token steps of the full cache are compiled (see
``DecoderRunner.forward``): the first call of a window (the prompt and start tokens), ``want_qk`` (word
timestamps, inspection) and the ``self_only``/``none`` cache modes stay eager.

Compiling costs tens of seconds on the first use in a process (Inductor writes C++ on CPU); the compiled
function is kept for the life of the process. Logits agree with the eager step's to fp32 rounding (see
tests/test_decoding.py), not bit for bit. On CPU it is no faster than eager: Inductor traces ``F.linear``
instead of the packed weights of ``kvwhisper.cpu`` (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_compiled: dict[Callable, Callable] = {}


def compiled(fn: Callable) -> Callable:
    """``torch.compile(fn, dynamic=True, fullgraph=True)``, made once per function."""
    if fn not in _compiled:
        _compiled[fn] = torch.compile(fn, dynamic=True, fullgraph=True)
    return _compiled[fn]
