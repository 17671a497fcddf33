"""Whisper's tokenizer: byte-level BPE via tiktoken plus Whisper's special tokens.

`get_tokenizer(multilingual, ...)` builds it from the bundled vocabularies (copies of the reference
implementation's `.tiktoken` assets); `Tokenizer.from_file(path, n_vocab=...)` builds it from a model's
own tokenizer file (Hugging Face tokenizer.json, vocab.json + merges.txt, CTranslate2 vocabulary or
`.tiktoken`) and checks it fits the model. Token ids match the reference implementation exactly.
"""

from .core import TASKS, Task, Tokenizer, get_encoding, get_tokenizer
from .errors import TokenizerError
from .languages import LANGUAGES, NO_SPACE_LANGUAGES, TO_LANGUAGE_CODE, normalize_language
from .loading import BpeVocabulary, load_encoding, read_vocabulary, resolve_layout
from .specials import GPT2_PATTERN, TIMESTAMP_STEP_S, VocabLayout, special_token_names

__all__ = [
    "GPT2_PATTERN",
    "LANGUAGES",
    "NO_SPACE_LANGUAGES",
    "TASKS",
    "TIMESTAMP_STEP_S",
    "TO_LANGUAGE_CODE",
    "BpeVocabulary",
    "Task",
    "Tokenizer",
    "TokenizerError",
    "VocabLayout",
    "get_encoding",
    "get_tokenizer",
    "load_encoding",
    "normalize_language",
    "read_vocabulary",
    "resolve_layout",
    "special_token_names",
]
