"""Find a model's vocabulary-sized parameters: input embeddings, LM head, MLM output bias, tie status.

Everything is found through the model's own accessors (``get_input_embeddings`` /
``get_output_embeddings``) and then named by walking ``named_modules``/``named_parameters``, so no
architecture table is needed. What transformers 5 does for the architectures vocabshift targets:

* ``BertForMaskedLM``: input ``bert.embeddings.word_embeddings``, head ``cls.predictions.decoder``,
  bias ``cls.predictions.decoder.bias`` (+ ``cls.predictions.bias``), tied by default;
* ``XLMRobertaForMaskedLM`` / ``RobertaForMaskedLM``: input ``roberta.embeddings.word_embeddings``, head
  ``lm_head.decoder``, bias ``lm_head.decoder.bias`` (+ ``lm_head.bias``), tied by default;
* ``GPT2LMHeadModel``: input ``transformer.wte``, head ``lm_head`` (no bias), tied by default;
* ``LlamaForCausalLM`` (Mistral, Qwen2 alike): input ``model.embed_tokens``, head ``lm_head`` (no bias),
  tied only with ``tie_word_embeddings=True``;
* ``BertModel`` and other base models: input ``embeddings.word_embeddings``, no head.

The MLM heads hold two vocabulary-sized biases. transformers 5 ties ``decoder.bias`` to the head's
``bias`` through ``_tied_weights_keys``, which only applies when ``config.tie_word_embeddings`` is
true: then both names are one Parameter (the checkpoint stores ``cls.predictions.bias`` /
``lm_head.bias``). With untied embeddings they are two Parameters and the forward pass adds only
``decoder.bias``; the head's ``bias`` is dead weight that the checkpoint still stores. So
:attr:`EmbeddingLayout.output_bias` names the bias the forward pass uses, and the other name goes
to :attr:`EmbeddingLayout.other_vocab_params`, which surgery keeps in step too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from vocabshift.errors import ModelError

log = logging.getLogger(__name__)


@dataclass
class EmbeddingLayout:
    """Where a model keeps its vocabulary-sized parameters (dotted paths as in ``named_modules``)."""

    input_embeddings: str
    """Module path of the input ``nn.Embedding``, e.g. ``"model.embed_tokens"``."""
    output_embeddings: str | None
    """Module path of the LM head (``nn.Linear``), or ``None`` for a base model without a head."""
    tied: bool
    """The head's weight is the input embedding Parameter itself *and* the config says ``tie_word_embeddings``."""
    output_bias: str | None
    """Parameter path of the vocabulary-sized output bias that the forward pass adds, if any."""
    vocab_size: int
    """Rows of the input embedding matrix (may exceed ``len(tokenizer)`` when padded)."""
    other_vocab_params: tuple[str, ...] = ()
    """Other parameter paths with one entry per token: other names of the Parameters above (BERT's
    ``cls.predictions.bias`` when tied) or separate head biases (the same name when untied)."""
    shares_weight: bool = False
    """The head's weight is the input embedding Parameter (whatever the config says)."""
    config_tied: bool | None = None
    """``tie_word_embeddings`` from the (text) config; ``None`` if the model has no such setting."""

    @property
    def input_weight(self) -> str:
        return f"{self.input_embeddings}.weight"

    @property
    def output_weight(self) -> str | None:
        return None if self.output_embeddings is None else f"{self.output_embeddings}.weight"

    @property
    def tie_is_consistent(self) -> bool:
        """Sharing and config agree (or there is no head / no config to disagree with)."""
        if self.output_embeddings is None or self.config_tied is None:
            return True
        return self.shares_weight == self.config_tied


def config_tie_flag(model: nn.Module) -> bool | None:
    """``tie_word_embeddings`` of the model's config or its text config; ``None`` when neither has one."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    flag = getattr(config, "tie_word_embeddings", None)
    if flag is None and hasattr(config, "get_text_config"):
        flag = getattr(config.get_text_config(), "tie_word_embeddings", None)
    return None if flag is None else bool(flag)


def _module_path(model: nn.Module, module: nn.Module) -> str | None:
    for name, candidate in model.named_modules(remove_duplicate=False):
        if candidate is module:
            return name
    return None


def _vocab_weight(module: nn.Module, what: str, model: nn.Module, allow_meta: bool = False) -> torch.Tensor:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ModelError(
            f"{type(model).__name__}: the {what} ({type(module).__name__}) has no 2-D weight matrix",
            hint="vocabulary surgery supports nn.Embedding inputs and nn.Linear heads",
        )
    if weight.is_meta and not allow_meta:
        raise ModelError(f"{type(model).__name__}: the {what} weight is on the meta device",
                         hint="load the model fully (no device_map offloading) before surgery")
    return weight


def locate(model: nn.Module, allow_meta: bool = False) -> EmbeddingLayout:
    """Find the input embeddings, LM head, output bias and tie status of ``model``.

    ``allow_meta`` accepts a model built on the meta device (the lean checkpoint path plans on one).

    Raises :class:`ModelError` (naming the model class) when the model has no input embeddings or its
    head does not have one row per input token.
    """
    cls = type(model).__name__
    get_input = getattr(model, "get_input_embeddings", None)
    try:
        embeddings = get_input() if callable(get_input) else None
    except (NotImplementedError, AttributeError):
        embeddings = None
    if embeddings is None:
        raise ModelError(f"{cls} has no input embeddings (get_input_embeddings() gives none)",
                         hint="vocabulary surgery needs a text model with a token embedding matrix")
    input_path = _module_path(model, embeddings)
    if input_path is None:
        raise ModelError(f"{cls}.get_input_embeddings() returns a module that is not part of the model")
    in_weight = _vocab_weight(embeddings, "input embeddings", model, allow_meta)
    vocab_size = in_weight.shape[0]

    get_output = getattr(model, "get_output_embeddings", None)
    try:
        head = get_output() if callable(get_output) else None
    except (NotImplementedError, AttributeError):
        head = None
    output_path = None if head is None else _module_path(model, head)
    out_weight = None
    if head is not None and output_path is None:
        raise ModelError(f"{cls}.get_output_embeddings() returns a module that is not part of the model")
    if head is not None:
        out_weight = _vocab_weight(head, "output embeddings", model, allow_meta)
        if out_weight.shape[0] != vocab_size:
            raise ModelError(f"{cls}: the LM head {output_path} has {out_weight.shape[0]} rows but the input "
                             f"embeddings {input_path} have {vocab_size}",
                             hint="surgery needs one head row per input token")

    shares = out_weight is not None and out_weight is in_weight
    config_tied = config_tie_flag(model)
    tied = shares and config_tied is not False

    # The bias the forward pass uses is the head's own; a vocab-sized bias next to it (BERT's
    # cls.predictions.bias) is either the same Parameter or a separate one we keep in step.
    output_bias = None
    head_bias = getattr(head, "bias", None) if head is not None else None
    if isinstance(head_bias, torch.Tensor) and head_bias.shape == (vocab_size,):
        output_bias = f"{output_path}.bias"
    head_parent = None if output_path is None else (output_path.rsplit(".", 1)[0] if "." in output_path else "")
    core = [in_weight] + ([out_weight] if out_weight is not None else [])
    named = list(model.named_parameters(remove_duplicate=False))
    head_biases = [
        (path, p) for path, p in named
        if head_parent is not None and _parent(path) == head_parent and path.rsplit(".", 1)[-1].endswith("bias")
        and p.dim() == 1 and p.shape[0] == vocab_size
    ]
    if output_bias is None and head_biases:
        # A head that adds its bias outside the Linear (older custom code): that bias is the output bias.
        output_bias = head_biases[0][0]
    bias_param = None if output_bias is None else model.get_parameter(output_bias)
    if bias_param is not None:
        core.append(bias_param)
    main_paths = {f"{input_path}.weight", output_bias}
    if output_path is not None:
        main_paths.add(f"{output_path}.weight")
    other = tuple(
        path for path, p in named
        if path not in main_paths and (any(p is c for c in core) or any(p is hb for _, hb in head_biases))
    )
    layout = EmbeddingLayout(input_embeddings=input_path, output_embeddings=output_path, tied=tied,
                             output_bias=output_bias, vocab_size=vocab_size, other_vocab_params=other,
                             shares_weight=shares, config_tied=config_tied if head is not None else None)
    if not layout.tie_is_consistent:
        log.warning("%s: %s", cls, describe_tie_mismatch(layout))
    return layout


def describe_tie_mismatch(layout: EmbeddingLayout) -> str:
    """One line on a head whose sharing disagrees with ``tie_word_embeddings``, and how to fix it."""
    if layout.config_tied:
        return (f"config.tie_word_embeddings is true but {layout.output_weight} and {layout.input_weight} are "
                "different tensors (as PEFT modules_to_save leaves them); a reload would not give this model back "
                "— call model.tie_weights() to tie them, or set config.tie_word_embeddings = False to keep the "
                "separate head")
    return (f"{layout.output_weight} is the same tensor as {layout.input_weight} but config.tie_word_embeddings "
            "is false; a reload would give two separate matrices — set config.tie_word_embeddings = True, or "
            "give the head its own copy")


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""
