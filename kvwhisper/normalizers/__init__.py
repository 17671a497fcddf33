"""Text normalizers for word-error-rate scoring, with the API of `whisper.normalizers`.

`EnglishTextNormalizer` for English, `BasicTextNormalizer` for any other language.
"""

from .basic import BasicTextNormalizer, remove_symbols, remove_symbols_and_diacritics
from .english import EnglishNumberNormalizer, EnglishSpellingNormalizer, EnglishTextNormalizer

__all__ = [
    "BasicTextNormalizer",
    "EnglishNumberNormalizer",
    "EnglishSpellingNormalizer",
    "EnglishTextNormalizer",
    "remove_symbols",
    "remove_symbols_and_diacritics",
]
