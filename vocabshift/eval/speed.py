"""Inference speed on a fixed text: scoring throughput and generation, with medians and spreads.

A target tokenizer with lower fertility turns the same text into fewer tokens, so a model needs
fewer forward positions (and fewer decoding steps) per word; that, not a faster model, is where
cross-lingual vocabulary adaptation gets its inference speed-ups (Yamaguchi et al. 2024,
arXiv:2402.10712). The measures therefore fix the *text* and count time per word.

Measures (each model, one after the other, on ``device`` in its dtype):

* **scoring**: every line of the speed text is a document; each is encoded (with the tokenizer's
  special tokens), cut into ``seq_len`` pieces, and the pieces run through the model in batches of
  ``batch_size`` (longest first, right-padded, under ``torch.inference_mode``): words/s, bytes/s,
  tokens/s and seconds per 1,000 words of the text. Every model has it (masked LMs too).
* **generation** (causal LMs): the prompt is the first :data:`PROMPT_WORDS` words of the speed
  text after the prefix token. *Prefill* is one forward over the prompt with the KV cache on
  (prompt tokens/s). *Decode* is greedy ``generate`` of exactly ``new_tokens`` tokens
  (``min_new_tokens = max_new_tokens``, no sampling, KV cache on); a logits processor stamps the
  clock after every forward, so decode time covers the ``new_tokens - 1`` steps after the first
  token (the first one comes out of the prefill): decode tokens/s = (new_tokens - 1) / that time.
  **Seconds per 1,000 words of output** = 1000 · new_tokens · (decode seconds per token) / words of
  the decoded text: what it costs to write text, which a lower-fertility tokenizer makes cheaper.

Statistics (:func:`time_runs`): ``warmup`` untimed runs, then timed runs until at least ``min_repeats``
runs are in *and* the median is stable — half the interquartile range at most ``tolerance`` of the
median — or a cap is hit (``max_repeats`` runs, or ``max_seconds`` of timed time; the cap wins over
``min_repeats``, and the result says why it stopped). Each run records wall time
(``time.perf_counter``, CUDA synchronized) and process CPU time (``time.process_time``, all
threads: on a CPU, CPU / wall is the parallelism torch got). Reported: median and interquartile
range (quartiles by linear interpolation, numpy's default), min and max, and every run's times.

Speed-up old/new (:func:`speedup_range`): the ratio of the two medians of seconds per 1,000 words,
with a range from the quartiles: ``old Q1 / new Q3`` to ``old Q3 / new Q1``, i.e. from a fast
old run against a slow new one to a slow old run against a fast new one. The models run one
after the other (never both loaded), so their runs are not paired; this range is the honest
spread of independent samples, conservative by design. The verdict is ``faster`` only when the
whole range is above 1, ``slower`` when it is below 1, and ``within noise`` otherwise.

Timings on a shared CPU are noisy (other processes steal cores); the CPU time and the spread are
there to show it. Compare runs only on the same device, dtype and thread count.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vocabshift.errors import ConfigError

log = logging.getLogger(__name__)

PROMPT_WORDS = 100  # words of the speed text in the generation prompt
STOP_REASONS = ("stable", "max_repeats", "max_seconds")
VERDICTS = ("faster", "slower", "within noise")


# -- statistics ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepeatRule:
    """When to stop timing one measure (see the module docstring)."""

    warmup: int = 1  # untimed runs first
    min_repeats: int = 5  # timed runs at least (unless a cap stops earlier)
    max_repeats: int = 30  # timed runs at most
    max_seconds: float = 30.0  # timed seconds at most (summed wall time of the runs)
    tolerance: float = 0.05  # stable when (Q3 - Q1) / 2 <= tolerance * median

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.min_repeats < 1 or self.max_repeats < 1 or self.max_seconds <= 0 \
                or self.tolerance < 0:
            raise ConfigError(f"speed timing needs warmup >= 0, repeats >= 1, max repeats >= 1, max seconds > 0 and "
                              f"tolerance >= 0, got {self}")


@dataclass
class Timing:
    """Timed runs of one measure: every run's wall and CPU seconds and their summary."""

    wall: list[float]  # seconds per run, in run order
    cpu: list[float]  # process CPU seconds per run (all threads)
    warmup: int
    stopped: str  # one of STOP_REASONS
    median: float
    q1: float
    q3: float
    min: float
    max: float
    relative_half_iqr: float  # (q3 - q1) / 2 / median: the stability the stopping rule tests
    cpu_median: float

    @property
    def runs(self) -> int:
        return len(self.wall)


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """Q1, median and Q3 by linear interpolation between order statistics (numpy's default method)."""
    if not values:
        raise ValueError("quartiles of no values")
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def relative_half_iqr(values: Sequence[float]) -> float:
    """Half the interquartile range over the median (inf for a zero median)."""
    q1, median, q3 = quartiles(values)
    return (q3 - q1) / 2 / median if median > 0 else float("inf")


def stop_reason(wall: Sequence[float], rule: RepeatRule) -> str | None:
    """Why timing stops after these runs (one of :data:`STOP_REASONS`), or None to run again."""
    n = len(wall)
    if n >= rule.min_repeats and relative_half_iqr(wall) <= rule.tolerance:
        return "stable"
    if n >= rule.max_repeats:
        return "max_repeats"
    if n >= 1 and sum(wall) >= rule.max_seconds:
        return "max_seconds"
    return None


def summarize(wall: Sequence[float], cpu: Sequence[float], *, warmup: int, stopped: str) -> Timing:
    """The :class:`Timing` of these runs."""
    q1, median, q3 = quartiles(wall)
    return Timing(wall=list(wall), cpu=list(cpu), warmup=warmup, stopped=stopped, median=median, q1=q1, q3=q3,
                  min=min(wall), max=max(wall), relative_half_iqr=relative_half_iqr(wall),
                  cpu_median=statistics.median(cpu))


def time_runs(run: Callable[[], tuple[float, float]], rule: RepeatRule) -> Timing:
    """Call ``run`` (which times itself and returns ``(wall, cpu)`` seconds) as ``rule`` says."""
    for _ in range(rule.warmup):
        run()
    wall: list[float] = []
    cpu: list[float] = []
    while (stopped := stop_reason(wall, rule)) is None:
        w, c = run()
        wall.append(max(w, 1e-9))
        cpu.append(c)
    return summarize(wall, cpu, warmup=rule.warmup, stopped=stopped)


@dataclass
class Speedup:
    """old / new seconds per 1,000 words, with the quartile range of :func:`speedup_range`."""

    measure: str  # "scoring" or "generation"
    estimate: float  # old median / new median
    low: float  # old Q1 / new Q3
    high: float  # old Q3 / new Q1
    verdict: str  # one of VERDICTS, from the range


def speedup_range(old: Sequence[float], new: Sequence[float], measure: str) -> Speedup:
    """Speed-up of ``new`` over ``old`` from per-run times of the same work (lower is faster)."""
    o1, om, o3 = quartiles(old)
    n1, nm, n3 = quartiles(new)
    low, high = o1 / n3, o3 / n1
    verdict = "faster" if low > 1 else "slower" if high < 1 else "within noise"
    return Speedup(measure=measure, estimate=om / nm, low=low, high=high, verdict=verdict)


# -- the measures --------------------------------------------------------------------------------------------


@dataclass
class ScoringSpeed:
    """A per-document forward pass over the whole speed text."""

    documents: int
    words: int
    bytes: int
    tokens: int  # with each document's special tokens
    sequences: int  # seq_len pieces
    batch_size: int
    seq_len: int
    timing: Timing
    words_per_second: float
    bytes_per_second: float
    tokens_per_second: float
    seconds_per_1000_words: float
    seconds_per_1000_words_runs: list[float]  # per timed run, for the speed-up


@dataclass
class GenerationSpeed:
    """Prefill of a prompt and greedy decoding of exactly ``new_tokens`` tokens."""

    prompt_words: int
    prompt_tokens: int  # the prefix token included
    new_tokens: int
    prefill: Timing  # one forward over the prompt
    decode: Timing  # the new_tokens - 1 decoding steps after the first token
    prefill_tokens_per_second: float
    decode_tokens_per_second: float
    output_words: int
    output_text: str
    seconds_per_1000_words: float | None  # of output text; None when the output has no words
    seconds_per_1000_words_runs: list[float]
    deterministic: bool  # every run generated the same tokens


@dataclass
class SpeedResult:
    """Speed of one model on the fixed text."""

    device: str
    dtype: str
    threads: int  # torch CPU threads
    scoring: ScoringSpeed
    generation: GenerationSpeed | None  # None for masked LMs
    notes: list[str] = field(default_factory=list)


def count_words(text: str) -> int:
    """Whitespace-separated words: the unit of seconds per 1,000 words."""
    return len(text.split())


def speed_documents(text: str) -> list[str]:
    """The documents of the speed text: its non-blank lines."""
    return [line for line in text.splitlines() if line.strip()]


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device | str) -> tuple[float, float]:
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def scoring_batches(tokenizer: Any, documents: list[str], seq_len: int, batch_size: int,
                    device: torch.device | str) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int, int]:
    """``(input_ids, attention_mask)`` batches of the documents' ``seq_len`` pieces, the tokens and the pieces."""
    ids = tokenizer(documents, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    pieces = sorted((d[i:i + seq_len] for d in ids for i in range(0, len(d), seq_len)), key=len, reverse=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = []
    for start in range(0, len(pieces), batch_size):
        group = pieces[start:start + batch_size]
        inputs = torch.full((len(group), len(group[0])), pad, dtype=torch.long)
        mask = torch.zeros_like(inputs)
        for row, piece in enumerate(group):
            inputs[row, :len(piece)] = torch.tensor(piece)
            mask[row, :len(piece)] = 1
        batches.append((inputs.to(device), mask.to(device)))
    return batches, sum(len(d) for d in ids), len(pieces)


def measure_scoring(model: Any, tokenizer: Any, text: str, *, seq_len: int, batch_size: int, rule: RepeatRule,
                    device: torch.device | str = "cpu") -> ScoringSpeed:
    """Time the per-document forward pass over ``text`` (see the module docstring)."""
    if seq_len < 1 or batch_size < 1:
        raise ConfigError(f"scoring speed needs seq_len >= 1 and batch_size >= 1, got {seq_len}, {batch_size}")
    documents = speed_documents(text)
    words = sum(count_words(d) for d in documents)
    if words == 0:
        raise ConfigError("the speed text is empty", hint="give text with words (--speed-text or the corpus)")
    batches, tokens, pieces = scoring_batches(tokenizer, documents, seq_len, batch_size, device)

    def run() -> None:
        for ids, mask in batches:
            model(input_ids=ids, attention_mask=mask)

    timing = time_runs(lambda: _timed(run, device), rule)
    n_bytes = sum(len(d.encode("utf-8")) for d in documents)
    return ScoringSpeed(documents=len(documents), words=words, bytes=n_bytes, tokens=tokens, sequences=pieces,
                        batch_size=batch_size, seq_len=seq_len, timing=timing,
                        words_per_second=words / timing.median, bytes_per_second=n_bytes / timing.median,
                        tokens_per_second=tokens / timing.median,
                        seconds_per_1000_words=1000 * timing.median / words,
                        seconds_per_1000_words_runs=[1000 * t / words for t in timing.wall])


def _step_clock(device: torch.device | str) -> tuple[Any, list[tuple[float, float]]]:
    """A logits processor that stamps (wall, CPU) after every forward of ``generate``, and its stamps."""
    from transformers import LogitsProcessor

    stamps: list[tuple[float, float]] = []

    class StepClock(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            _sync(device)
            stamps.append((time.perf_counter(), time.process_time()))
            return scores

    return StepClock(), stamps


def generation_prompt(tokenizer: Any, text: str, limit: int) -> tuple[list[int], int]:
    """The prefix token and the first :data:`PROMPT_WORDS` words of ``text``, at most ``limit`` tokens; and its words."""
    from vocabshift.eval.lm import prefix_token_id

    words = " ".join(text.split()[:PROMPT_WORDS])
    ids = [prefix_token_id(tokenizer), *tokenizer(words, add_special_tokens=False)["input_ids"]][:limit]
    return ids, len(words.split())


def measure_generation(model: Any, tokenizer: Any, text: str, *, new_tokens: int, rule: RepeatRule,
                       device: torch.device | str = "cpu") -> GenerationSpeed:
    """Time prefill and greedy decoding of exactly ``new_tokens`` tokens (see the module docstring)."""
    from transformers import GenerationConfig, LogitsProcessorList

    from vocabshift.eval.lm import DEFAULT_WINDOW, max_positions

    if new_tokens < 2:
        raise ConfigError(f"generation speed needs at least 2 new tokens (one decoding step), got {new_tokens}")
    positions = max_positions(model.config) or DEFAULT_WINDOW
    if positions - new_tokens < 2:
        raise ConfigError(f"{new_tokens} new tokens leave no room for a prompt in the model's {positions} positions",
                          hint="lower --speed-new-tokens")
    ids, prompt_words = generation_prompt(tokenizer, text, positions - new_tokens)
    prompt = torch.tensor([ids], dtype=torch.long, device=device)
    mask = torch.ones_like(prompt)
    prefill = time_runs(lambda: _timed(lambda: model(input_ids=prompt, attention_mask=mask, use_cache=True), device),
                        rule)

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # A fresh GenerationConfig: the model's own (temperature, top_p, repetition penalty ...) must not apply.
    gen = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, num_beams=1,
                           use_cache=True, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
    clock, stamps = _step_clock(device)
    outputs: list[list[int]] = []

    def decode() -> tuple[float, float]:
        stamps.clear()
        out = model.generate(input_ids=prompt, attention_mask=mask, generation_config=gen,
                             logits_processor=LogitsProcessorList([clock]))
        outputs.append(out[0, prompt.shape[1]:].tolist())
        if len(stamps) != new_tokens:  # one forward per new token; anything else would time the wrong thing
            raise AssertionError(f"generate ran {len(stamps)} steps for {new_tokens} new tokens")
        return stamps[-1][0] - stamps[0][0], stamps[-1][1] - stamps[0][1]

    timing = time_runs(decode, rule)
    generated = outputs[-1]
    output_text = tokenizer.decode(generated, skip_special_tokens=True)
    output_words = count_words(output_text)
    per_run = [1000 * t / (new_tokens - 1) * new_tokens / output_words for t in timing.wall] if output_words else []
    return GenerationSpeed(
        prompt_words=prompt_words, prompt_tokens=len(ids), new_tokens=len(generated), prefill=prefill, decode=timing,
        prefill_tokens_per_second=len(ids) / prefill.median,
        decode_tokens_per_second=(new_tokens - 1) / timing.median, output_words=output_words,
        output_text=output_text, seconds_per_1000_words=statistics.median(per_run) if per_run else None,
        seconds_per_1000_words_runs=per_run, deterministic=all(o == generated for o in outputs))


def is_generative(model: Any) -> bool:
    """A causal LM that ``generate`` can drive."""
    from vocabshift.train.data import resolve_objective

    if not (hasattr(model, "can_generate") and model.can_generate()):
        return False
    try:
        return resolve_objective(model, "auto") == "clm"
    except ConfigError:
        return False


def measure_speed(model: Any, tokenizer: Any, text: str, *, seq_len: int, batch_size: int = 8,
                  new_tokens: int = 32, rule: RepeatRule | None = None,
                  device: torch.device | str = "cpu") -> SpeedResult:
    """Scoring throughput, and for a causal LM generation speed, of ``model`` on ``text``."""
    rule = rule or RepeatRule()
    torch.manual_seed(0)  # nothing here samples; in case a model's forward draws (dropout is off in eval mode)
    was_training = model.training
    model.eval()
    notes: list[str] = []
    try:
        with torch.inference_mode():
            scoring = measure_scoring(model, tokenizer, text, seq_len=seq_len, batch_size=batch_size, rule=rule,
                                      device=device)
            generation = None
            if is_generative(model):
                generation = measure_generation(model, tokenizer, text, new_tokens=new_tokens, rule=rule,
                                                device=device)
            else:
                notes.append(f"{type(model).__name__} is not a causal LM: scoring throughput only, no generation")
    finally:
        model.train(was_training)
    if generation is not None and generation.seconds_per_1000_words is None:
        notes.append("the generated text has no words: no seconds per 1,000 words of output")
    if generation is not None and not generation.deterministic:
        notes.append("greedy generation gave different tokens in different runs")
    dtype = next((str(p.dtype).removeprefix("torch.") for p in model.parameters()), "unknown")
    result = SpeedResult(device=str(device), dtype=dtype, threads=torch.get_num_threads(), scoring=scoring,
                         generation=generation, notes=notes)
    log.info("scoring: %d words, %.0f words/s (%d runs, %s)", scoring.words, scoring.words_per_second,
             scoring.timing.runs, scoring.timing.stopped)
    if generation is not None:
        log.info("generation: prefill %.0f tokens/s, decode %.1f tokens/s, %s s per 1,000 output words",
                 generation.prefill_tokens_per_second, generation.decode_tokens_per_second,
                 "-" if generation.seconds_per_1000_words is None else f"{generation.seconds_per_1000_words:.3f}")
    return result


def speedups(old: SpeedResult, new: SpeedResult) -> dict[str, Speedup]:
    """Speed-ups of new over old: ``scoring`` always, ``generation`` when both generated words."""
    out = {"scoring": speedup_range(old.scoring.seconds_per_1000_words_runs,
                                    new.scoring.seconds_per_1000_words_runs, "scoring")}
    if old.generation is not None and new.generation is not None \
            and old.generation.seconds_per_1000_words_runs and new.generation.seconds_per_1000_words_runs:
        out["generation"] = speedup_range(old.generation.seconds_per_1000_words_runs,
                                          new.generation.seconds_per_1000_words_runs, "generation")
    return out
