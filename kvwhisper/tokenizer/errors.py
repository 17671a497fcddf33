"""The one exception type the tokenizer package raises for bad input or bad files."""

from __future__ import annotations


class TokenizerError(ValueError):
    """A tokenizer file, vocabulary layout, language or task that cannot be used.

    It subclasses `ValueError` so that callers written against the reference implementation (which raises
    `ValueError` for an unsupported language) keep working.
    """
