"""Inference speed (:mod:`vocabshift.eval.speed`): statistics on synthetic timings, generation on pico models.

No test asserts a wall-clock time: timings are synthetic, or only checked for shape and consistency.
"""

from __future__ import annotations

import itertools

import pytest
from transformers import AutoTokenizer

from tests.conftest import udhr_lines
from tests.test_train import pico_model
from vocabshift.errors import ConfigError
from vocabshift.eval.speed import (
    PROMPT_WORDS,
    RepeatRule,
    count_words,
    measure_generation,
    measure_speed,
    quartiles,
    relative_half_iqr,
    speedup_range,
    speedups,
    stop_reason,
    time_runs,
)
from vocabshift.surgery.checkpoint import load_model

# -- statistics on synthetic timings -------------------------------------------------------------------------


def test_quartiles_by_linear_interpolation():
    # numpy.percentile([1, 2, 3, 4, 10], [25, 50, 75]) == [2, 3, 4]
    assert quartiles([10.0, 1.0, 3.0, 2.0, 4.0]) == (2.0, 3.0, 4.0)
    # four values: positions 0.75, 1.5, 2.25 of the sorted list
    assert quartiles([1.0, 2.0, 3.0, 5.0]) == pytest.approx((1.75, 2.5, 3.5))
    assert quartiles([7.0]) == (7.0, 7.0, 7.0)
    assert relative_half_iqr([1.0, 2.0, 3.0, 5.0]) == pytest.approx((3.5 - 1.75) / 2 / 2.5)


def _scripted(walls: list[float]):
    """A run that returns the next scripted (wall, cpu) and counts its calls."""
    it = iter(walls)
    calls = []

    def run() -> tuple[float, float]:
        calls.append(1)
        w = next(it)
        return w, 2 * w

    return run, calls


def test_stops_when_the_median_is_stable_after_min_repeats():
    rule = RepeatRule(warmup=2, min_repeats=3, max_repeats=50, max_seconds=1e9, tolerance=0.05)
    # two warm-up runs (slow, ignored), then noisy runs that settle down
    walls = [9.0, 9.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0] + [1.0] * 40
    run, calls = _scripted(walls)
    timing = time_runs(run, rule)
    assert timing.stopped == "stable" and timing.warmup == 2
    assert timing.runs == len(calls) - 2
    assert timing.wall[:2] == [1.0, 2.0]  # warm-up runs are not in the timing
    assert timing.relative_half_iqr <= 0.05 and timing.median == 1.0
    assert timing.cpu == [2 * w for w in timing.wall] and timing.cpu_median == 2.0
    # the rule agrees with itself: one run fewer would not have stopped
    assert stop_reason(timing.wall[:-1], rule) is None


def test_min_repeats_even_when_already_stable():
    rule = RepeatRule(warmup=0, min_repeats=5, max_repeats=50, max_seconds=1e9)
    timing = time_runs(_scripted([1.0] * 50)[0], rule)
    assert timing.runs == 5 and timing.stopped == "stable"
    assert (timing.q1, timing.median, timing.q3, timing.min, timing.max) == (1.0,) * 5


def test_caps_on_runs_and_on_seconds():
    noisy = list(itertools.islice(itertools.cycle([1.0, 3.0]), 100))  # never stable at 5%
    timing = time_runs(_scripted(noisy)[0], RepeatRule(warmup=0, min_repeats=3, max_repeats=7, max_seconds=1e9))
    assert timing.runs == 7 and timing.stopped == "max_repeats"
    assert (timing.min, timing.max) == (1.0, 3.0)
    # the time cap wins over min_repeats: 4 s of timed runs reached after 2 runs of a 2-run-per-4-s pattern
    timing = time_runs(_scripted(noisy)[0], RepeatRule(warmup=0, min_repeats=10, max_repeats=50, max_seconds=4.0))
    assert timing.runs == 2 and timing.stopped == "max_seconds"


def test_repeat_rule_refuses_nonsense():
    with pytest.raises(ConfigError):
        RepeatRule(min_repeats=0)
    with pytest.raises(ConfigError):
        RepeatRule(max_seconds=0)


def test_speedup_range_from_quartiles_on_synthetic_runs():
    old = [2.0, 2.0, 2.2, 2.4, 2.4]  # Q1 2.0, median 2.2, Q3 2.4
    new = [1.0, 1.0, 1.1, 1.2, 1.2]  # Q1 1.0, median 1.1, Q3 1.2
    s = speedup_range(old, new, "scoring")
    assert s.estimate == pytest.approx(2.0)
    assert s.low == pytest.approx(2.0 / 1.2) and s.high == pytest.approx(2.4 / 1.0)
    assert s.verdict == "faster" and s.measure == "scoring"
    assert speedup_range(new, old, "scoring").verdict == "slower"
    # overlapping spreads: a median ratio above 1 is still within noise
    s = speedup_range([1.0, 1.1, 1.3, 1.5, 1.6], [0.9, 1.0, 1.2, 1.4, 1.5], "generation")
    assert s.estimate > 1 and s.low < 1 < s.high and s.verdict == "within noise"


# -- measures on pico models -----------------------------------------------------------------------------------

FAST = RepeatRule(warmup=1, min_repeats=2, max_repeats=3, max_seconds=5.0)


@pytest.fixture(scope="module")
def text() -> str:
    return "\n".join(udhr_lines("eng")[:6])


def test_generation_makes_exactly_n_new_tokens_greedily(llama, text):
    model, tok = load_model(llama).eval(), AutoTokenizer.from_pretrained(llama)
    g = measure_generation(model, tok, text, new_tokens=7, rule=FAST)
    assert g.new_tokens == 7  # min_new_tokens = max_new_tokens: never stops early at eos
    assert g.deterministic  # greedy: every run the same tokens
    assert g.prompt_words == min(PROMPT_WORDS, count_words(text))
    assert g.prompt_tokens == 1 + len(tok(" ".join(text.split()[:PROMPT_WORDS]), add_special_tokens=False)["input_ids"])
    assert g.decode.runs >= 2 and g.prefill.runs >= 2 and len(g.decode.cpu) == g.decode.runs
    assert g.decode_tokens_per_second == pytest.approx(6 / g.decode.median)  # 6 steps after the first token
    assert g.output_words == count_words(g.output_text)


def test_seconds_per_1000_output_words_on_a_hand_case(llama, text, monkeypatch):
    """Decode runs of 0.6 s over 6 steps (0.1 s per token), 7 tokens decoding to 'uno dos' (2 words):
    0.7 s for 2 words, 350 s per 1,000 words."""
    import vocabshift.eval.speed as speed

    model, tok = load_model(llama).eval(), AutoTokenizer.from_pretrained(llama)
    walls = iter([0.01] * 100)  # prefill runs
    decode_walls = iter([0.6] * 100)
    real_time_runs = speed.time_runs

    def fake_time_runs(run, rule):
        timing = real_time_runs(run, rule)  # run it for real (tokens, stamps), then replace the clock readings
        source = decode_walls if run.__name__ == "decode" else walls  # prefill is a lambda
        fake = [next(source) for _ in timing.wall]
        return speed.summarize(fake, fake, warmup=rule.warmup, stopped=timing.stopped)

    monkeypatch.setattr(speed, "time_runs", fake_time_runs)
    monkeypatch.setattr(tok, "decode", lambda ids, **kw: "uno dos")
    g = measure_generation(model, tok, text, new_tokens=7, rule=FAST)
    assert g.output_words == 2 and g.decode_tokens_per_second == pytest.approx(10.0)
    assert g.seconds_per_1000_words == pytest.approx(350.0)
    assert g.seconds_per_1000_words_runs == pytest.approx([350.0] * g.decode.runs)


def test_speed_of_a_causal_lm(llama, text):
    model, tok = load_model(llama).train(), AutoTokenizer.from_pretrained(llama)
    s = measure_speed(model, tok, text, seq_len=16, batch_size=4, new_tokens=5, rule=FAST)
    sc = s.scoring
    assert sc.documents == 6 and sc.words == count_words(text) and sc.bytes == sum(
        len(line.encode()) for line in text.splitlines())
    ids = tok(text.splitlines(), add_special_tokens=True)["input_ids"]
    assert sc.tokens == sum(map(len, ids)) and sc.sequences == sum(-(-len(i) // 16) for i in ids)
    assert sc.words_per_second == pytest.approx(sc.words / sc.timing.median)
    assert sc.seconds_per_1000_words == pytest.approx(1000 * sc.timing.median / sc.words)
    assert s.generation is not None and s.generation.new_tokens == 5 and not s.notes
    ups = speedups(s, s)
    assert ups["scoring"].estimate == pytest.approx(1.0) and ups["scoring"].verdict == "within noise"
    assert model.training  # timed in eval mode, then put back as it was


def test_scoring_runs_every_token_once_per_run(llama, text):
    model, tok = load_model(llama).eval(), AutoTokenizer.from_pretrained(llama)
    seen: list[int] = []
    model.register_forward_pre_hook(lambda _m, args, kwargs: seen.append(int(kwargs["attention_mask"].sum())),
                                    with_kwargs=True)
    from vocabshift.eval.speed import measure_scoring

    sc = measure_scoring(model, tok, text, seq_len=16, batch_size=4, rule=FAST)
    runs = sc.timing.runs + FAST.warmup
    assert sum(seen) == runs * sc.tokens  # every real token computed once per run (padding masked)


def test_masked_lm_gets_scoring_only_with_a_note(tmp_path, roberta_source, text):
    path = pico_model("bert", roberta_source, tmp_path / "bert")
    s = measure_speed(load_model(path), AutoTokenizer.from_pretrained(path), text, seq_len=32, new_tokens=5,
                      rule=FAST)
    assert s.generation is None and s.scoring.words == count_words(text)
    assert any("not a causal LM" in n and "scoring throughput only" in n for n in s.notes)
    assert set(speedups(s, s)) == {"scoring"}


def test_generation_refuses_a_single_new_token(llama, text):
    with pytest.raises(ConfigError, match="at least 2 new tokens"):
        measure_generation(load_model(llama), AutoTokenizer.from_pretrained(llama), text, new_tokens=1, rule=FAST)
