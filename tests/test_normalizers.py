"""Normalizers: the same output as the reference's (whisper.normalizers), string for string."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import all_shared_transcripts, require_shared_speech, shared_speech_available

import kvwhisper.normalizers as ours
from kvwhisper.normalizers import basic as ours_basic
from kvwhisper.normalizers import english as ours_english

ref_basic = pytest.importorskip(
    "whisper.normalizers.basic", reason="openai-whisper (the reference) is not installed"
)
ref_english = pytest.importorskip("whisper.normalizers.english")

# name -> (ours, reference)
NORMALIZERS = {
    "english": (ours.EnglishTextNormalizer(), ref_english.EnglishTextNormalizer()),
    "basic": (ours.BasicTextNormalizer(), ref_basic.BasicTextNormalizer()),
    "basic-nodiacritics": (
        ours.BasicTextNormalizer(remove_diacritics=True),
        ref_basic.BasicTextNormalizer(remove_diacritics=True),
    ),
    "basic-split": (
        ours.BasicTextNormalizer(split_letters=True),
        ref_basic.BasicTextNormalizer(split_letters=True),
    ),
}

NUMBERS = [
    "twenty one",
    "one hundred and five",
    "2nd",
    "1,000,000",
    "$5.50",
    "£3",
    "10%",
    "one point five",
    "nineteen ninety nine",
    "oh two",
    "double seven",
    "triple zero",
    "one oh one",
    "two thousand and twenty",
    "twenty twenty",
    "twenty twelve",
    "two thousand twelve",
    "forty two thousand three hundred fifteen",
    "three and a half",
    "and a half",
    "a hundred and a half",
    "one million dollars",
    "$20 million",
    "five dollars and fifty cents",
    "$2 and 7 cents",
    "fifty cents",
    "minus five",
    "plus two and minus three",
    "negative",
    "ten per cent",
    "ten percent",
    "per cent",
    "1960s",
    "the nineteen sixties",
    "1.0",
    "0.5",
    "$0.50",
    "€1.05",
    "192.168.0.1",
    "3.14 point",
    "zero point five",
    "one two three four",
    "ones and twos",
    "one",
    "1",
    "1s",
    "two hundred thousand five hundred",
    "one point five million",
    "point five billion",
    "1.5 thousandth",
    "a hundred",
]
ORDINALS = [
    "first",
    "the third",
    "twenty first century",
    "fourth",
    "fifth",
    "ninth",
    "eighth",
    "twelfth",
    "eleventh",
    "twentieth",
    "thirty twelfth",
    "two hundred twenty first",
    "hundredth",
    "one thousandth",
    "101st",
    "7th",
    "3rd",
    "44th",
    "thirties",
    "sixes",
    "two hundreds",
]
CONTRACTIONS = [
    "won't",
    "can't",
    "y'all",
    "it's",
    "it 's",
    "he'd been there",
    "she's gone",
    "he's got it",
    "i'm",
    "they're",
    "we've",
    "you'll",
    "ain't",
    "gonna wanna gotta",
    "i'ma",
    "ma'am",
    "let's",
    "isn't",
]
TITLES = ["Mr. Smith", "Mrs. Jones", "Dr. Who", "St. Louis", "Prof. X", "John Smith Jr.", "Lt. Col. Smith"]
SPELLINGS = ["colour", "organise", "the centre", "travelled", "analyse", "Favourite Colours"]
FILLERS = ["hmm", "uh", "um yes", "mm-hmm", "mhm", "mmm", "hmmm", "uh huh"]
BRACKETS = [
    "[laughter] hi",
    "<unk> yes",
    "(inaudible) ok",
    "a (b) c",
    "()",
    "[a) b",
    "<a] c>",
    "x [y",
    "(a (b) c)",
]
DIACRITICS = [
    "café naïve",
    "Straße",
    "Ørsted",
    "Łódź",
    "þorn Þ",
    "Æsir",
    "crème brûlée",
    "ﬁ ligature",
    "①②",
    "x²",
]
SCRIPTS = ["你好，世界！", "こんにちは世界", "안녕하세요", "👍 good 🎉", "👨‍👩‍👧", "🇫🇷", "Привет, мир"]
WHITESPACE = ["", " ", "\t\n", "  a   b  ", "\u00a0nbsp\u2003"]
PUNCTUATION = [
    "hello, world!",
    "U.S.A.",
    "e.g. this",
    "end.",
    "3.14",
    "$",
    "%",
    "$ 5",
    "5 $",
    "'quoted'",
    "a--b",
]

EDGE_CASES = (
    NUMBERS
    + ORDINALS
    + CONTRACTIONS
    + TITLES
    + SPELLINGS
    + FILLERS
    + BRACKETS
    + DIACRITICS
    + SCRIPTS
    + WHITESPACE
) + PUNCTUATION

SPLIT_LETTERS = [
    "你好世界",
    "こんにちは",
    "ภาษาไทย",
    "नमस्ते दुनिया",
    "안녕하세요",
    "Привет мир",
    "👨‍👩‍👧🇫🇷",
    "مرحبا بالعالم",
]


def _corpus_params() -> list:
    """One parameter per transcript line of the shared corpus, or one that skips when it is absent."""
    if not shared_speech_available():
        return [pytest.param(None, id="no-shared-corpus")]
    return [pytest.param(text, id=key) for key, text in all_shared_transcripts().items()]


@pytest.mark.parametrize("name", NORMALIZERS)
@pytest.mark.parametrize("text", _corpus_params())
def test_corpus_line(name: str, text: str | None) -> None:
    if text is None:
        require_shared_speech()
    mine, reference = NORMALIZERS[name]
    assert mine(text) == reference(text)


@pytest.mark.parametrize("name", NORMALIZERS)
@pytest.mark.parametrize("text", _corpus_params())
def test_corpus_words(name: str, text: str | None) -> None:
    if text is None:
        require_shared_speech()
    mine, reference = NORMALIZERS[name]
    words = text.split()
    assert [mine(w) for w in words] == [reference(w) for w in words]


@pytest.mark.parametrize("name", ["english", "basic", "basic-nodiacritics"])
@pytest.mark.parametrize("text", EDGE_CASES)
def test_edge_case(name: str, text: str) -> None:
    mine, reference = NORMALIZERS[name]
    assert mine(text) == reference(text)


@pytest.mark.parametrize("remove_diacritics", [False, True])
@pytest.mark.parametrize("text", SPLIT_LETTERS)
def test_split_letters(text: str, remove_diacritics: bool) -> None:
    mine = ours.BasicTextNormalizer(remove_diacritics=remove_diacritics, split_letters=True)
    reference = ref_basic.BasicTextNormalizer(remove_diacritics=remove_diacritics, split_letters=True)
    assert mine(text) == reference(text)


@pytest.mark.parametrize("text", NUMBERS + ORDINALS + ["", "cats and dogs"])
def test_number_normalizer(text: str) -> None:
    text = text.lower()
    assert ours.EnglishNumberNormalizer()(text) == ref_english.EnglishNumberNormalizer()(text)


@pytest.mark.parametrize("text", DIACRITICS + SCRIPTS + PUNCTUATION + ["$5 and 10% off, £3"])
def test_symbol_helpers(text: str) -> None:
    assert ours.remove_symbols(text) == ref_basic.remove_symbols(text)
    assert ours.remove_symbols_and_diacritics(text) == ref_basic.remove_symbols_and_diacritics(text)
    keep = ".%$¢€£"
    assert ours.remove_symbols_and_diacritics(text, keep=keep) == ref_basic.remove_symbols_and_diacritics(
        text, keep
    )


def test_spelling_table() -> None:
    mine, reference = ours.EnglishSpellingNormalizer(), ref_english.EnglishSpellingNormalizer()
    assert mine.mapping == reference.mapping
    text = " ".join(reference.mapping)  # every British spelling in the table
    assert mine(text) == reference(text)


def test_module_layout_mirrors_reference() -> None:
    """`whisper.normalizers[.basic|.english]` imports work with `kvwhisper` in their place."""
    assert ours_english.EnglishNumberNormalizer is ours.EnglishNumberNormalizer
    assert ours_english.EnglishSpellingNormalizer is ours.EnglishSpellingNormalizer
    assert ours_english.EnglishTextNormalizer is ours.EnglishTextNormalizer
    assert ours_basic.BasicTextNormalizer is ours.BasicTextNormalizer
    assert ours_basic.remove_symbols is ours.remove_symbols
    assert ours_basic.remove_symbols_and_diacritics is ours.remove_symbols_and_diacritics
    assert ours_basic.ADDITIONAL_DIACRITICS == ref_basic.ADDITIONAL_DIACRITICS


def test_no_reference_import() -> None:
    """The normalizers do not import openai-whisper (a test-only dependency)."""
    for path in Path(ours.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n == "whisper" or n.startswith("whisper.") for n in names), path.name
