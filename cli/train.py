"""``vocabshift train``: continued pretraining with only embeddings and LoRA adapters trainable.

Every flag is a :class:`~vocabshift.train.config.TrainConfig` field, generated from it (``--lora-r`` is
``lora.r``, ``--seq-len`` is ``data.seq_len``; :data:`OPTIONS` lists the exceptions). ``--config FILE``
reads a YAML recipe with the same keys; only flags given on the command line override it. Unset flags keep
the dataclass defaults shown in ``--help``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from vocabshift.config import load_yaml, to_dict
from vocabshift.train.config import LoraSettings, TrainConfig
from vocabshift.train.data_config import DataConfig

from .options import ConfigOptions, as_tree, config_options, corpus_config

# Where the flags depart from the fields' names and types; everything else is generated from the configs.
OPTIONS = (
    ConfigOptions(
        TrainConfig,
        required=False,  # --model and --out may come from --config
        paths=frozenset({"out"}),
        flags={"gradient_accumulation_steps": "--grad-accum",
               "train_lm_head": "--train-lm-head/--freeze-lm-head",
               "train_output_bias": "--train-output-bias/--freeze-output-bias",
               "train_primitives": "--train-primitives/--freeze-primitives",
               "gradient_checkpointing": "--gradient-checkpointing/--no-gradient-checkpointing",
               "compile": "--compile/--no-compile"},
        excluded={"corpus": "the --corpus paths"},
    ),
    ConfigOptions(LoraSettings, key="lora", flags={"enabled": "--lora/--no-lora", "target_modules": "--lora-targets"},
                  comma_separated=frozenset({"target_modules"})),
    ConfigOptions(DataConfig, key="data", prefix="", flags={
        "whole_word_masking": "--whole-word-masking/--no-whole-word-masking", "seed": "--data-seed"},
        excluded={"replay": "the --replay paths"}),
)


@config_options(*OPTIONS)
def train(
    corpus: list[str] = typer.Option(None, "--corpus", help="Training text: files, directories or globs "
                                     "(.txt, .jsonl, .parquet, .arrow, 🤗 datasets folders with FOLDER:SPLIT; "
                                     ".gz/.xz/.bz2/.zst). Several may follow one --corpus."),
    more_corpus: list[str] = typer.Argument(None, hidden=True, help="More corpus paths after --corpus."),
    config: Path = typer.Option(None, "--config", help="YAML recipe with TrainConfig keys; flags override it."),
    replay: list[str] = typer.Option(None, "--replay", help="Source-language text replayed against forgetting "
                                     "(repeatable); needs --replay-weight."),
    *,
    given: dict[str, Any],
) -> None:
    """Continue pretraining a model on target-language text: LoRA adapters + embeddings, the rest frozen."""
    from vocabshift.train.loop import train as run_train

    tree: dict[str, Any] = load_yaml(config) if config else {}
    paths = list(corpus or []) + list(more_corpus or [])
    if paths:
        tree["corpus"] = to_dict(corpus_config(paths))
    if replay:
        as_tree({"data.replay": to_dict(corpus_config(list(replay)))}, tree)
    as_tree(given, tree)
    missing = [flag for flag, key in (("--model", "model"), ("--corpus", "corpus"), ("--out", "out"))
               if key not in tree]
    if missing:
        raise typer.BadParameter(f"missing {', '.join(missing)} (give them as flags or in --config)")
    result = run_train(TrainConfig.from_dict(tree))
    metrics = result.metrics
    line = (f"trained {result.step:,} steps, {result.tokens:,} tokens; loss {metrics.get('loss', float('nan')):.4f}")
    if "eval_loss" in metrics:
        line += f", eval loss {metrics['eval_loss']:.4f}, {metrics['eval_bits_per_byte']:.4f} bits per byte"
    typer.echo(f"{line} -> {result.run_dir}" + (f" ({result.status})" if result.status != "completed" else ""))
