"""The continued-pretraining data settings (:class:`DataConfig`) and the objective check, without torch.

Split from :mod:`vocabshift.train.data` so that the command line and the recipe can read and check these
settings without importing torch (``vocabshift --help`` stays fast); :mod:`vocabshift.train.data`
re-exports every name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from vocabshift.config import ConfigMixin, Problems
from vocabshift.corpus import CorpusConfig
from vocabshift.errors import ConfigError

log = logging.getLogger("vocabshift.train.data")

OBJECTIVES = ("auto", "mlm", "clm")
IGNORE_INDEX = -100  # label of positions that are not predicted (the loss's ignore_index)
MIN_SEQ_LEN = 8



# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class DataConfig(ConfigMixin):
    """Tokenization, packing, masking, the held-out evaluation split and replay for continued pretraining."""

    seq_len: int = field(default=512, metadata={
        "help": "Tokens per packed sequence, special tokens included (at least 8)."})
    objective: str = field(default="auto", metadata={
        "help": "auto (clm for causal LMs, mlm for masked LMs), mlm or clm."})
    mlm_probability: float = field(default=0.15, metadata={
        "help": "MLM: share of non-special tokens chosen for prediction (80% mask, 10% random, 10% kept)."})
    whole_word_masking: bool = field(default=False, metadata={
        "help": "MLM: choose whole words (a word-initial token and its continuations) instead of tokens."})
    eval_documents: int = field(default=200, metadata={
        "help": "Documents held out from the start of the corpus stream for evaluation (0: no evaluation)."})
    eval_max_sequences: int = field(default=64, metadata={
        "help": "At most this many packed sequences of held-out text are evaluated."})
    replay: CorpusConfig | None = field(default=None, metadata={
        "help": "Source-language text mixed into training against forgetting."})
    replay_weight: float = field(default=0.0, metadata={
        "help": "Share of training sequences drawn from the replay corpus, in [0, 1)."})
    num_workers: int = field(default=1, metadata={
        "help": "Tokenization worker processes (0: tokenize in the training process)."})
    tokenize_batch_documents: int = field(default=256, metadata={
        "help": "Documents per tokenization batch sent to a worker."})
    shuffle_buffer: int = field(default=0, metadata={
        "help": "Packed sequences held in a shuffle buffer (0: keep stream order)."})
    seed: int = field(default=0, metadata={
        "help": "Seed of masking, replay draws and the shuffle buffer."})

    def __post_init__(self) -> None:
        found = Problems()
        with found:
            _check_int("seq_len", self.seq_len, MIN_SEQ_LEN,
                       hint="a packed sequence needs room for special tokens and text")
        with found:
            if self.objective not in OBJECTIVES:
                raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        with found:
            if not (isinstance(self.mlm_probability, (int, float)) and 0.0 < self.mlm_probability < 1.0):
                raise ConfigError(f"mlm_probability must be in (0, 1), got {self.mlm_probability!r}",
                                  hint="BERT uses 0.15")
        with found:
            self._check_replay()
        for name, minimum in (("eval_documents", 0), ("eval_max_sequences", 1), ("num_workers", 0),
                              ("tokenize_batch_documents", 1), ("shuffle_buffer", 0), ("seed", 0)):
            with found:
                _check_int(name, getattr(self, name), minimum)
        found.raise_any()

    def _check_replay(self) -> None:
        if not (isinstance(self.replay_weight, (int, float)) and 0.0 <= self.replay_weight < 1.0):
            raise ConfigError(f"replay_weight must be in [0, 1), got {self.replay_weight!r}")
        if self.replay_weight > 0 and self.replay is None:
            raise ConfigError(f"replay_weight is {self.replay_weight} but no replay corpus is set",
                              hint="set replay (--replay) to source-language text, or replay_weight to 0")
        if self.replay is not None and self.replay_weight == 0:
            raise ConfigError("a replay corpus is set but replay_weight is 0, so it would never be read",
                              hint="set replay_weight (e.g. 0.1), or remove replay")


def _check_int(name: str, value: Any, minimum: int, hint: str | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}", hint=hint)


# --------------------------------------------------------------------------------------------------
# Objective


def _class_names(mapping: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for value in mapping.values():
        names.update([value] if isinstance(value, str) else value)
    return names


def resolve_objective(model_or_config: Any, objective: str = "auto") -> str:
    """``'mlm'`` or ``'clm'`` for a model (or its ``PretrainedConfig``), checking that the model can do it.

    ``auto``: a causal LM (``*ForCausalLM``, ``*LMHeadModel``, anything in transformers'
    causal-LM auto mapping, or a config with ``is_decoder=True``) trains with ``clm``, a ``*ForMaskedLM``
    with ``mlm``. A PEFT model is judged by its base model. Raises :class:`ConfigError` naming the
    model class and what it supports for an objective it cannot do: ``mlm`` on a causal LM, ``clm`` on
    a masked LM, either on a base model without an LM head, and ``clm`` on an encoder's causal head
    (``BertLMHeadModel``) whose config lacks ``is_decoder=True`` (it would attend to future tokens).
    """
    from transformers import PretrainedConfig
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    obj = model_or_config
    if hasattr(obj, "get_base_model"):  # a PeftModel wraps the transformers model
        obj = obj.get_base_model()
    if isinstance(obj, PretrainedConfig):
        config = obj
        name = (config.architectures or [None])[0]
    else:
        config = getattr(obj, "config", None)
        name = type(obj).__name__
    model_type = getattr(config, "model_type", None)
    is_decoder = bool(getattr(config, "is_decoder", False))
    # Encoder families (BERT, RoBERTa, XLM-R) also have a causal head class, which is causal only
    # when config.is_decoder is set; without it, BertLMHeadModel attends in both directions.
    encoder_family = model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if name is None:  # a config without `architectures`: judge by the model type
        name = f"{type(config).__name__} (no architectures)"
        causal_head = model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        masked = encoder_family and not (is_decoder and causal_head)
    else:
        causal_head = name in _class_names(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) or name.endswith(
            ("ForCausalLM", "LMHeadModel"))
        masked = name in _class_names(MODEL_FOR_MASKED_LM_MAPPING_NAMES) or name.endswith("ForMaskedLM")
    bidirectional_causal_head = causal_head and encoder_family and not is_decoder
    causal = causal_head and not bidirectional_causal_head
    supported = [o for o, ok in (("mlm", masked), ("clm", causal)) if ok]
    said = ", ".join(supported) or "neither mlm nor clm"

    if objective == "auto":
        if causal:
            chosen = "clm"
        elif masked:
            chosen = "mlm"
        else:
            chosen = ""
    else:
        chosen = objective if objective in supported else ""
    if chosen:
        log.info("objective %s for %s (requested %s)", chosen, name, objective)
        return chosen

    if bidirectional_causal_head:
        raise ConfigError(
            f"{name} has a causal LM head but config.is_decoder is False, so it attends in both directions "
            f"and cannot train with objective {objective!r} (supports: {said})",
            hint="set is_decoder=True in the model config, or load it with AutoModelForMaskedLM for mlm",
        )
    if not masked and not causal:
        raise ConfigError(
            f"{name} has no language-model head, so it cannot train with objective {objective!r} "
            "(supports: neither mlm nor clm)",
            hint="load the model with AutoModelForMaskedLM (encoders) or AutoModelForCausalLM (decoders)",
        )
    if objective == "mlm":
        raise ConfigError(f"objective 'mlm' needs a masked-LM head, but {name} is a causal LM (supports: {said})",
                          hint="use objective clm or auto")
    raise ConfigError(f"objective 'clm' needs a causal-LM head, but {name} is a masked LM (supports: {said})",
                      hint="use objective mlm or auto")
