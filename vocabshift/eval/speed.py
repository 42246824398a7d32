"""Inference throughput on a fixed text: tokens per second and seconds per 1,000 words.

A target tokenizer with lower fertility turns the same text into fewer tokens, so a model needs
fewer forward positions per word; that, not a faster model, is where cross-lingual vocabulary
adaptation gets its inference speedups. The measure therefore fixes the *text*, not the number of
tokens: both models read the same words with the same ``seq_len`` and ``batch_size``.

How it is timed: the text is tokenized without special tokens, concatenated and cut into
``seq_len`` blocks (the last one shorter). Full blocks run in batches of ``batch_size`` and the
remainder as one more batch, so exactly the text's tokens are computed, no padding. After
``warmup`` untimed passes over the first batch, the whole text is run ``repeats`` times under
``torch.inference_mode`` (CUDA synchronized around each pass) and the median pass time is used:

* ``tokens_per_second = tokens / seconds``,
* ``seconds_per_1000_words = 1000 * seconds / words`` with ``words`` the whitespace-separated words
  of the text (for scripts written without spaces this is a text-length unit, still the same for
  both models),
* speedup of new over old = ``old.seconds_per_1000_words / new.seconds_per_1000_words``.

This is a forward-pass (prefill / encoding) measure that includes the LM head over the whole
vocabulary; it is not autoregressive generation with a KV cache.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from vocabshift.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class SpeedResult:
    """Throughput of one model on the fixed text."""

    words: int
    tokens: int
    sequences: int
    batch_size: int
    seq_len: int
    warmup: int
    repeats: int
    seconds: float  # median time of one pass over the whole text
    tokens_per_second: float
    seconds_per_1000_words: float
    device: str
    dtype: str
    seconds_per_pass: list[float] = field(default_factory=list)


def count_words(text: str) -> int:
    """Whitespace-separated words: the unit of ``seconds_per_1000_words``."""
    return len(text.split())


def text_blocks(tokenizer: Any, text: str, seq_len: int) -> tuple[list[list[int]], int]:
    """The text's token ids (no special tokens) cut into ``seq_len`` blocks, and the token count."""
    ids = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    return [ids[i:i + seq_len] for i in range(0, len(ids), seq_len)], len(ids)


def _batches(blocks: list[list[int]], batch_size: int, device: torch.device | str) -> list[torch.Tensor]:
    full = [b for b in blocks if len(b) == len(blocks[0])]
    rest = blocks[len(full):]  # at most one shorter, final block
    out = [torch.tensor(full[i:i + batch_size], dtype=torch.long, device=device)
           for i in range(0, len(full), batch_size)]
    out += [torch.tensor([b], dtype=torch.long, device=device) for b in rest]
    return out


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure_throughput(model: Any, tokenizer: Any, text: str, *, seq_len: int, batch_size: int = 8,
                       warmup: int = 1, repeats: int = 3, device: torch.device | str = "cpu") -> SpeedResult:
    """Time forward passes of ``model`` over ``text`` (see the module docstring for the measure)."""
    if repeats < 1 or warmup < 0 or batch_size < 1 or seq_len < 1:
        raise ConfigError(f"throughput needs repeats >= 1, warmup >= 0, batch_size >= 1 and seq_len >= 1, got "
                          f"{repeats}, {warmup}, {batch_size}, {seq_len}")
    words = count_words(text)
    blocks, n_tokens = text_blocks(tokenizer, text, seq_len)
    if words == 0 or n_tokens == 0:
        raise ConfigError("the speed text is empty", hint="give text with words (--speed-text or the corpus)")
    batches = _batches(blocks, batch_size, device)
    was_training = model.training
    model.eval()
    times: list[float] = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(input_ids=batches[0], attention_mask=torch.ones_like(batches[0]))
            for _ in range(repeats):
                _sync(device)
                start = time.perf_counter()
                for ids in batches:
                    model(input_ids=ids, attention_mask=torch.ones_like(ids))
                _sync(device)
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    seconds = max(statistics.median(times), 1e-9)
    dtype = next((str(p.dtype).removeprefix("torch.") for p in model.parameters()), "unknown")
    result = SpeedResult(words=words, tokens=n_tokens, sequences=len(blocks), batch_size=batch_size, seq_len=seq_len,
                         warmup=warmup, repeats=repeats, seconds=seconds, tokens_per_second=n_tokens / seconds,
                         seconds_per_1000_words=1000.0 * seconds / words, device=str(device), dtype=dtype,
                         seconds_per_pass=times)
    log.info("throughput: %d words -> %d tokens, %.0f tokens/s, %.4f s per 1,000 words", words, n_tokens,
             result.tokens_per_second, result.seconds_per_1000_words)
    return result


def speedup(old: SpeedResult, new: SpeedResult) -> float:
    """How many times faster the new model reads the text: old over new seconds per 1,000 words."""
    return old.seconds_per_1000_words / new.seconds_per_1000_words
