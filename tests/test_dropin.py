"""`import kvwhisper as whisper` down to the submodules: every public function, class and constant of
openai-whisper's `whisper`, `whisper.audio`, `whisper.tokenizer`, `whisper.decoding`, `whisper.timing`,
`whisper.utils` and `whisper.normalizers` exists under the same path in kvwhisper (except the names in
LEFT_OUT, each with its reason), takes the reference's arguments, and the cheap ones behave the same."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
from types import ModuleType

import numpy as np
import pytest
import torch
from helpers import random_mel, reference_copy, tiny_random_model

import kvwhisper

whisper = pytest.importorskip("whisper")
pytest.importorskip("whisper.normalizers")

MODULES = [
    "whisper",
    "whisper.audio",
    "whisper.tokenizer",
    "whisper.decoding",
    "whisper.timing",
    "whisper.utils",
    "whisper.normalizers",
]

# reference names deliberately absent from kvwhisper, with the reason (README: "Drop-in for openai-whisper")
LEFT_OUT: dict[str, dict[str, str]] = {
    "whisper": {
        "ModelDimensions": "the sizes are kvwhisper.ModelDims (the same fields, frozen); whisper.model is not mirrored",
    },
    "whisper.decoding": {
        "Inference": "forward hooks on the key/value projections; the decode loop owns an explicit KVCache",
        "PyTorchInference": "the hook-based Inference; DecoderRunner feeds the decoder and reorders its cache",
    },
    "whisper.timing": {
        "dtw_cuda": "a Triton kernel; dtw copies a CUDA tensor to the CPU and runs there",
    },
}

# reference callables whose parameters we do not mirror, with the reason
SIGNATURE_DIFFERS: dict[str, str] = {
    "whisper.tokenizer.Tokenizer": "the dataclass fields sot_sequence and special_tokens are filled in by the "
    "reference's __post_init__ from the encoding (a passed sot_sequence is overwritten); not arguments here",
}


def ours(module_name: str) -> ModuleType:
    return importlib.import_module("kv" + module_name)


def own_constants(module: ModuleType) -> set[str]:
    """Public names the module's own source assigns at top level (constants such as SAMPLE_RATE)."""
    path = getattr(module, "__file__", None)
    if not path or not path.endswith(".py"):
        return set()
    names: set[str] = set()
    for node in ast.parse(open(path, encoding="utf-8").read()).body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        names.update(t.id for t in targets if isinstance(t, ast.Name) and not t.id.startswith("_"))
    return {n for n in names if not isinstance(getattr(module, n, None), ModuleType)}


def public_names(module: ModuleType) -> set[str]:
    """Functions and classes (plain, lru-cached or numba-compiled) defined in the reference package, and the
    module's own constants."""
    callables = {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and not isinstance(obj, ModuleType)
        and callable(obj)
        and (getattr(obj, "__module__", None) or "").startswith("whisper")
    }
    return callables | own_constants(module)


@pytest.mark.parametrize("module_name", MODULES)
def test_every_reference_name_exists(module_name):
    reference = importlib.import_module(module_name)
    left_out = LEFT_OUT.get(module_name, {})
    missing = sorted(n for n in public_names(reference) - set(left_out) if not hasattr(ours(module_name), n))
    assert not missing, f"kv{module_name} lacks {missing} (add them, or list them in LEFT_OUT with a reason)"


@pytest.mark.parametrize("module_name", sorted(LEFT_OUT))
def test_left_out_names_are_reference_names_we_lack(module_name):
    reference = importlib.import_module(module_name)
    for name, reason in LEFT_OUT[module_name].items():
        assert reason.strip()
        assert name in public_names(reference), f"{module_name}.{name} is not a reference name: drop it"
        assert not hasattr(ours(module_name), name), (
            f"kv{module_name}.{name} exists now: drop it from LEFT_OUT"
        )


def test_module_lists_cover_the_left_out_modules():
    assert set(LEFT_OUT) <= set(MODULES)


def test_submodules_load_with_the_package():
    for name in ("audio", "tokenizer", "decoding", "timing", "utils", "model"):
        assert isinstance(getattr(whisper, name), ModuleType)
        assert isinstance(getattr(kvwhisper, name), ModuleType), f"kvwhisper.{name} needs an import"
    assert callable(kvwhisper.transcribe) and not isinstance(kvwhisper.transcribe, ModuleType)


# ---------------------------------------------------------------------------------------------------------
# the reference's calls work: parameter names, positions and optional arguments


def _signature(obj) -> inspect.Signature:
    return inspect.signature(getattr(obj, "py_func", obj))  # numba's dispatchers keep the function there


def _same_default(reference, mine) -> bool:
    """Equal plain defaults (numbers, strings, tuples; NaN equals NaN); other kinds are not compared."""
    simple = (int, float, str, bool, tuple)
    if not (isinstance(reference, simple) and isinstance(mine, simple)):
        return True
    both_nan = (
        isinstance(reference, float) and isinstance(mine, float) and np.isnan(reference) and np.isnan(mine)
    )
    return both_nan or reference == mine


def _incompatibilities(reference, mine) -> list[str]:
    """Ways a call written for `reference` could fail or mean something else with `mine`."""
    ref_params = list(_signature(reference).parameters.values())
    our_params = _signature(mine).parameters
    our_list = list(our_params.values())
    kinds = inspect.Parameter
    problems = []
    for i, p in enumerate(ref_params):
        if p.kind in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD):
            if not any(q.kind == p.kind for q in our_list):
                problems.append(f"no {p}")
            continue
        q = our_params.get(p.name)
        if q is None or q.kind in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD):
            problems.append(f"no parameter {p.name!r}")
            continue
        if p.kind != kinds.KEYWORD_ONLY and (i >= len(our_list) or our_list[i].name != p.name):
            problems.append(f"{p.name!r} is not positional argument {i}")
        if p.default is not p.empty and q.default is q.empty:
            problems.append(f"{p.name!r} is optional in the reference")
        if not _same_default(p.default, q.default):
            problems.append(f"{p.name!r} defaults to {q.default!r}, not {p.default!r}")
    extra = [q for q in our_list if q.name not in {p.name for p in ref_params}]
    problems += [
        f"extra required parameter {q.name!r}"
        for q in extra
        if q.default is q.empty and q.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)
    ]
    return problems


def _shared_callables():
    for module_name in MODULES:
        reference = importlib.import_module(module_name)
        for name in sorted(public_names(reference)):
            obj = getattr(reference, name)
            if callable(obj) and hasattr(ours(module_name), name):
                yield module_name, name


@pytest.mark.parametrize("module_name,name", list(_shared_callables()))
def test_reference_calls_fit_our_signatures(module_name, name):
    reference = getattr(importlib.import_module(module_name), name)
    key = f"{reference.__module__}.{reference.__qualname__}"
    if key in SIGNATURE_DIFFERS:
        pytest.skip(SIGNATURE_DIFFERS[key])
    problems = _incompatibilities(reference, getattr(ours(module_name), name))
    assert not problems, f"kv{module_name}.{name}: " + "; ".join(problems)


def test_signature_check_catches_a_moved_parameter():
    def reference(name, device=None, download_root=None): ...

    def mine(name, device=None, dtype=None, download_root=None): ...

    assert _incompatibilities(reference, mine) == ["'download_root' is not positional argument 2"]


# ---------------------------------------------------------------------------------------------------------
# behaviour of the cheap names


@pytest.mark.parametrize("module_name", ["whisper.audio", "whisper.tokenizer", "whisper.utils"])
def test_constants_equal_the_reference(module_name):
    reference = importlib.import_module(module_name)
    for name in own_constants(reference):
        assert getattr(ours(module_name), name) == getattr(reference, name), name


def test_utils_helpers_equal_the_reference():
    from kvwhisper import utils

    ru = whisper.utils
    for seconds in (0, 0.0004, 0.0005, 0.001, 1.5, 59.9995, 61.25, 3599.999, 3600, 3661.007, 86399.9999, 1e6):
        for hours in (False, True):
            for marker in (".", ","):
                assert utils.format_timestamp(seconds, hours, marker) == ru.format_timestamp(
                    seconds, hours, marker
                )
    assert utils.exact_div(480000, 160) == ru.exact_div(480000, 160) == 3000
    with pytest.raises(ValueError):
        utils.exact_div(10, 3)
    for text in ("True", "False"):
        assert utils.str2bool(text) is ru.str2bool(text)
    for bad in ("true", "yes", ""):
        with pytest.raises(ValueError):
            utils.str2bool(bad)
    for text in ("None", "3", "-7"):
        assert utils.optional_int(text) == ru.optional_int(text)
    for text in ("None", "2.5", "1e-3"):
        assert utils.optional_float(text) == ru.optional_float(text)
    for text in ("", "hello hello hello hello", "Ünïcödé, 日本語, " * 20):
        assert utils.compression_ratio(text) == ru.compression_ratio(text)
    assert utils.make_safe("Ünïcödé 日本語") == ru.make_safe("Ünïcödé 日本語")
    assert utils.system_encoding == ru.system_encoding


def _result() -> dict:
    """A small transcript in the reference's dict form, with word timestamps."""
    words = [
        [(" Hello", 0.0, 0.4), (" there,", 0.5, 0.9), (" general", 1.0, 1.6), (" Kenobi.", 1.7, 2.4)],
        [(" You", 6.0, 6.2), (" are", 6.3, 6.5), (" a", 6.6, 6.7), (" bold", 6.8, 7.2), (" one.", 7.3, 7.9)],
    ]
    segments = []
    for i, seg in enumerate(words):
        ws = [{"word": w, "start": s, "end": e, "probability": 0.9} for w, s, e in seg]
        text = "".join(w for w, _, _ in seg)
        segments.append(
            {"id": i, "seek": 0, "start": seg[0][1], "end": seg[-1][2], "text": text, "words": ws}
        )
    return {"text": "".join(s["text"] for s in segments), "segments": segments, "language": "en"}


@pytest.mark.parametrize(
    "fmt,options",
    [
        ("srt", {}),
        ("srt", {"max_line_width": 12, "max_line_count": 2, "highlight_words": True}),
        ("vtt", {"max_words_per_line": 2}),
        ("txt", {}),
        ("tsv", {}),
        ("json", {}),
    ],
)
def test_get_writer_writes_the_reference_file(tmp_path, fmt, options):
    from kvwhisper import utils

    (tmp_path / "ours").mkdir()
    (tmp_path / "ref").mkdir()
    result = _result()
    utils.get_writer(fmt, tmp_path / "ours")(json.loads(json.dumps(result)), "talk.mp3", options)
    whisper.utils.get_writer(fmt, str(tmp_path / "ref"))(result, "talk.mp3", options)
    assert (tmp_path / "ours" / f"talk.{fmt}").read_bytes() == (tmp_path / "ref" / f"talk.{fmt}").read_bytes()
    assert utils.get_start(result["segments"]) == whisper.utils.get_start(result["segments"])
    assert utils.get_end(result["segments"]) == whisper.utils.get_end(result["segments"])


def test_timing_signal_pieces_equal_the_reference():
    rt, kt = whisper.timing, kvwhisper.timing
    x = torch.randn(3, 5, 40, generator=torch.Generator().manual_seed(0))
    for width in (1, 3, 7):
        assert torch.equal(kt.median_filter(x, width), rt.median_filter(x, width))
    for shape in ((1, 1), (4, 9), (9, 4), (12, 30)):
        cost = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
        np.testing.assert_array_equal(kt.dtw(cost), rt.dtw(cost))  # the reference takes a tensor
        array = cost.double().numpy()
        np.testing.assert_array_equal(kt.dtw_cpu(array), rt.dtw_cpu(array))


def test_tokenizer_names_equal_the_reference():
    rt, kt = whisper.tokenizer, kvwhisper.tokenizer
    ref = rt.get_tokenizer(True, language="fr", task="translate")
    mine = kt.get_tokenizer(True, language="fr", task="translate")
    assert isinstance(mine, kt.Tokenizer)
    assert mine.sot_sequence == ref.sot_sequence and mine.timestamp_begin == ref.timestamp_begin
    text = " Bonjour, le monde !"
    assert mine.encode(text) == ref.encode(text) and mine.decode(ref.encode(text)) == text
    assert kt.get_encoding("gpt2").n_vocab == rt.get_encoding("gpt2").n_vocab


# ---------------------------------------------------------------------------------------------------------
# decoding: the filters, token decoders and rankers with the reference's constructors


def test_logit_filters_mask_what_the_reference_masks():
    rd, kd = whisper.decoding, kvwhisper.decoding
    assert issubclass(kd.SuppressBlank, kd.LogitFilter)
    ref_tok = whisper.tokenizer.get_tokenizer(True, language="en", task="transcribe")
    tok = kvwhisper.tokenizer.get_tokenizer(True, language="en", task="transcribe")
    begin, tb = len(tok.sot_sequence), tok.timestamp_begin
    pairs = [
        (rd.SuppressBlank(ref_tok, begin), kd.SuppressBlank(tok, begin)),
        (rd.SuppressTokens([5, 3, 3, 100]), kd.SuppressTokens([5, 3, 3, 100])),
        (rd.ApplyTimestampRules(ref_tok, begin, 50), kd.ApplyTimestampRules(tok, begin, 50)),
        (rd.ApplyTimestampRules(ref_tok, begin, None), kd.ApplyTimestampRules(tok, begin, None)),
    ]
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        n = seed % 5  # sampled tokens so far: text and timestamps mixed
        text, stamps = (
            torch.randint(0, 200, (3, n), generator=g),
            torch.randint(tb, tb + 30, (3, n), generator=g),
        )
        sampled = torch.where(torch.rand(3, n, generator=g) < 0.5, stamps, text)
        tokens = torch.cat([torch.tensor(tok.sot_sequence).expand(3, -1), sampled], dim=1)
        logits = torch.randn(3, 51865, generator=g) * 3
        logits[:, tb:] += torch.randn(1, generator=g).item() * 4  # timestamps sometimes win rule 4
        for reference, mine in pairs:
            a, b = logits.clone(), logits.clone()
            reference.apply(a, tokens)
            mine.apply(b, tokens)
            assert torch.equal(a.isinf(), b.isinf()), (seed, type(mine).__name__)


class _Rearranges:
    """The `inference` a BeamSearchDecoder reports source rows to."""

    def __init__(self):
        self.calls: list[list[int]] = []

    def rearrange_kv_cache(self, source_indices) -> None:
        self.calls.append(list(source_indices))


@pytest.mark.parametrize("seed", range(4))
def test_beam_search_decoder_equals_the_reference(seed):
    n_audio, beams, vocab, eot = 2, 3, 40, 39
    g = torch.Generator().manual_seed(seed)
    inferences = [_Rearranges(), _Rearranges()]
    decoders = [
        whisper.decoding.BeamSearchDecoder(beams, eot, inferences[0], patience=1.5),
        kvwhisper.decoding.BeamSearchDecoder(beams, eot, inferences[1], patience=1.5),
    ]
    tokens = [torch.zeros(n_audio * beams, 3, dtype=torch.long) for _ in decoders]
    sums = [torch.zeros(n_audio * beams) for _ in decoders]
    for step in range(10):
        logits = torch.randn(n_audio * beams, vocab, generator=g) * 2
        logits[:, eot] += step * 1.2  # sequences finish after a few steps
        if step == 0:  # the beams start as copies of each other: identical rows, identical logits
            logits = logits.view(n_audio, beams, vocab)[:, :1].expand(-1, beams, -1).reshape(-1, vocab)
        before = tokens[0]
        completed = []
        for i, decoder in enumerate(decoders):
            tokens[i], done = decoder.update(tokens[i], logits.clone(), sums[i])
            completed.append(done)
        assert torch.equal(tokens[0], tokens[1]) and torch.equal(sums[0], sums[1])
        assert completed[0] == completed[1] and isinstance(completed[1], bool)
        # the same source rows, up to identical rows (copies at the first step)
        assert torch.equal(before[inferences[0].calls[-1]], before[inferences[1].calls[-1]])
        if completed[0]:
            break
    assert completed[0], "no decode finished: the test does not reach the finishing logic"
    assert decoders[0].finished_sequences == decoders[1].finished_sequences
    shaped = [(t.view(n_audio, beams, -1), s.view(n_audio, beams)) for t, s in zip(tokens, sums)]
    (ref_tokens, ref_lps), (our_tokens, our_lps) = (d.finalize(*a) for d, a in zip(decoders, shaped))
    assert [[t.tolist() for t in group] for group in our_tokens] == [
        [t.tolist() for t in group] for group in ref_tokens
    ]
    assert our_lps == ref_lps


def test_greedy_decoder_and_ranker_equal_the_reference():
    rd, kd = whisper.decoding, kvwhisper.decoding
    reference, mine = rd.GreedyDecoder(0.0, 39), kd.GreedyDecoder(0.0, 39)
    g = torch.Generator().manual_seed(1)
    ref_tokens = our_tokens = torch.zeros(4, 2, dtype=torch.long)
    ref_sums, our_sums = torch.zeros(4), torch.zeros(4)
    for step in range(6):
        logits = torch.randn(4, 40, generator=g)
        logits[:, 39] += step * 0.5
        ref_tokens, ref_done = reference.update(ref_tokens, logits.clone(), ref_sums)
        our_tokens, our_done = mine.update(our_tokens, logits.clone(), our_sums)
        assert torch.equal(our_tokens, ref_tokens) and torch.equal(our_sums, ref_sums)
        assert bool(our_done) == bool(ref_done)
    ref_final = reference.finalize(ref_tokens.view(2, 2, -1), ref_sums.view(2, 2))
    our_final = mine.finalize(our_tokens.view(2, 2, -1), our_sums.view(2, 2))
    assert torch.equal(our_final[0], ref_final[0]) and our_final[1] == ref_final[1]

    candidates = [[torch.arange(5), torch.arange(9)], [torch.arange(3), torch.arange(4), torch.arange(2)]]
    logprobs = [[-2.0, -3.0], [-1.0, -1.2, -0.9]]
    for penalty in (None, 0.0, 0.6, 1.0):
        expected = [int(i) for i in rd.MaximumLikelihoodRanker(penalty).rank(candidates, logprobs)]
        assert kd.MaximumLikelihoodRanker(penalty).rank(candidates, logprobs) == expected
    assert issubclass(kd.MaximumLikelihoodRanker, kd.SequenceRanker)
    assert issubclass(kd.GreedyDecoder, kd.TokenDecoder) and issubclass(kd.BeamSearchDecoder, kd.TokenDecoder)


# ---------------------------------------------------------------------------------------------------------
# timing: the reference's call form (segment dicts, the window's mel) on a tiny random-weight model


def test_add_word_timestamps_in_the_reference_call_form():
    model = tiny_random_model(seed=3)
    ref_model = reference_copy(model)
    tok = kvwhisper.tokenizer.get_tokenizer(multilingual=False)
    ref_tok = whisper.tokenizer.get_tokenizer(False)
    mel = random_mel(seed=11)[0]  # (80, 3000), as the reference's transcribe passes it
    tb, segments, t = tok.timestamp_begin, [], 0
    for text in (" And so, my fellow Americans:", " ask not what your country can do for you."):
        tokens = [tb + t, *tok.encode(text), tb + t + 150]
        segments.append({"seek": 500, "start": 5 + t * 0.02, "end": 5 + (t + 150) * 0.02, "tokens": tokens})
        t += 150
    ref_segments = json.loads(json.dumps(segments))
    common = {"num_frames": 3000, "last_speech_timestamp": 4.0}
    kvwhisper.timing.add_word_timestamps(segments=segments, model=model, tokenizer=tok, mel=mel, **common)
    whisper.timing.add_word_timestamps(
        segments=ref_segments, model=ref_model, tokenizer=ref_tok, mel=mel, **common
    )
    for mine, reference in zip(segments, ref_segments):
        assert (mine["start"], mine["end"]) == pytest.approx(
            (reference["start"], reference["end"]), abs=0.021
        )
        assert [w["word"] for w in mine["words"]] == [w["word"] for w in reference["words"]]
        for a, b in zip(mine["words"], reference["words"]):
            assert (a["start"], a["end"]) == pytest.approx((b["start"], b["end"]), abs=0.021)
    alignment = kvwhisper.timing.find_alignment(model, tok, tok.encode(" Ask what."), mel, 3000)
    assert all(isinstance(w, kvwhisper.timing.WordTiming) for w in alignment) and alignment


def test_normalizers_are_there():
    normalizers = importlib.import_module("kvwhisper.normalizers")
    for name in ("BasicTextNormalizer", "EnglishTextNormalizer"):  # behaviour: tests/test_normalizers.py
        assert callable(getattr(normalizers, name))
