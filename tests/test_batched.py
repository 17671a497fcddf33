"""Batched decoding and transcription on tiny random weights: every window, every recording, equal to itself
decoded alone, whatever else is in the batch (ragged prompts, beams, samples, fallbacks, lengths, rows
joining and leaving). Real weights and real speech: test_batched_speech.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_mel, tiny_fp16_valued_model

import kvwhisper
from kvwhisper.audio.files import duration_hint
from kvwhisper.cpu import kernels
from kvwhisper.decoding import DecodingOptions, DecodingTask, decode
from kvwhisper.decoding.batch import BatchDecoder
from kvwhisper.model.ragged import step_windows
from kvwhisper.transcribe.batched import BatchTranscriptionError, longest_first, quiet_cuts, transcribe_iter

# where each row is computed on its own (the CPU kernels over 2-byte weights), batched equals alone bit for
# bit; elsewhere (oneDNN's products, whose blocking follows the row count) to fp32 rounding
EXACT = kernels.available()


def assert_same_logits(a: torch.Tensor, b: torch.Tensor) -> None:
    if EXACT:
        assert torch.equal(a, b), (a - b).abs().max()
    else:
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def model():
    return tiny_fp16_valued_model(3)


@pytest.fixture(scope="module")
def mels():
    return random_mel(5, n=4)


def _prefilled(model, mel, prompt_len, rows, seed):
    cache = model.new_cache(rows, 64)
    model.fill_cross(cache, model.embed_audio(mel[None]))
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, 1000, (rows, prompt_len), generator=g)
    with torch.no_grad():
        model.decoder(prompt, cache)
    return cache


def test_step_windows_equals_each_window_alone(model, mels):
    """Windows at positions 3, 9 and 5 with 1, 5 and 2 rows: one call gives each the logits and the cache
    that its own decoder call gives it."""
    specs = [(3, 1), (9, 5), (5, 2)]
    together = [_prefilled(model, mels[i], n, g, i) for i, (n, g) in enumerate(specs)]
    alone = [_prefilled(model, mels[i], n, g, i) for i, (n, g) in enumerate(specs)]
    tokens = [
        torch.randint(0, 1000, (g, 1), generator=torch.Generator().manual_seed(10 + g)) for _, g in specs
    ]
    with torch.no_grad():
        got = step_windows(model.decoder, tokens, together)
        expected = [model.decoder(t, c)[0] for t, c in zip(tokens, alone)]
    for g, e, a, b in zip(got, expected, together, alone):
        assert_same_logits(g, e)
        assert a.position == b.position
        assert_same_logits(a.self_k[:, :, :, : a.position], b.self_k[:, :, :, : b.position])


def test_a_rows_logits_do_not_depend_on_its_neighbours(model, mels):
    """The same window stepped with 0, 1 and 3 other windows of other lengths and row counts."""
    results = []
    for others in ([], [(7, 3)], [(2, 1), (11, 4), (6, 2)]):
        caches = [_prefilled(model, mels[0], 4, 2, 0)]
        caches += [_prefilled(model, mels[1 + i % 3], n, g, 20 + i) for i, (n, g) in enumerate(others)]
        tokens = [torch.full((c.batch, 1), 7) for c in caches]
        with torch.no_grad():
            results.append(step_windows(model.decoder, tokens, caches)[0])
    for r in results[1:]:
        assert_same_logits(r, results[0])


def test_step_windows_refuses_mismatched_tokens(model, mels):
    cache = _prefilled(model, mels[0], 3, 2, 0)
    with pytest.raises(ValueError, match="one token per row"):
        step_windows(model.decoder, [torch.zeros(3, 1, dtype=torch.long)], [cache])
    with pytest.raises(ValueError, match="one token per row"):
        step_windows(model.decoder, [torch.zeros(2, 2, dtype=torch.long)], [cache])


OPTIONS = [
    DecodingOptions(sample_len=12),
    DecodingOptions(sample_len=10, beam_size=3),
    DecodingOptions(sample_len=8, prompt=[5, 6, 7, 8, 9, 10, 11], beam_size=2),
    DecodingOptions(sample_len=9, temperature=0.8, best_of=3),
    DecodingOptions(sample_len=7, without_timestamps=True, prefix=[12, 13]),
]


def test_batch_decoder_gives_each_window_its_alone_result(model, mels):
    """Twenty windows of five kinds (greedy, beams, a prompt, samples, a prefix) join the batch four at a
    time while others are mid-decode and leave when they end; each result is its decode alone, samples
    included (each window draws from its own generator)."""
    decoder = BatchDecoder(model)
    features = decoder.encode(list(mels))
    jobs, results = [(i, j) for i in range(4) for j in range(len(OPTIONS))], {}
    while jobs or len(decoder):
        for i, j in jobs[:4]:
            g = torch.Generator().manual_seed(100 * i + j)
            job = decoder.add((i, j), DecodingTask(model, OPTIONS[j], g), features[i])
            if job.result is not None:
                results[(i, j)] = job.result
        jobs = jobs[4:]
        if len(decoder):
            for job in decoder.step():
                results[job.key] = job.result
    assert len(results) == 4 * len(OPTIONS)
    assert decoder.rows_stepped / decoder.steps > 5  # windows were decoded together
    for (i, j), got in results.items():
        alone = DecodingTask(model, OPTIONS[j], torch.Generator().manual_seed(100 * i + j)).run(
            mels[i : i + 1]
        )[0]
        assert got.tokens == alone.tokens, (i, j)
        if EXACT:
            assert got.avg_logprob == alone.avg_logprob and got.no_speech_prob == alone.no_speech_prob
        else:
            assert abs(got.avg_logprob - alone.avg_logprob) < 1e-5


def test_sampling_generator_makes_a_decode_repeatable(model, mels):
    options = DecodingOptions(sample_len=8, temperature=1.0)
    runs = [DecodingTask(model, options, torch.Generator().manual_seed(4)).run(mels[:1])[0] for _ in range(2)]
    assert runs[0].tokens == runs[1].tokens
    torch.manual_seed(4)  # without a generator: torch's global one, as the reference
    a = decode(model, mels[0], options)
    torch.manual_seed(4)
    assert decode(model, mels[0], options).tokens == a.tokens


DATA = Path(__file__).parent / "data"
SHORT = dict(sample_len=24, temperature=(0.0, 0.5, 1.0))  # random weights: short decodes, few fallbacks


def _recordings():
    """Random waveforms of 3 s to 75 s: one to three windows each, random enough for fallbacks."""
    g = np.random.default_rng(0)
    return [(g.standard_normal(int(s * 16000)) * 0.1).astype(np.float32) for s in (3, 75, 31, 12, 48, 0.5)]


@pytest.mark.parametrize("options", [dict(), dict(beam_size=2, best_of=2, word_timestamps=True)])
def test_transcribing_a_list_equals_each_recording_alone(model, options):
    """Recordings of mixed lengths, some windows falling back to sampling, batch size 3 (so recordings
    wait and join as others finish, opened longest first): each result, in input order, equals the recording transcribed alone with the same seed."""
    audios = _recordings()
    options = dict(options, **SHORT)
    batched = kvwhisper.transcribe(model, audios, batch_size=3, seed=7, **options)
    for audio, got in zip(audios, batched):
        alone = kvwhisper.transcribe(model, audio, seed=7, **options)
        assert got.to_dict() == alone.to_dict()
    assert any(s.temperature > 0 for r in batched for s in r.segments)  # fallbacks happened


def test_a_bad_recording_fails_alone(model, tmp_path):
    """An unreadable file among good ones: the iterator yields its error, the others their results; the
    list form raises after the others finished, with their results in the exception."""
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....WAVEfmt garbage")
    audios = [_recordings()[0], str(bad), _recordings()[3]]
    yielded = dict(transcribe_iter(model, audios, batch_size=2, seed=1, **SHORT))
    assert sorted(yielded) == [0, 1, 2]
    assert isinstance(yielded[1], kvwhisper.AudioError)
    with pytest.raises(BatchTranscriptionError, match="1 of 3 recordings failed") as info:
        kvwhisper.transcribe(model, audios, seed=1, **SHORT)
    results = info.value.results
    assert isinstance(results[1], kvwhisper.AudioError) and list(info.value.errors) == [1]
    for i in (0, 2):
        assert results[i].to_dict() == kvwhisper.transcribe(model, audios[i], seed=1, **SHORT).to_dict()


def test_bad_options_are_refused_before_any_recording_is_read(model):
    with pytest.raises(ValueError, match="temperature"):
        kvwhisper.transcribe(model, ["/no/such/file.wav"], temperature=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        list(transcribe_iter(model, [_recordings()[0]], batch_size=0))


def test_a_list_longer_than_the_batch_is_opened_longest_first(tmp_path):
    """Waveforms by their length, files by their headers; sources whose length is unknown (bytes, file
    objects, unreadable files) last in their order; a short list and an iterator keep their order."""
    wav = np.zeros(16000 * 7, dtype=np.float32)
    flac = DATA / "jfk.flac"  # 11 s
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    audios = [np.zeros(16000, np.float32), str(bad), wav, b"RIFF", str(flac), torch.zeros(2, 16000 * 3)]
    assert [i for i, _ in longest_first(audios, batch_size=2)] == [4, 2, 5, 0, 1, 3]
    assert [i for i, _ in longest_first(audios, batch_size=6)] == [0, 1, 2, 3, 4, 5]
    assert [i for i, _ in longest_first(iter(audios), batch_size=2)] == [0, 1, 2, 3, 4, 5]
    assert duration_hint(str(flac)) == pytest.approx(11.0, abs=0.1)
    assert duration_hint(str(bad)) is None and duration_hint(str(tmp_path)) is None
    assert duration_hint("-") is None and duration_hint(b"RIFF") is None


def test_quiet_cuts_find_the_silence_near_each_boundary():
    g = np.random.default_rng(1)
    audio = (g.standard_normal(16000 * 40) * 0.3).astype(np.float32)
    audio[16000 * 21 : 16000 * 21 + 3200] = 0.0  # 200 ms of silence 1 s after the middle
    (cut,) = quiet_cuts(audio, 2)
    assert 16000 * 21 <= cut <= 16000 * 21 + 3200
    assert quiet_cuts(audio, 4, search=0.0) == [16000 * 10, 16000 * 20, 16000 * 30]


def test_one_long_recording_split_into_parts(model):
    """batch_size on one recording: parts at quiet points, transcribed together, their segments joined in
    time order with ids renumbered; batch_size=1 is the sequential run."""
    g = np.random.default_rng(2)
    audio = (g.standard_normal(16000 * 130) * 0.1).astype(np.float32)
    split = kvwhisper.transcribe(model, audio, batch_size=2, seed=3, temperature=0.0)
    assert [s.id for s in split.segments] == list(range(len(split.segments)))
    starts = [s.start for s in split.segments]
    assert starts == sorted(starts) and all(s.end <= 130.0 + 1e-6 for s in split.segments)
    assert any(s.start > 60 for s in split.segments)  # the second part's segments, shifted
    sequential = kvwhisper.transcribe(model, audio, seed=3, temperature=0.0)
    assert kvwhisper.transcribe(model, audio, batch_size=1, seed=3, temperature=0.0) == sequential
