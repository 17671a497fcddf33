"""Whisper's special tokens and the vocabulary layouts they produce.

Every Whisper vocabulary is a byte-level BPE rank table followed by the same run of special tokens:

    <|endoftext|> <|startoftranscript|> <|en|> ... (one per language) <|translate|> <|transcribe|>
    <|startoflm|> <|startofprev|> <|nospeech|> <|notimestamps|> <|0.00|> <|0.02|> ... <|30.00|>

The English-only models use GPT-2's 50,256 ranks, the multilingual ones 50,257 (their last rank is an
empty byte string), so `<|endoftext|>` is 50256 or 50257. The English-only models still carry the 99
language tokens in their id space, so only the rank count tells the two apart at a given n_vocab.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import tiktoken

from .errors import TokenizerError
from .languages import LANGUAGES, language_codes

# GPT-2's pre-tokenizer regex; Whisper (both vocabularies) splits text with exactly this pattern.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

ENGLISH_N_RANKS = 50256
MULTILINGUAL_N_RANKS = 50257
DEFAULT_NUM_LANGUAGES = 99  # every model before large-v3

N_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|>
TIMESTAMP_STEP_S = 0.02
MAX_TIMESTAMP_S = (N_TIMESTAMPS - 1) * TIMESTAMP_STEP_S

EOT = "<|endoftext|>"
SOT = "<|startoftranscript|>"
TRANSLATE = "<|translate|>"
TRANSCRIBE = "<|transcribe|>"
SOT_LM = "<|startoflm|>"
SOT_PREV = "<|startofprev|>"
NO_SPEECH = "<|nospeech|>"
NO_TIMESTAMPS = "<|notimestamps|>"
# the fixed tokens between the language tokens and the timestamps, in vocabulary order
CONTROL_TOKENS = (TRANSLATE, TRANSCRIBE, SOT_LM, SOT_PREV, NO_SPEECH, NO_TIMESTAMPS)

# Older Hugging Face conversions (e.g. tiny.en's tokenizer.json) spell two specials the way Whisper's
# first release did; they occupy the same slots, so they are the same tokens under another name.
SPECIAL_ALIASES = {"<|iw|>": "<|he|>", "<|nocaptions|>": NO_SPEECH}


def language_token_name(code: str) -> str:
    return f"<|{code}|>"


def timestamp_token_name(index: int) -> str:
    """`<|1.08|>` for index 54; integer arithmetic so no float rounding can ever change a name."""
    centiseconds = index * round(TIMESTAMP_STEP_S * 100)
    return f"<|{centiseconds // 100}.{centiseconds % 100:02d}|>"


def special_token_names(num_languages: int) -> tuple[str, ...]:
    """All special tokens of a layout with `num_languages` languages, in vocabulary order."""
    return (
        EOT,
        SOT,
        *(language_token_name(code) for code in language_codes(num_languages)),
        *CONTROL_TOKENS,
        *(timestamp_token_name(i) for i in range(N_TIMESTAMPS)),
    )


def canonical_special_name(name: str) -> str:
    return SPECIAL_ALIASES.get(name, name)


def _all_special_names() -> frozenset[str]:
    return frozenset(special_token_names(len(LANGUAGES))) | frozenset(SPECIAL_ALIASES)


# every name any layout uses (largest language set) plus the old aliases: how loaders spot specials
ALL_SPECIAL_NAMES = _all_special_names()

_N_FIXED_SPECIALS = 2 + len(CONTROL_TOKENS) + N_TIMESTAMPS  # specials that do not depend on languages


@dataclass(frozen=True)
class VocabLayout:
    """Where every token of a Whisper vocabulary sits: English-only or multilingual, how many languages."""

    multilingual: bool
    num_languages: int = DEFAULT_NUM_LANGUAGES

    def __post_init__(self) -> None:
        language_codes(self.num_languages)  # validates the range

    @classmethod
    def from_n_vocab(cls, n_vocab: int) -> VocabLayout:
        """The layout of a model with `n_vocab` output logits (51864 tiny.en, 51865 base, 51866 large-v3).

        Multilingual iff n_vocab >= 51865, the same rule the reference model uses for `is_multilingual`.
        """
        multilingual = n_vocab >= MULTILINGUAL_N_RANKS + _N_FIXED_SPECIALS + DEFAULT_NUM_LANGUAGES
        n_ranks = MULTILINGUAL_N_RANKS if multilingual else ENGLISH_N_RANKS
        num_languages = n_vocab - n_ranks - _N_FIXED_SPECIALS
        if not 1 <= num_languages <= len(LANGUAGES):
            raise TokenizerError(
                f"n_vocab {n_vocab} is not a Whisper vocabulary size (expected 51864 for English-only "
                "models, 51865 for multilingual ones, 51866 for large-v3)"
            )
        return cls(multilingual=multilingual, num_languages=num_languages)

    @property
    def n_ranks(self) -> int:
        return MULTILINGUAL_N_RANKS if self.multilingual else ENGLISH_N_RANKS

    @property
    def n_vocab(self) -> int:
        return self.n_ranks + _N_FIXED_SPECIALS + self.num_languages

    @property
    def timestamp_begin(self) -> int:
        return self.n_vocab - N_TIMESTAMPS

    @cached_property
    def special_tokens(self) -> dict[str, int]:
        """Special token name -> id, numbered right after the BPE ranks."""
        return {name: self.n_ranks + i for i, name in enumerate(special_token_names(self.num_languages))}

    def describe(self) -> str:
        kind = "multilingual" if self.multilingual else "English-only"
        return f"{kind}, {self.num_languages} languages, n_vocab {self.n_vocab}"


def build_encoding(name: str, ranks: dict[bytes, int], layout: VocabLayout) -> tiktoken.Encoding:
    """A tiktoken encoding of `ranks` with the layout's special tokens appended."""
    if len(ranks) != layout.n_ranks:
        raise TokenizerError(
            f"{name}: {len(ranks)} BPE ranks, but a {layout.describe()} vocabulary needs {layout.n_ranks}"
        )
    return tiktoken.Encoding(
        name=name,
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=layout.special_tokens,
        explicit_n_vocab=layout.n_vocab,
    )
