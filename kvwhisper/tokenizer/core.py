"""The `Tokenizer`: a tiktoken encoding plus Whisper's special tokens, language and task.

Its public API mirrors the reference implementation's `whisper.tokenizer.Tokenizer`, so decoding code can
use either; the encodings are built from the same ranks and pattern, so token ids are identical.
"""

from __future__ import annotations

import math
import os
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache, cached_property
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal

import tiktoken

from .errors import TokenizerError
from .languages import LANGUAGES, NO_SPACE_LANGUAGES, language_codes, normalize_language
from .loading import load_encoding, read_tiktoken
from .specials import (
    DEFAULT_NUM_LANGUAGES,
    EOT,
    MAX_TIMESTAMP_S,
    MULTILINGUAL_N_RANKS,
    N_TIMESTAMPS,
    NO_SPEECH,
    NO_TIMESTAMPS,
    SOT,
    SOT_LM,
    SOT_PREV,
    TIMESTAMP_STEP_S,
    TRANSCRIBE,
    TRANSLATE,
    VocabLayout,
    build_encoding,
    language_token_name,
    timestamp_token_name,
)

Task = Literal["transcribe", "translate"]
TASKS: tuple[str, ...] = ("transcribe", "translate")

_REPLACEMENT_CHAR = "\ufffd"
_UNCHANGED: Any = object()  # sentinel for with_options: "keep the current value" (None is a real value)

# Symbols the default suppression set removes when they are a token of their own (with or without a
# leading space): speaker tags, stage directions, music notes and markup, but not basic punctuation.
_NON_SPEECH_SYMBOLS = (
    *'"#()*+/:;<=>@[\\]^_`{|}~「」『』',
    *"<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split(),
)
# U+2640..U+267F symbols share their first two UTF-8 bytes, so suppressing their first token is safe
# even where a symbol takes several tokens.
_MUSIC_SYMBOLS = "♩♪♫♬♭♮♯"


@dataclass(frozen=True)
class Tokenizer:
    """Whisper's tokenizer for one vocabulary, language and task (immutable; see `with_options`).

    `language` accepts a code or an English name ("en", "English"); it is stored as the code.
    Constructing a Tokenizer directly keeps `language`/`task` as given (None means "not in the
    prompt"); `get_tokenizer` and `from_file` apply Whisper's defaults.
    """

    encoding: tiktoken.Encoding
    num_languages: int
    language: str | None = None
    task: Task | None = None

    def __post_init__(self) -> None:
        language_codes(self.num_languages)  # validates the range
        required = (EOT, SOT, TRANSLATE, TRANSCRIBE, NO_TIMESTAMPS, timestamp_token_name(0))
        missing = [name for name in required if name not in self.encoding.special_tokens_set]
        if missing:
            raise TokenizerError(f"encoding {self.encoding.name!r} lacks Whisper special tokens {missing}")
        if self.language is not None:
            code = normalize_language(self.language)
            if code not in language_codes(self.num_languages):
                raise TokenizerError(
                    f"Language {code!r} is not one of this model's {self.num_languages} languages"
                )
            object.__setattr__(self, "language", code)  # frozen: normalize once, at construction
        if self.task is not None and self.task not in TASKS:
            raise TokenizerError(f"task must be one of {TASKS} or None, got {self.task!r}")

    # --- construction ------------------------------------------------------------------------------------

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        n_vocab: int | None = None,
        language: str | None = None,
        task: Task | None = None,
    ) -> Tokenizer:
        """A tokenizer from a tokenizer file or model directory (see `kvwhisper.tokenizer.loading`).

        `n_vocab` (the model's output size) fixes the layout: 51864 English-only, 51865 multilingual,
        51866 large-v3. Without it the layout is inferred from the file. A file that cannot be the
        model's tokenizer raises TokenizerError. Language/task defaults are `get_tokenizer`'s.
        """
        encoding, num_languages = load_encoding(path, n_vocab)
        return _with_whisper_defaults(encoding, num_languages, language, task)

    def with_options(self, *, language: str | None = _UNCHANGED, task: Task | None = _UNCHANGED) -> Tokenizer:
        """A tokenizer for the same encoding with another language and/or task."""
        changes = {}
        if language is not _UNCHANGED:
            changes["language"] = language
        if task is not _UNCHANGED:
            changes["task"] = task
        return replace(self, **changes)

    # --- vocabulary --------------------------------------------------------------------------------------

    @cached_property
    def special_tokens(self) -> Mapping[str, int]:
        """Special token name -> id, in id order (read-only)."""
        ids = {name: self.encoding.encode_single_token(name) for name in self.encoding.special_tokens_set}
        return MappingProxyType(dict(sorted(ids.items(), key=lambda item: item[1])))

    @property
    def n_vocab(self) -> int:
        return self.encoding.n_vocab

    @cached_property
    def is_multilingual(self) -> bool:
        # eot follows the ranks: 50256 after GPT-2's table (English-only), 50257 after the multilingual one
        return self.eot == MULTILINGUAL_N_RANKS

    def _special(self, name: str) -> int:
        try:
            return self.special_tokens[name]
        except KeyError:
            raise TokenizerError(f"encoding {self.encoding.name!r} has no special token {name}") from None

    @cached_property
    def eot(self) -> int:
        return self._special(EOT)

    @cached_property
    def sot(self) -> int:
        return self._special(SOT)

    @cached_property
    def transcribe(self) -> int:
        return self._special(TRANSCRIBE)

    @cached_property
    def translate(self) -> int:
        return self._special(TRANSLATE)

    @cached_property
    def sot_lm(self) -> int:
        return self._special(SOT_LM)

    @cached_property
    def sot_prev(self) -> int:
        return self._special(SOT_PREV)

    @cached_property
    def no_speech(self) -> int:
        return self._special(NO_SPEECH)

    @cached_property
    def no_timestamps(self) -> int:
        return self._special(NO_TIMESTAMPS)

    @cached_property
    def timestamp_begin(self) -> int:
        """Id of `<|0.00|>`; every id from here up is a timestamp."""
        return self._special(timestamp_token_name(0))

    @cached_property
    def timestamp_end(self) -> int:
        """Id of `<|30.00|>`, the last timestamp."""
        return self.timestamp_begin + N_TIMESTAMPS - 1

    # --- languages and prompts ---------------------------------------------------------------------------

    def to_language_token(self, language: str) -> int:
        """The id of `<|xx|>` for a language code or name; KeyError if this model lacks it."""
        try:
            code = normalize_language(language)
        except TokenizerError:
            code = language
        token = self.special_tokens.get(language_token_name(code))
        if token is None or code not in self.all_language_codes:
            raise KeyError(f"Language {language} not found in tokenizer.")
        return token

    @cached_property
    def language_token(self) -> int:
        if self.language is None:
            raise TokenizerError("This tokenizer does not have language token configured")
        return self.to_language_token(self.language)

    @cached_property
    def all_language_codes(self) -> tuple[str, ...]:
        """This model's language codes, in token order."""
        codes = language_codes(self.num_languages)
        return tuple(code for code in codes if language_token_name(code) in self.special_tokens)

    @cached_property
    def all_language_tokens(self) -> tuple[int, ...]:
        """The language token ids, ascending (same order as `all_language_codes`)."""
        return tuple(self.special_tokens[language_token_name(code)] for code in self.all_language_codes)

    @cached_property
    def sot_sequence(self) -> tuple[int, ...]:
        """The prompt start: `<|startoftranscript|>` [language token] [task token]."""
        sequence = [self.sot]
        if self.language is not None:
            sequence.append(self.language_token)
        if self.task is not None:
            sequence.append(self.transcribe if self.task == "transcribe" else self.translate)
        return tuple(sequence)

    @cached_property
    def sot_sequence_including_notimestamps(self) -> tuple[int, ...]:
        return (*self.sot_sequence, self.no_timestamps)

    @cached_property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """Token ids suppressed by default so the model does not write what was not said, e.g.
        "♪♪♪", "( SPEAKING FOREIGN LANGUAGE )", "[DAVID] Hey there," — while keeping ordinary
        punctuation. Sorted ascending; identical to the reference's set.
        """
        encode = self.encoding.encode_ordinary
        # hyphens and apostrophes are fine inside words, but not as the start of a word
        result = {encode(" -")[0], encode(" '")[0]}
        for symbol in (*_NON_SPEECH_SYMBOLS, *_MUSIC_SYMBOLS):
            for tokens in (encode(symbol), encode(" " + symbol)):
                if len(tokens) == 1 or symbol in _MUSIC_SYMBOLS:
                    result.add(tokens[0])
        return tuple(sorted(result))

    # --- encoding and decoding ---------------------------------------------------------------------------

    def encode(self, text: str, **kwargs: Any) -> list[int]:
        """Token ids of `text`; keyword arguments go to `tiktoken.Encoding.encode`.

        As in the reference, text spelling a special token ("<|endoftext|>") raises ValueError by
        default; pass `disallowed_special=()` to encode it as plain text.
        """
        return self.encoding.encode(text, **kwargs)

    def decode(self, token_ids: Sequence[int], **kwargs: Any) -> str:
        """Text of `token_ids` with timestamp tokens dropped (other specials are rendered as text)."""
        return self.encoding.decode([t for t in token_ids if t < self.timestamp_begin], **kwargs)

    def decode_with_timestamps(self, token_ids: Sequence[int], **kwargs: Any) -> str:
        """Text of `token_ids` with timestamps rendered inline, e.g. "<|1.08|>"."""
        return self.encoding.decode(list(token_ids), **kwargs)

    # --- timestamps --------------------------------------------------------------------------------------

    def is_timestamp(self, token_id: int) -> bool:
        return self.timestamp_begin <= token_id <= self.timestamp_end

    def timestamp_to_seconds(self, token_id: int) -> float:
        """Seconds of a timestamp token (`<|1.08|>` -> 1.08)."""
        if not self.is_timestamp(token_id):
            raise TokenizerError(f"token {token_id} is not a timestamp token")
        return round((token_id - self.timestamp_begin) * TIMESTAMP_STEP_S, 2)

    def seconds_to_timestamp(self, seconds: float) -> int:
        """The timestamp token nearest to `seconds` (0 to 30 s, 0.02 s steps)."""
        if not math.isfinite(seconds) or not 0 <= seconds <= MAX_TIMESTAMP_S:
            raise TokenizerError(f"timestamp must be between 0 and {MAX_TIMESTAMP_S:g} s, got {seconds}")
        return self.timestamp_begin + round(seconds / TIMESTAMP_STEP_S)

    # --- word splitting (word-level timestamps) ----------------------------------------------------------

    def split_to_word_tokens(self, tokens: Sequence[int]) -> tuple[list[str], list[list[int]]]:
        """(words, token ids of each word). Languages written without spaces are split at every
        complete character instead, since finding their words would need morphological analysis.
        """
        if self.language in NO_SPACE_LANGUAGES:
            return self.split_tokens_on_unicode(tokens)
        return self.split_tokens_on_spaces(tokens)

    def split_tokens_on_unicode(self, tokens: Sequence[int]) -> tuple[list[str], list[list[int]]]:
        """Group tokens into the shortest runs that decode to whole characters."""
        full_text = self.decode_with_timestamps(tokens)
        pieces: list[str] = []
        piece_tokens: list[list[int]] = []
        pending: list[int] = []
        offset = 0  # characters of full_text covered by `pieces`
        for token in tokens:
            pending.append(token)
            text = self.decode_with_timestamps(pending)
            bad = text.find(_REPLACEMENT_CHAR)
            # A U+FFFD here is either a character cut mid-UTF-8 (wait for the next token) or a genuine
            # invalid byte that stays U+FFFD in the full decode too (nothing to wait for).
            at = offset + bad
            if bad < 0 or (at < len(full_text) and full_text[at] == _REPLACEMENT_CHAR):
                pieces.append(text)
                piece_tokens.append(pending)
                pending = []
                offset += len(text)
        return pieces, piece_tokens

    def split_tokens_on_spaces(self, tokens: Sequence[int]) -> tuple[list[str], list[list[int]]]:
        """Group tokens into words; a word starts at a leading space, a punctuation mark or a special."""
        subwords, subword_tokens = self.split_tokens_on_unicode(tokens)
        words: list[str] = []
        word_tokens: list[list[int]] = []
        for subword, ids in zip(subwords, subword_tokens, strict=True):
            starts_word = (
                not words
                or ids[0] >= self.eot
                or subword.startswith(" ")
                or subword.strip() in string.punctuation
            )
            if starts_word:
                words.append(subword)
                word_tokens.append(list(ids))
            else:
                words[-1] += subword
                word_tokens[-1].extend(ids)
        return words, word_tokens


# --- constructors ----------------------------------------------------------------------------------------


def _with_whisper_defaults(
    encoding: tiktoken.Encoding, num_languages: int, language: str | None, task: Task | None
) -> Tokenizer:
    """Whisper's conventions: multilingual prompts default to English transcription; English-only
    models never put a language or task token in the prompt (whatever was asked for)."""
    if language is not None:
        language = normalize_language(language)  # an unknown language is an error even for English-only
    tokenizer = Tokenizer(encoding=encoding, num_languages=num_languages)
    if tokenizer.is_multilingual:
        return tokenizer.with_options(language=language or "en", task=task or "transcribe")
    return tokenizer


def _asset_ranks(name: str) -> dict[bytes, int]:
    asset = resources.files(__package__).joinpath("assets", f"{name}.tiktoken")
    with resources.as_file(asset) as path:
        return read_tiktoken(path).ranks


@cache
def get_encoding(
    name: Literal["gpt2", "multilingual"] = "gpt2", num_languages: int = DEFAULT_NUM_LANGUAGES
) -> tiktoken.Encoding:
    """The tiktoken encoding of a bundled vocabulary ("gpt2" English-only, "multilingual")."""
    if name not in ("gpt2", "multilingual"):
        raise TokenizerError(f"unknown bundled encoding {name!r} (expected 'gpt2' or 'multilingual')")
    layout = VocabLayout(multilingual=name == "multilingual", num_languages=num_languages)
    return build_encoding(name, _asset_ranks(name), layout)


@cache
def get_tokenizer(
    multilingual: bool,
    *,
    num_languages: int = DEFAULT_NUM_LANGUAGES,
    language: str | None = None,
    task: Task | None = None,
) -> Tokenizer:
    """Whisper's tokenizer from the bundled vocabularies, like the reference's `get_tokenizer`.

    Multilingual: language defaults to "en" and task to "transcribe". English-only: no language or
    task token (arguments are validated, then ignored). `num_languages=100` gives large-v3's layout.
    """
    encoding = get_encoding("multilingual" if multilingual else "gpt2", num_languages)
    return _with_whisper_defaults(encoding, num_languages, language, task)


__all__ = ["LANGUAGES", "TASKS", "Task", "Tokenizer", "get_encoding", "get_tokenizer"]
