"""``vocabshift train``: continued pretraining with only embeddings and LoRA adapters trainable.

Every flag is a :class:`~vocabshift.train.config.TrainConfig` field (``--lora-r`` is ``lora.r``,
``--seq-len`` is ``data.seq_len``). ``--config FILE`` reads a YAML recipe with the same keys; flags
given on the command line override it. Unset flags keep the dataclass defaults shown in ``--help``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from vocabshift.config import load_yaml, to_dict
from vocabshift.train.config import LoraSettings, TrainConfig
from vocabshift.train.data_config import DataConfig

from .options import corpus_config, field_help

_T, _L, _D = TrainConfig, LoraSettings, DataConfig


def _h(cls: type, name: str) -> str:
    """Field help plus its default, so that ``--help`` shows what an unset flag means."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
    shown = "" if default is None or default == [] else f" [default: {default}]"
    return field_help(cls, name) + shown


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def train(
    model: str = typer.Option(None, "--model", help=_h(_T, "model")),
    corpus: list[str] = typer.Option(None, "--corpus", help="Training text: files, directories or globs "
                                     "(.txt, .jsonl, .parquet, .arrow, 🤗 datasets folders with FOLDER:SPLIT; "
                                     ".gz/.xz/.bz2/.zst). Several may follow one --corpus."),
    more_corpus: list[str] = typer.Argument(None, hidden=True, help="More corpus paths after --corpus."),
    out: Path = typer.Option(None, "--out", help=_h(_T, "out")),
    config: Path = typer.Option(None, "--config", help="YAML recipe with TrainConfig keys; flags override it."),
    objective: str = typer.Option(None, "--objective", help=_h(_D, "objective")),
    max_steps: int = typer.Option(None, "--max-steps", help=_h(_T, "max_steps")),
    max_tokens: int = typer.Option(None, "--max-tokens", help=_h(_T, "max_tokens")),
    seq_len: int = typer.Option(None, "--seq-len", help=_h(_D, "seq_len")),
    batch_size: int = typer.Option(None, "--batch-size", help=_h(_T, "batch_size")),
    grad_accum: int = typer.Option(None, "--grad-accum", help=_h(_T, "gradient_accumulation_steps")),
    embeddings: str = typer.Option(None, "--embeddings", help=_h(_T, "embeddings")),
    train_lm_head: bool = typer.Option(None, "--train-lm-head/--freeze-lm-head", help=_h(_T, "train_lm_head")),
    train_output_bias: bool = typer.Option(None, "--train-output-bias/--freeze-output-bias",
                                           help=_h(_T, "train_output_bias")),
    factorized: bool = typer.Option(None, "--factorized/--no-factorized", help=_h(_T, "factorized")),
    train_primitives: bool = typer.Option(None, "--train-primitives/--freeze-primitives",
                                          help=_h(_T, "train_primitives")),
    lora: bool = typer.Option(None, "--lora/--no-lora", help=_h(_L, "enabled")),
    lora_r: int = typer.Option(None, "--lora-r", help=_h(_L, "r")),
    lora_alpha: float = typer.Option(None, "--lora-alpha", help=_h(_L, "alpha")),
    lora_dropout: float = typer.Option(None, "--lora-dropout", help=_h(_L, "dropout")),
    lora_targets: str = typer.Option(None, "--lora-targets", help="Comma-separated " + _h(_L, "target_modules")),
    embedding_lr: float = typer.Option(None, "--embedding-lr", help=_h(_T, "embedding_lr")),
    lora_lr: float = typer.Option(None, "--lora-lr", help=_h(_T, "lora_lr")),
    primitives_lr: float = typer.Option(None, "--primitives-lr", help=_h(_T, "primitives_lr")),
    weight_decay: float = typer.Option(None, "--weight-decay", help=_h(_T, "weight_decay")),
    max_grad_norm: float = typer.Option(None, "--max-grad-norm", help=_h(_T, "max_grad_norm")),
    schedule: str = typer.Option(None, "--schedule", help=_h(_T, "schedule")),
    warmup_steps: int = typer.Option(None, "--warmup-steps", help=_h(_T, "warmup_steps")),
    min_lr_ratio: float = typer.Option(None, "--min-lr-ratio", help=_h(_T, "min_lr_ratio")),
    embeddings_only_steps: int = typer.Option(None, "--embeddings-only-steps", help=_h(_T, "embeddings_only_steps")),
    mixed_precision: str = typer.Option(None, "--mixed-precision", help=_h(_T, "mixed_precision")),
    device: str = typer.Option(None, "--device", help=_h(_T, "device")),
    gradient_checkpointing: bool = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing",
                                                help=_h(_T, "gradient_checkpointing")),
    compile_model: bool = typer.Option(None, "--compile/--no-compile", help=_h(_T, "compile")),
    attn_implementation: str = typer.Option(None, "--attn-implementation", help=_h(_T, "attn_implementation")),
    mlm_probability: float = typer.Option(None, "--mlm-probability", help=_h(_D, "mlm_probability")),
    whole_word_masking: bool = typer.Option(None, "--whole-word-masking/--no-whole-word-masking",
                                            help=_h(_D, "whole_word_masking")),
    replay: list[str] = typer.Option(None, "--replay", help="Source-language text replayed against forgetting "
                                     "(repeatable); needs --replay-weight."),
    replay_weight: float = typer.Option(None, "--replay-weight", help=_h(_D, "replay_weight")),
    eval_documents: int = typer.Option(None, "--eval-documents", help=_h(_D, "eval_documents")),
    eval_max_sequences: int = typer.Option(None, "--eval-max-sequences", help=_h(_D, "eval_max_sequences")),
    num_workers: int = typer.Option(None, "--num-workers", help=_h(_D, "num_workers")),
    shuffle_buffer: int = typer.Option(None, "--shuffle-buffer", help=_h(_D, "shuffle_buffer")),
    save_every: int = typer.Option(None, "--save-every", help=_h(_T, "save_every")),
    keep_checkpoints: int = typer.Option(None, "--keep-checkpoints", help=_h(_T, "keep_checkpoints")),
    eval_every: int = typer.Option(None, "--eval-every", help=_h(_T, "eval_every")),
    eval_batch_size: int = typer.Option(None, "--eval-batch-size", help=_h(_T, "eval_batch_size")),
    log_every: int = typer.Option(None, "--log-every", help=_h(_T, "log_every")),
    log_with: list[str] = typer.Option(None, "--log-with", help=_h(_T, "log_with") + " Repeatable."),
    progress: bool = typer.Option(None, "--progress/--no-progress", help=_h(_T, "progress")),
    seed: int = typer.Option(None, "--seed", help=_h(_T, "seed")),
    resume: bool = typer.Option(None, "--resume", help=_h(_T, "resume")),
    force: bool = typer.Option(None, "--force", help=_h(_T, "force")),
) -> None:
    """Continue pretraining a model on target-language text: LoRA adapters + embeddings, the rest frozen."""
    from vocabshift.train.loop import train as run_train

    tree: dict[str, Any] = load_yaml(config) if config else {}
    paths = list(corpus or []) + list(more_corpus or [])
    if paths:
        tree["corpus"] = to_dict(corpus_config(paths))
    if replay:
        _set(tree, "data.replay", to_dict(corpus_config(list(replay))))
    flags: dict[str, Any] = {
        "model": model, "out": str(out) if out else None, "data.objective": objective, "max_steps": max_steps,
        "max_tokens": max_tokens, "data.seq_len": seq_len, "batch_size": batch_size,
        "gradient_accumulation_steps": grad_accum, "embeddings": embeddings, "train_lm_head": train_lm_head,
        "train_output_bias": train_output_bias, "factorized": factorized, "train_primitives": train_primitives,
        "lora.enabled": lora, "lora.r": lora_r, "lora.alpha": lora_alpha, "lora.dropout": lora_dropout,
        "lora.target_modules": [t.strip() for t in lora_targets.split(",") if t.strip()] if lora_targets else None,
        "embedding_lr": embedding_lr, "lora_lr": lora_lr, "primitives_lr": primitives_lr, "weight_decay": weight_decay,
        "max_grad_norm": max_grad_norm, "schedule": schedule, "warmup_steps": warmup_steps,
        "min_lr_ratio": min_lr_ratio, "embeddings_only_steps": embeddings_only_steps,
        "mixed_precision": mixed_precision, "device": device, "gradient_checkpointing": gradient_checkpointing,
        "compile": compile_model, "attn_implementation": attn_implementation,
        "data.mlm_probability": mlm_probability, "data.whole_word_masking": whole_word_masking,
        "data.replay_weight": replay_weight, "data.eval_documents": eval_documents,
        "data.eval_max_sequences": eval_max_sequences, "data.num_workers": num_workers,
        "data.shuffle_buffer": shuffle_buffer, "save_every": save_every, "keep_checkpoints": keep_checkpoints,
        "eval_every": eval_every, "eval_batch_size": eval_batch_size, "log_every": log_every,
        "log_with": list(log_with) if log_with else None, "progress": progress, "seed": seed, "resume": resume,
        "force": force,
    }
    for dotted, value in flags.items():
        if value is not None:
            _set(tree, dotted, value)
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
