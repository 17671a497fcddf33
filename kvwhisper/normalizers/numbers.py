"""Spelled-out English numbers to digits, for `EnglishTextNormalizer` (same output as the reference's).

"twenty one" -> "21", "one hundred and five" -> "105", "nineteen ninety nine" -> "1999", "oh two" -> "02",
"double seven" -> "77", "one point five" -> "1.5", "five dollars" -> "$5", "ten per cent" -> "10%",
"twenty first" -> "21st". Commas between digits are expected to be gone already.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from fractions import Fraction

ValueT = int | str | None  # the number being built: an int while it is arithmetic, a digit string otherwise

_ONES_NAMES = (
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
_TENS_NAMES = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_MULTIPLIER_NAMES = (
    "hundred thousand million billion trillion quadrillion quintillion sextillion septillion octillion "
    "nonillion decillion"
).split()
# ordinals that are not just the cardinal plus "th"
_IRREGULAR_ORDINALS = {
    "zeroth": (0, "th"),
    "first": (1, "st"),
    "second": (2, "nd"),
    "third": (3, "rd"),
    "fifth": (5, "th"),
    "twelfth": (12, "th"),
}

DIGITS = re.compile(r"^\d+(\.\d+)?$")  # "12", "3.5" (an arabic number, without its sign or currency)


def _is_digits(word: str | None) -> bool:
    return word is not None and DIGITS.match(word) is not None


def _fraction(text: str | int) -> Fraction | None:
    try:
        return Fraction(text)
    except ValueError:
        return None


def _scale(value: int | str, multiplier: int) -> int | None:
    """`value` times a multiplier word. An int scales only its last three digits ("two thousand five
    hundred": 2005 -> 2500); a digit string ("1.5", "05") must give a whole number, else None."""
    if isinstance(value, int):
        return value // 1000 * 1000 + value % 1000 * multiplier
    f = _fraction(value)
    product = f * multiplier if f is not None else None
    return product.numerator if product is not None and product.denominator == 1 else None


class _Pending:
    """The number being read (`value`), the sign or currency symbol to put before it, and whether the
    next word was already used (`skip_next`)."""

    __slots__ = ("value", "prefix", "skip_next")

    def __init__(self) -> None:
        self.value: ValueT = None
        self.prefix: str | None = None
        self.skip_next = False

    def emit(self, text: str | int) -> str:
        """`text` with the pending prefix; clears the pending value and prefix."""
        out = str(text) if self.prefix is None else self.prefix + str(text)
        self.value = None
        self.prefix = None
        return out

    def flush(self) -> Iterator[str]:
        """The pending value as a word, if there is one."""
        if self.value is not None:
            yield self.emit(self.value)


class EnglishNumberNormalizer:
    """Rewrite spelled-out numbers as arabic numerals, word by word.

    - commas are not handled here (remove them between digits first);
    - suffixes are kept on the digits: "1960s", "274th", "32nd";
    - currency words become symbols in front of the number: "twenty dollars" -> "$20";
    - "one" and "ones" on their own are written as words;
    - runs of single digits are read as a digit string: "one oh one" -> "101".
    """

    def __init__(self):
        self.zeros = {"o", "oh", "zero"}
        self.ones = {name: i for i, name in enumerate(_ONES_NAMES, start=1)}
        self.ones_plural = {
            ("sixes" if name == "six" else name + "s"): (value, "s") for name, value in self.ones.items()
        }
        regular = {
            name + ("h" if name.endswith("t") else "th"): (value, "th")
            for name, value in self.ones.items()
            if value > 3 and value not in (5, 12)
        }
        self.ones_ordinal = {**_IRREGULAR_ORDINALS, **regular}
        self.ones_suffixed = {**self.ones_plural, **self.ones_ordinal}

        self.tens = {name: 10 * i for i, name in enumerate(_TENS_NAMES, start=2)}
        self.tens_plural = {name.replace("y", "ies"): (v, "s") for name, v in self.tens.items()}
        self.tens_ordinal = {name.replace("y", "ieth"): (v, "th") for name, v in self.tens.items()}
        self.tens_suffixed = {**self.tens_plural, **self.tens_ordinal}

        self.multipliers = {"hundred": 100, **{n: 1000**i for i, n in enumerate(_MULTIPLIER_NAMES[1:], 1)}}
        self.multipliers_plural = {name + "s": (v, "s") for name, v in self.multipliers.items()}
        self.multipliers_ordinal = {name + "th": (v, "th") for name, v in self.multipliers.items()}
        self.multipliers_suffixed = {**self.multipliers_plural, **self.multipliers_ordinal}
        self.decimals = {*self.ones, *self.tens, *self.zeros}  # words that may follow "point"

        self.preceding_prefixers = {"minus": "-", "negative": "-", "plus": "+", "positive": "+"}
        self.following_prefixers = {
            "pound": "£",
            "pounds": "£",
            "euro": "€",
            "euros": "€",
            "dollar": "$",
            "dollars": "$",
            "cent": "¢",
            "cents": "¢",
        }
        self.prefixes = {*self.preceding_prefixers.values(), *self.following_prefixers.values()}
        self.suffixers = {"per": {"cent": "%"}, "percent": "%"}
        self.specials = {"and", "double", "triple", "point"}
        self.literal_words = {"one", "ones"}
        self._handlers = self._build_handlers()
        self.words = set(self._handlers)

    def _build_handlers(self) -> dict:
        """Number word -> the method that reads it (the word groups do not overlap)."""
        groups = [
            (self.zeros, self._read_zero),
            (self.ones, self._read_ones),
            (self.ones_suffixed, self._read_ones_suffixed),
            (self.tens, self._read_tens),
            (self.tens_suffixed, self._read_tens_suffixed),
            (self.multipliers, self._read_multiplier),
            (self.multipliers_suffixed, self._read_multiplier_suffixed),
            (self.preceding_prefixers, self._read_sign),
            (self.following_prefixers, self._read_currency),
            (self.suffixers, self._read_percent),
            (self.specials, self._read_special),
        ]
        handlers = {}
        for words, handler in groups:
            for word in words:
                handlers.setdefault(word, handler)
        return handlers

    # -- combining a digit word with the value read so far

    def _with_ones(self, value: ValueT, prev: str | None, ones: int) -> int | str:
        """Add "one".."nineteen": to the arithmetic value when its last place is free ("twenty" + "one"
        -> 21, "one hundred" + "twelve" -> 112), else as more digits ("one" + "two" -> "12")."""
        if value is None:
            return ones
        if isinstance(value, str) or prev in self.ones:
            if prev in self.tens and ones < 10:  # "...twenty" then "one": the digit takes the tens' zero
                assert value[-1] == "0"
                return value[:-1] + str(ones)
            return str(value) + str(ones)
        free_place = 10 if ones < 10 else 100
        return value + ones if value % free_place == 0 else str(value) + str(ones)

    @staticmethod
    def _with_tens(value: ValueT, tens: int) -> int | str:
        """Add "twenty".."ninety": arithmetically after hundreds ("one hundred twenty" -> 120), else as
        digits ("nineteen" + "ninety" -> "1990")."""
        if value is None:
            return tens
        if isinstance(value, str) or value % 100 != 0:
            return str(value) + str(tens)
        return value + tens

    # -- one method per kind of word; each yields finished words and updates `state`

    def _read_arabic(self, state: _Pending, word: str, sign: str | None, digits: str) -> Iterator[str]:
        """A number written in digits, possibly after "$", "-", etc."""
        f = _fraction(digits)
        assert f is not None
        if state.value is not None:
            if isinstance(state.value, str) and state.value.endswith("."):  # after "point": decimals
                state.value += word
                return
            yield state.emit(state.value)
        if sign is not None:
            state.prefix = sign
        state.value = f.numerator if f.denominator == 1 else digits

    def _read_zero(self, state: _Pending, prev, word, nxt) -> Iterator[str]:
        state.value = str(state.value or "") + "0"
        yield from ()

    def _read_ones(self, state: _Pending, prev, word, nxt) -> Iterator[str]:
        state.value = self._with_ones(state.value, prev, self.ones[word])
        yield from ()

    def _read_ones_suffixed(self, state: _Pending, prev, word, nxt) -> Iterator[str]:
        ones, suffix = self.ones_suffixed[word]
        yield state.emit(str(self._with_ones(state.value, prev, ones)) + suffix)

    def _read_tens(self, state: _Pending, prev, word, nxt) -> Iterator[str]:
        state.value = self._with_tens(state.value, self.tens[word])
        yield from ()

    def _read_tens_suffixed(self, state: _Pending, prev, word, nxt) -> Iterator[str]:
        tens, suffix = self.tens_suffixed[word]
        yield state.emit(str(self._with_tens(state.value, tens)) + suffix)

    def _read_multiplier(self, state: _Pending, prev, word, nxt) -> Iterator[str]:
        multiplier = self.multipliers[word]
        if state.value is None:
            state.value = multiplier
            return
        scaled = _scale(state.value, multiplier)
        if scaled is None:  # a digit string that does not scale to a whole number: keep both
            yield state.emit(state.value)
            scaled = multiplier
        state.value = scaled

    def _read_multiplier_suffixed(self, state: _Pending, prev, word, nxt) -> Iterator[str]:
        multiplier, suffix = self.multipliers_suffixed[word]
        if state.value is None:
            yield state.emit(str(multiplier) + suffix)
            return
        scaled = _scale(state.value, multiplier)
        if scaled is None:
            yield state.emit(state.value)
            scaled = multiplier
        yield state.emit(str(scaled) + suffix)

    def _read_sign(self, state: _Pending, prev, word, nxt) -> Iterator[str]:
        """A sign word ("minus", "plus", ...): the sign of the number that follows, if one does."""
        yield from state.flush()
        if nxt in self.words or _is_digits(nxt):
            state.prefix = self.preceding_prefixers[word]
        else:
            yield state.emit(word)

    def _read_currency(self, state: _Pending, prev, word, nxt) -> Iterator[str]:
        """A currency word ("dollars", "cents", ...): a symbol before the number just read, if any."""
        if state.value is not None:
            state.prefix = self.following_prefixers[word]
            yield state.emit(state.value)
        else:
            yield state.emit(word)

    def _read_percent(self, state: _Pending, prev, word, nxt) -> Iterator[str]:
        """A percent word ("percent", or "per" followed by "cent") after a number."""
        if state.value is None:
            yield state.emit(word)
            return
        suffix = self.suffixers[word]
        if not isinstance(suffix, dict):
            yield state.emit(str(state.value) + suffix)
        elif nxt in suffix:
            yield state.emit(str(state.value) + suffix[nxt])
            state.skip_next = True
        else:
            yield state.emit(state.value)
            yield state.emit(word)

    def _read_special(self, state: _Pending, prev, word, nxt) -> Iterator[str]:
        """A special word ("and", "double", "triple", "point"), read as such only before another number
        word or digits."""
        if nxt not in self.words and not _is_digits(nxt):
            yield from state.flush()
            yield state.emit(word)
        elif word == "and":
            if prev not in self.multipliers:  # "hundred and five" drops it; "five and six" keeps it
                yield from state.flush()
                yield state.emit(word)
        elif word in ("double", "triple"):
            yield from self._read_repeat(state, word, nxt)
        elif nxt in self.decimals or _is_digits(nxt):  # "point"; otherwise it is dropped
            state.value = str(state.value or "") + "."

    def _read_repeat(self, state: _Pending, word: str, nxt: str) -> Iterator[str]:
        """A repeat word: "double seven" -> "77", "triple oh" -> "000"."""
        if nxt in self.ones or nxt in self.zeros:
            repeats = 2 if word == "double" else 3
            state.value = str(state.value or "") + str(self.ones.get(nxt, 0)) * repeats
            state.skip_next = True
        else:
            yield from state.flush()
            yield state.emit(word)

    # -- public steps, as in the reference

    def process_words(self, words: Iterable[str]) -> Iterator[str]:
        """Read a list of words, yielding output words with numbers combined into digits."""
        words = list(words)
        state = _Pending()
        for i, word in enumerate(words):
            if state.skip_next:
                state.skip_next = False
                continue
            prev = words[i - 1] if i > 0 else None
            nxt = words[i + 1] if i + 1 < len(words) else None
            yield from self._read_word(state, prev, word, nxt)
        yield from state.flush()

    def _read_word(self, state: _Pending, prev: str | None, word: str, nxt: str | None) -> Iterator[str]:
        sign = word[0] if word[0] in self.prefixes else None
        digits = word[1:] if sign is not None else word
        if _is_digits(digits):
            yield from self._read_arabic(state, word, sign, digits)
        elif word in self._handlers:
            yield from self._handlers[word](state, prev, word, nxt)
        else:  # an ordinary word ends the number
            yield from state.flush()
            yield state.emit(word)

    def preprocess(self, s: str) -> str:
        """Rewrite "<number> and a half" as "<number> point five" and split digits from letters
        ("2nd" and "1960s" stay whole)."""
        s = self._halves(s)
        s = re.sub(r"([a-z])([0-9])", r"\1 \2", s)
        s = re.sub(r"([0-9])([a-z])", r"\1 \2", s)
        return re.sub(r"([0-9])\s+(st|nd|rd|th|s)\b", r"\1\2", s)

    def _halves(self, s: str) -> str:
        segments = re.split(r"\band\s+a\s+half\b", s)
        parts = []
        for i, segment in enumerate(segments):
            if not segment.strip():  # nothing before it: the "and a half" is dropped too
                continue
            parts.append(segment)
            if i < len(segments) - 1:
                last_word = segment.rsplit(maxsplit=2)[-1]
                number = last_word in self.decimals or last_word in self.multipliers
                parts.append("point five" if number else "and a half")
        return " ".join(parts)

    def postprocess(self, s: str) -> str:
        """Merge dollars and cents ("$2 and ¢7" -> "$2.07", "$0.5" -> "¢5") and spell a lone 1 as "one"."""
        s = re.sub(
            r"([€£$])([0-9]+) (?:and )?¢([0-9]{1,2})\b",
            lambda m: f"{m.group(1)}{m.group(2)}.{int(m.group(3)):02d}",
            s,
        )
        s = re.sub(r"[€£$]0.([0-9]{1,2})\b", lambda m: f"¢{int(m.group(1))}", s)
        return re.sub(r"\b1(s?)\b", r"one\1", s)

    def __call__(self, s: str) -> str:
        s = self.preprocess(s)
        s = " ".join(self.process_words(s.split()))
        return self.postprocess(s)
