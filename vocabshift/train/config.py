"""Configuration of continued pretraining (``vocabshift train``): :class:`TrainConfig` and :class:`LoraSettings`.

Every ``vocabshift train`` flag is a field here (dotted for nested ones: ``--lora-r`` is ``lora.r``,
``--seq-len`` is ``data.seq_len``), and a YAML recipe has the same keys::

    # vocabshift train --config train.yaml
    model: runs/init-wechsel
    corpus: {sources: [{paths: [data/yor.txt]}]}
    out: runs/cpt-yor
    max_steps: 2000
    lora: {r: 16, alpha: 32}
    data: {seq_len: 1024}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from vocabshift.config import MAX_INT, ConfigMixin, Problems, check_whole_number
from vocabshift.corpus import CorpusConfig
from vocabshift.errors import ConfigError
from vocabshift.train.data_config import DataConfig

SCHEDULES = ("cosine", "linear", "constant")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
DEVICES = ("auto", "cpu")
EMBEDDINGS = ("all", "new", "frozen")
TRACKERS = ("tensorboard", "wandb")
# Upper bounds of run lengths: far above any real run (LLM pretraining: ~1e6 steps, ~4e13 tokens), low
# enough that an exponent typo is an error instead of a run that never ends.
MAX_STEPS = 10**9
MAX_TOKENS = 10**15
_MAXIMUM = {"max_steps": MAX_STEPS, "max_tokens": MAX_TOKENS, "warmup_steps": MAX_STEPS,
            "embeddings_only_steps": MAX_STEPS, "seed": 2**32 - 1}


@dataclass
class LoraSettings(ConfigMixin):
    """LoRA adapters on the attention and feed-forward projections (PEFT ``LoraConfig``)."""

    enabled: bool = field(default=True, metadata={
        "help": "Train LoRA adapters; off: only the embeddings (and head/bias) train."})
    r: int = field(default=16, metadata={"help": "LoRA rank."})
    alpha: float = field(default=32.0, metadata={"help": "LoRA scaling alpha (the update is scaled by alpha / r)."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    target_modules: list[str] | None = field(default=None, metadata={
        "help": "Names of the linear layers to adapt (e.g. [q_proj, v_proj]); default: every projection inside "
                "the transformer blocks (q/k/v/o + MLP on Llama-style models, query/key/value/dense on BERT, "
                "c_attn/c_proj/c_fc on GPT-2)."})

    def __post_init__(self) -> None:
        found = Problems()
        with found:
            if self.r < 1:
                raise ConfigError(f"lora.r must be at least 1, got {self.r}")
        with found:
            if not 0.0 <= self.dropout < 1.0:
                raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        with found:
            if self.target_modules is not None and not self.target_modules:
                raise ConfigError("lora.target_modules is empty; leave it unset for the default")
        found.raise_any()


@dataclass
class TrainConfig(ConfigMixin):
    """Continued pretraining with only embeddings and LoRA adapters trainable (``vocabshift train``)."""

    model: str = field(metadata={
        "help": "Model directory to train, usually the output of `vocabshift init` (its id_map.json and "
                "factorized_embedding.safetensors are used when present)."})
    corpus: CorpusConfig = field(metadata={"help": "Target-language training text."})
    out: str = field(metadata={"help": "Run directory: run.json, metrics.jsonl, checkpoints/."})
    data: DataConfig = field(default_factory=DataConfig, metadata={
        "help": "Tokenization, packing, masking, held-out evaluation split and replay."})
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"help": "LoRA adapters."})
    max_steps: int | None = field(default=None, metadata={
        "help": "Optimizer steps to train (give this or max_tokens)."})
    max_tokens: int | None = field(default=None, metadata={
        "help": "Tokens to train on, all processes together; sets max_steps from the batch shape."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per micro-batch on each process."})
    gradient_accumulation_steps: int = field(default=1, metadata={
        "help": "Micro-batches per optimizer step."})
    embeddings: str = field(default="all", metadata={
        "help": "Input embedding rows that train: all, new (rows the id_map marks -1; the rest stay "
                "bit-identical), or frozen. Also applies to an untied LM head and the MLM output bias."})
    train_lm_head: bool = field(default=True, metadata={"help": "Train an untied LM head (a tied one trains with "
                                                                "the embeddings)."})
    train_output_bias: bool = field(default=True, metadata={"help": "Train the MLM output bias (BERT, XLM-R)."})
    factorized: bool = field(default=True, metadata={
        "help": "When the model directory has factorized_embedding.safetensors (OFA), train its coordinates "
                "instead of the dense embeddings; export materializes them."})
    train_primitives: bool | None = field(default=None, metadata={
        "help": "Also train the factorized embedding's primitives (default: as the init stage set it)."})
    embedding_lr: float = field(default=5e-4, metadata={"help": "Peak learning rate of the embeddings, head "
                                                                "and bias."})
    lora_lr: float = field(default=2e-4, metadata={"help": "Peak learning rate of the LoRA adapters."})
    primitives_lr: float | None = field(default=None, metadata={
        "help": "Peak learning rate of a factorized embedding's primitives (OFA, factorized init); default: "
                "lora_lr. Every row is coordinates @ primitives, so a step on the primitives moves the whole "
                "vocabulary at once: at embedding_lr it undoes the init (measured, docs/training.md)."})
    weight_decay: float = field(default=0.0, metadata={
        "help": "AdamW weight decay of the LoRA adapters (embeddings are never decayed)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon."})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "Clip the gradient norm to this (null: "
                                                                       "no clipping)."})
    schedule: str = field(default="cosine", metadata={"help": "Learning-rate schedule after warm-up: cosine, "
                                                             "linear or constant."})
    warmup_steps: int | None = field(default=None, metadata={
        "help": "Linear warm-up steps (default: 5% of the steps of each phase)."})
    min_lr_ratio: float = field(default=0.1, metadata={
        "help": "Cosine/linear schedules end at this fraction of the peak learning rate."})
    embeddings_only_steps: int = field(default=0, metadata={
        "help": "Two phases: train only the embeddings for this many steps, then embeddings + LoRA "
                "(LoRA warms up and decays over the second phase)."})
    mixed_precision: str = field(default="auto", metadata={
        "help": "auto (bf16 autocast on a GPU that supports it, else fp32), no, bf16 or fp16. Master weights "
                "stay fp32."})
    device: str = field(default="auto", metadata={"help": "auto (what accelerate picks) or cpu."})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "Recompute activations in the backward pass (less memory, ~30% slower)."})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (through accelerate's dynamo "
                                                           "plugin)."})
    attn_implementation: str | None = field(default="sdpa", metadata={
        "help": "Attention kernel transformers loads the model with: sdpa, flash_attention_2, eager; null: "
                "transformers' default."})
    save_every: int = field(default=500, metadata={"help": "Write a checkpoint every this many steps (and at "
                                                          "the end)."})
    keep_checkpoints: int = field(default=3, metadata={"help": "Keep the last this many checkpoints."})
    eval_every: int = field(default=500, metadata={
        "help": "Evaluate on the held-out split every this many steps (and at the end); 0: only at the end."})
    eval_batch_size: int | None = field(default=None, metadata={"help": "Eval micro-batch (default: batch_size)."})
    log_every: int = field(default=10, metadata={"help": "Write a metrics.jsonl line every this many steps."})
    log_with: list[str] = field(default_factory=list, metadata={
        "help": "Also log the metrics to these trackers: tensorboard, wandb (packages: vocabshift[tracking]); "
                "they write in out/logs/, wandb offline unless WANDB_MODE is set."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})
    seed: int = field(default=0, metadata={"help": "Seed of LoRA init, dropout and everything else random."})
    resume: bool = field(default=False, metadata={
        "help": "Continue the run in `out` from its latest checkpoint."})
    force: bool = field(default=False, metadata={
        "help": "Start a new run in an existing run directory, deleting what it holds."})

    def __post_init__(self) -> None:
        found = Problems()
        with found:
            check_train_settings(self)
        with found:
            if self.resume and self.force:
                raise ConfigError("give either resume (continue the run) or force (start over), not both")
        found.raise_any()


def check_train_settings(config: Any) -> None:
    """The training settings of :class:`TrainConfig` or of the recipe's ``training`` section (all but
    model, corpus, out, resume and force); raises one ConfigError naming every problem."""
    found = Problems()
    with found:
        if (config.max_steps is None) == (config.max_tokens is None):
            raise ConfigError("give exactly one of max_steps and max_tokens (training needs a length for its "
                              "learning-rate schedule)")
    for name in ("max_steps", "max_tokens", "batch_size", "gradient_accumulation_steps", "save_every",
                 "keep_checkpoints", "log_every", "eval_every", "eval_batch_size", "warmup_steps",
                 "embeddings_only_steps", "seed"):
        if getattr(config, name) is not None:
            # whole numbers only (1e30 from Python is a float), and bounded: a typo'd length trains forever
            minimum = 0 if name in ("eval_every", "warmup_steps", "embeddings_only_steps", "seed") else 1
            with found:
                check_whole_number(getattr(config, name), name, minimum, _MAXIMUM.get(name, MAX_INT))
    for name, allowed in (("schedule", SCHEDULES), ("mixed_precision", MIXED_PRECISION), ("device", DEVICES),
                          ("embeddings", EMBEDDINGS)):
        with found:
            if getattr(config, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(config, name)!r}")
    with found:
        _check_numbers(config)
    if not found.errors:  # the checks between fields need each field valid
        with found:
            _check_phases(config)
    found.raise_any()


def _check_numbers(config: Any) -> None:
    """Trackers, learning rates, weight decay, clipping and the schedule's floor."""
    found = Problems()
    for tracker in config.log_with:
        with found:
            if tracker not in TRACKERS:
                raise ConfigError(f"log_with: unknown tracker {tracker!r} (choose from {', '.join(TRACKERS)})")
    for name in ("embedding_lr", "lora_lr", "primitives_lr"):
        value = getattr(config, name)
        with found:
            if value is not None and not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a non-negative number, got {value}")
    with found:
        if config.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {config.weight_decay}")
    with found:
        if config.max_grad_norm is not None and config.max_grad_norm <= 0:
            raise ConfigError(f"max_grad_norm must be positive (or null for no clipping), got {config.max_grad_norm}")
    with found:
        if not 0.0 <= config.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {config.min_lr_ratio}")
    found.raise_any()


def _check_phases(config: Any) -> None:
    """What trains in each phase: two phases need embeddings and LoRA, and something must train."""
    if config.embeddings_only_steps and (config.embeddings == "frozen" or not config.lora.enabled):
        raise ConfigError("embeddings_only_steps needs trainable embeddings and LoRA (two phases: embeddings, "
                          "then embeddings + LoRA)")
    if config.max_steps is not None and config.embeddings_only_steps >= config.max_steps:
        raise ConfigError(f"embeddings_only_steps ({config.embeddings_only_steps}) must be below max_steps "
                          f"({config.max_steps})")
    if config.embeddings == "frozen" and not config.lora.enabled:
        raise ConfigError("nothing to train: embeddings are frozen and LoRA is off")


__all__ = ["LoraSettings", "TrainConfig", "check_train_settings"]
