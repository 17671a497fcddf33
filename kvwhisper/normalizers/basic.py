"""Language-independent text normalization for word-error-rate scoring.

Mirrors `whisper.normalizers.basic`: symbols and punctuation become spaces, bracketed and parenthesised
spans are dropped, and the text is lower-cased with runs of whitespace collapsed to one space.
"""

from __future__ import annotations

import re
import unicodedata

import regex

# Letters that Unicode decomposition (NFKD) leaves whole but that are read as plain Latin letters once
# diacritics are dropped. ("Þ" maps to lower-case "th", as in the reference table.)
ADDITIONAL_DIACRITICS = {
    "œ": "oe",
    "Œ": "OE",
    "ø": "o",
    "Ø": "O",
    "æ": "ae",
    "Æ": "AE",
    "ß": "ss",
    "ẞ": "SS",
    "đ": "d",
    "Đ": "D",
    "ð": "d",
    "Ð": "D",
    "þ": "th",
    "Þ": "th",
    "ł": "l",
    "Ł": "L",
}

# Unicode general categories (first letter) replaced by a space: marks, symbols and punctuation.
_SPACED_CATEGORIES = frozenset("MSP")

BRACKETED = re.compile(r"[<\[][^>\]]*[>\]]")  # "<noise>", "[laughs]" (either closer ends the span)
PARENTHESISED = re.compile(r"\(([^)]+?)\)")  # "(inaudible)"; an empty "()" stays
WHITESPACE_RUN = re.compile(r"\s+")


def _strip_char(c: str, keep: str) -> str:
    """One character of NFKD text with its diacritic dropped and any other mark, symbol or punctuation spaced."""
    if c in keep:
        return c
    if c in ADDITIONAL_DIACRITICS:
        return ADDITIONAL_DIACRITICS[c]
    category = unicodedata.category(c)
    if category == "Mn":  # combining accent split off by NFKD
        return ""
    return " " if category[0] in _SPACED_CATEGORIES else c


def remove_symbols_and_diacritics(s: str, keep: str = "") -> str:
    """Decompose `s` (NFKD), drop diacritics and replace other marks, symbols and punctuation with spaces.

    Characters in `keep` are left as they are. A few letters without a decomposition ("ß", "ø", "æ", ...)
    are spelled with plain letters (`ADDITIONAL_DIACRITICS`).
    """
    return "".join(_strip_char(c, keep) for c in unicodedata.normalize("NFKD", s))


def remove_symbols(s: str) -> str:
    """Compose `s` (NFKC) and replace marks, symbols and punctuation with spaces; accented letters stay."""
    return "".join(
        " " if unicodedata.category(c)[0] in _SPACED_CATEGORIES else c
        for c in unicodedata.normalize("NFKC", s)
    )


def drop_bracketed(s: str) -> str:
    """Remove `<...>` / `[...]` spans, then non-empty `(...)` spans."""
    return PARENTHESISED.sub("", BRACKETED.sub("", s))


class BasicTextNormalizer:
    """Normalizer for any language: lower-case, no bracketed spans, no symbols, single spaces.

    `remove_diacritics=True` also strips accents (NFKD); otherwise the text is composed (NFKC) and accented
    letters are kept. `split_letters=True` puts a space between every grapheme cluster, for scripts that are
    written without spaces between words. Leading and trailing spaces are not stripped.
    """

    def __init__(self, remove_diacritics: bool = False, split_letters: bool = False):
        self.clean = remove_symbols_and_diacritics if remove_diacritics else remove_symbols
        self.split_letters = split_letters

    def __call__(self, s: str) -> str:
        s = drop_bracketed(s.lower())
        s = self.clean(s).lower()
        if self.split_letters:
            s = " ".join(regex.findall(r"\X", s, regex.U))
        return WHITESPACE_RUN.sub(" ", s)
