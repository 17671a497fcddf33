"""English text normalization for word-error-rate scoring (same output as `whisper.normalizers.english`).

`EnglishTextNormalizer` lower-cases, drops bracketed spans and hesitations, expands contractions and
abbreviated titles, writes numbers as digits (`EnglishNumberNormalizer`), spells British words the American
way (`EnglishSpellingNormalizer`) and removes the remaining symbols and punctuation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .basic import WHITESPACE_RUN, drop_bracketed, remove_symbols_and_diacritics
from .numbers import EnglishNumberNormalizer

__all__ = ["EnglishNumberNormalizer", "EnglishSpellingNormalizer", "EnglishTextNormalizer"]

SPELLING_TABLE = Path(__file__).with_name("english.json")

# Hesitations removed as whole words.
FILLERS = r"\b(hmm|mm|mhm|mmm|uh|um)\b"

# Whole-word contractions and colloquial forms, rewritten first.
_CONTRACTIONS = {
    "won't": "will not",
    "can't": "can not",
    "let's": "let us",
    "ain't": "aint",
    "y'all": "you all",
    "wanna": "want to",
    "gotta": "got to",
    "gonna": "going to",
    "i'ma": "i am going to",
    "imma": "i am going to",
    "woulda": "would have",
    "coulda": "could have",
    "shoulda": "should have",
    "ma'am": "madam",
}

# Abbreviated titles (their period is already separate or gone by the time numbers are read).
_TITLES = {
    "mr": "mister",
    "mrs": "missus",
    "st": "saint",
    "dr": "doctor",
    "prof": "professor",
    "capt": "captain",
    "gov": "governor",
    "ald": "alderman",
    "gen": "general",
    "sen": "senator",
    "rep": "representative",
    "pres": "president",
    "rev": "reverend",
    "hon": "honorable",
    "asst": "assistant",
    "assoc": "associate",
    "lt": "lieutenant",
    "col": "colonel",
    "jr": "junior",
    "sr": "senior",
    "esq": "esquire",
}

# Perfect tenses, where "'s" / "'d" mean "has" / "had" ("'s done" is left alone: it is ambiguous).
_PERFECT_TENSES = {
    "'d been": " had been",
    "'s been": " has been",
    "'d gone": " had gone",
    "'s gone": " has gone",
    "'d done": " had done",
    "'s got": " has got",
}

# Any remaining clitic.
_CLITICS = {
    "n't": " not",
    "'re": " are",
    "'s": " is",
    "'d": " would",
    "'ll": " will",
    "'t": " not",
    "'ve": " have",
    "'m": " am",
}


def _replacement_table() -> dict[str, str]:
    """Regular expression -> replacement, applied in this order."""
    table = {rf"\b{word}\b": expansion for word, expansion in _CONTRACTIONS.items()}
    table.update({rf"\b{abbr}\b": title + " " for abbr, title in _TITLES.items()})
    table.update({rf"{ending}\b": expansion for ending, expansion in _PERFECT_TENSES.items()})
    table.update({rf"{ending}\b": expansion for ending, expansion in _CLITICS.items()})
    return table


class EnglishSpellingNormalizer:
    """Rewrite British spellings as American ones, word by word (`english.json`, from the UK/US list at
    https://www.tysto.com/uk-us-spelling-list.html); also folds "mm"-like hesitations to "hmm"."""

    def __init__(self):
        self.mapping: dict[str, str] = json.loads(SPELLING_TABLE.read_text(encoding="utf-8"))

    def __call__(self, s: str) -> str:
        return " ".join(self.mapping.get(word, word) for word in s.split())


class EnglishTextNormalizer:
    """The normalizer Whisper's English word error rates are computed with.

    Output words are separated by single spaces; a leading or trailing space may remain.
    """

    def __init__(self):
        self.ignore_patterns = FILLERS
        self.replacers = _replacement_table()
        self.standardize_numbers = EnglishNumberNormalizer()
        self.standardize_spellings = EnglishSpellingNormalizer()

    def __call__(self, s: str) -> str:
        s = drop_bracketed(s.lower())
        s = re.sub(self.ignore_patterns, "", s)
        s = re.sub(r"\s+'", "'", s)  # "it 's" -> "it's"
        for pattern, replacement in self.replacers.items():
            s = re.sub(pattern, replacement, s)

        s = re.sub(r"(\d),(\d)", r"\1\2", s)  # "1,000" -> "1000"
        s = re.sub(r"\.([^0-9]|$)", r" \1", s)  # a period not before a digit is not a decimal point
        s = remove_symbols_and_diacritics(s, keep=".%$¢€£")  # the symbols numbers use stay for now

        s = self.standardize_numbers(s)
        s = self.standardize_spellings(s)

        # symbols that ended up without a number next to them go
        s = re.sub(r"[.$¢€£]([^0-9])", r" \1", s)
        s = re.sub(r"([^0-9])%", r"\1 ", s)
        return WHITESPACE_RUN.sub(" ", s)
