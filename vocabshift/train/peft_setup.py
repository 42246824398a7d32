"""Decide what continued pretraining trains, and set the model up for it.

Trainable are: LoRA adapters (PEFT) on the linear projections inside the transformer blocks; the input
embeddings (every row, or only the rows of new tokens); an untied LM head; the MLM output bias; and,
when the model directory holds ``factorized_embedding.safetensors`` (OFA / UNKs-style init), the
factorized embedding's coordinates (and, optionally, its primitives) instead of the dense matrix.
Everything else is frozen.

The embeddings stay *outside* PEFT: ``get_peft_model`` wraps only the LoRA targets, and the
vocabulary-sized Parameters are made trainable with ``requires_grad`` directly. PEFT's
``modules_to_save`` would copy a tied embedding into a separate trainable module, untying the head from
it while ``config.tie_word_embeddings`` stays true (PEFT issues #2018, #2777): a merged and reloaded
model then silently uses the stale head. Here a tied head stays the same Parameter throughout.

"Only new rows" is a gradient mask on the embedding Parameter (rows of kept tokens get a zero
gradient, so AdamW without weight decay leaves them bit-identical); the new rows come from the model
directory's ``id_map.json`` (``-1`` marks a new token).

LoRA targets are found by module type and position, not by an architecture table: every
``nn.Linear`` (or GPT-2 ``Conv1D``) inside the repeated transformer blocks (a ``ModuleList``), which
gives ``q/k/v/o_proj`` + ``gate/up/down_proj`` on Llama, Mistral and Qwen2, ``query/key/value/dense``
on BERT and XLM-R (not the pooler or the MLM head's transform), ``c_attn/c_proj/c_fc`` on GPT-2
(with ``fan_in_fan_out``). Mixture-of-experts routers (``gate`` / ``router`` with one output per
expert) are left out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vocabshift.errors import ConfigError, ModelError
from vocabshift.surgery.factorized import FactorizedEmbedding
from vocabshift.surgery.layout import EmbeddingLayout, locate
from vocabshift.vocabulary import ID_MAP_FILE, read_id_map

log = logging.getLogger(__name__)

FACTORIZED_FILE = "factorized_embedding.safetensors"
EMBEDDING_MODES = ("all", "new", "frozen")
_ROUTER_NAMES = ("gate", "router")


@dataclass
class TrainableSetup:
    """A model ready for continued pretraining and what in it trains."""

    model: nn.Module
    """The model to train: a ``PeftModel`` when LoRA is on, else the transformers model itself."""
    base: nn.Module
    """The transformers model inside (the same object when LoRA is off)."""
    layout: EmbeddingLayout
    """Where the vocabulary-sized parameters are (located before any wrapping)."""
    groups: dict[str, list[str]] = field(default_factory=dict)
    """Parameter names (as in ``model.named_parameters()``) per optimizer group: ``embeddings``, ``lora`` and,
    for a factorized embedding whose primitives train, ``primitives``."""
    target_modules: list[str] = field(default_factory=list)
    """Module paths (in the transformers model) that carry LoRA adapters."""
    new_rows: torch.Tensor | None = None
    """Bool mask ``[V]`` of the rows that train when only new rows do; ``None`` when all rows train."""
    factorized: bool = False
    """The input embeddings are a :class:`FactorizedEmbedding` during training."""

    def trainable_names(self) -> list[str]:
        return [n for names in self.groups.values() for n in names]

    def parameters(self, group: str) -> list[nn.Parameter]:
        named = dict(self.model.named_parameters())
        return [named[n] for n in self.groups.get(group, [])]


def find_target_modules(model: nn.Module, names: list[str] | None = None) -> tuple[list[str], bool]:
    """Module paths for LoRA and whether they are GPT-2 ``Conv1D`` (``fan_in_fan_out``).

    Without ``names``: every linear layer inside the model's repeated blocks except MoE routers. With
    ``names`` (leaf names such as ``["q_proj", "v_proj"]``): the linear layers anywhere outside the LM
    head whose last name component is one of them.
    """
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    in_block = _modules_inside_blocks(model)
    found: list[str] = []
    conv1d = False
    for path, module in model.named_modules():
        if not isinstance(module, (nn.Linear, Conv1D)) or module is head:
            continue
        leaf = path.rsplit(".", 1)[-1]
        if names is not None:
            if leaf not in names:
                continue
        elif path not in in_block or _is_router(leaf, module, model):
            continue
        found.append(path)
        conv1d = conv1d or isinstance(module, Conv1D)
    if not found:
        what = f"named {', '.join(names)}" if names else "inside the transformer blocks"
        raise ModelError(f"{type(model).__name__}: no linear layers {what} to put LoRA adapters on",
                         hint="set lora.target_modules to the names of its projection layers")
    return found, conv1d


def _modules_inside_blocks(model: nn.Module) -> set[str]:
    """Paths of modules below an element of a ``ModuleList`` (the repeated transformer blocks)."""
    inside: set[str] = set()
    for path, module in model.named_modules():
        if isinstance(module, nn.ModuleList):
            for sub_path, _ in module.named_modules():
                if sub_path:
                    inside.add(f"{path}.{sub_path}" if path else sub_path)
    return inside


def _is_router(leaf: str, module: nn.Module, model: nn.Module) -> bool:
    n_experts = getattr(getattr(model, "config", None), "num_local_experts", None) or \
        getattr(getattr(model, "config", None), "num_experts", None)
    out = getattr(module, "out_features", None)
    return leaf in _ROUTER_NAMES and n_experts is not None and out == n_experts


def read_new_rows(model_dir: str | Path, vocab_size: int) -> torch.Tensor:
    """Bool mask ``[vocab_size]`` of the rows ``id_map.json`` marks as new (``-1``).

    Rows past the id_map (padding added by ``pad_to_multiple_of``) count as new: no source token owns them.
    """
    path = Path(model_dir) / ID_MAP_FILE
    id_map = read_id_map(model_dir)  # ConfigError "not an id_map file" when malformed
    if id_map is None:
        raise ConfigError(f"training only new embedding rows needs {ID_MAP_FILE} beside the model",
                          path=path, hint="use a model written by `vocabshift prune`/`extend`/`init`, "
                                          "or train all rows (embeddings: all)")
    if len(id_map) > vocab_size:
        raise ConfigError(f"id_map has {len(id_map)} entries but the model has {vocab_size} embedding rows",
                          path=path)
    mask = torch.ones(vocab_size, dtype=torch.bool)
    mask[: len(id_map)] = torch.tensor([int(i) < 0 for i in id_map], dtype=torch.bool)
    return mask


class RowGradientMask:
    """A tensor hook that zeroes the gradient of the rows that must not change."""

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = mask
        self._cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        key = (grad.device, grad.dtype)
        mask = self._cache.get(key)
        if mask is None:
            shape = (-1,) + (1,) * (grad.dim() - 1)
            mask = self._cache[key] = self.mask.to(device=grad.device, dtype=grad.dtype).view(shape)
        return grad * mask


class FactorizedLMHead(nn.Module):
    """A tied LM head over a :class:`FactorizedEmbedding`: ``logits = h @ (C P)^T + bias``.

    Replaces the head's ``nn.Linear`` while the embedding is factorized, so that a tied head keeps
    sharing the (factorized) embedding; :func:`materialize_factorized` puts the original head back.
    """

    def __init__(self, embedding: FactorizedEmbedding, original: nn.Module) -> None:
        super().__init__()
        # Plain attributes in a list: registering them as submodules would list the factors twice.
        self._refs = [embedding, original]
        self.bias = getattr(original, "bias", None)

    @property
    def weight(self) -> torch.Tensor:
        return self._refs[0].weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        emb = self._refs[0]
        # (h @ P^T) @ C^T: never forms the V x d matrix.
        return F.linear(F.linear(hidden, emb.primitives), emb.coordinates, self.bias)


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent_path) if parent_path else root, name, module)


def install_factorized(model: nn.Module, layout: EmbeddingLayout, factorized: FactorizedEmbedding) -> None:
    """Swap the input embeddings (and a tied head) for ``factorized``, in place."""
    emb = model.get_submodule(layout.input_embeddings)
    rows, dim = emb.weight.shape
    if factorized.embedding_dim != dim:
        raise ModelError(f"the factorized embedding has dimension {factorized.embedding_dim} but the model's "
                         f"embeddings have {dim}", path=FACTORIZED_FILE)
    if factorized.num_embeddings > rows:
        raise ModelError(f"the factorized embedding has {factorized.num_embeddings} rows but the model only "
                         f"{rows}", path=FACTORIZED_FILE)
    if factorized.num_embeddings < rows:
        # Padding rows (pad_to_multiple_of) belong to no token; give them zero coordinates.
        log.info("factorized embedding: %d padding rows get zero coordinates", rows - factorized.num_embeddings)
        extra = torch.zeros(rows - factorized.num_embeddings, factorized.rank, dtype=factorized.coordinates.dtype)
        factorized.coordinates = nn.Parameter(torch.cat([factorized.coordinates.data, extra]))
    factorized.to(device=emb.weight.device, dtype=emb.weight.dtype)
    _set_module(model, layout.input_embeddings, factorized)
    if layout.tied and layout.output_embeddings is not None:
        head = model.get_submodule(layout.output_embeddings)
        _set_module(model, layout.output_embeddings, FactorizedLMHead(factorized, head))


def materialize_factorized(model: nn.Module, layout: EmbeddingLayout) -> None:
    """Turn a factorized input embedding back into a plain ``nn.Embedding`` (and re-tie a tied head)."""
    emb = model.get_submodule(layout.input_embeddings)
    if not isinstance(emb, FactorizedEmbedding):
        return
    dense = emb.materialize(dtype=emb.coordinates.dtype)
    _set_module(model, layout.input_embeddings, dense)
    if layout.output_embeddings is not None:
        head = model.get_submodule(layout.output_embeddings)
        if isinstance(head, FactorizedLMHead):
            original = head._refs[1]
            original.weight = dense.weight
            _set_module(model, layout.output_embeddings, original)


def setup_trainable(
    model: nn.Module,
    *,
    model_dir: str | Path,
    embeddings: str = "all",
    train_lm_head: bool = True,
    train_output_bias: bool = True,
    factorized: bool = True,
    train_primitives: bool | None = None,
    lora: bool = True,
    lora_r: int = 16,
    lora_alpha: float = 32.0,
    lora_dropout: float = 0.05,
    target_modules: list[str] | None = None,
) -> TrainableSetup:
    """Freeze ``model``, add LoRA adapters and make the vocabulary-sized parameters trainable.

    ``embeddings``: ``all`` rows, only ``new`` rows (``id_map.json`` of ``model_dir``), or ``frozen``.
    ``factorized``: when ``model_dir`` has ``factorized_embedding.safetensors``, train its factors in place
    of the dense input embeddings. ``train_primitives``: ``None`` keeps the file's setting.
    """
    if embeddings not in EMBEDDING_MODES:
        raise ConfigError(f"embeddings must be one of {', '.join(EMBEDDING_MODES)}, got {embeddings!r}")
    layout = locate(model)
    if not layout.tie_is_consistent:
        from vocabshift.surgery.layout import describe_tie_mismatch

        raise ModelError(describe_tie_mismatch(layout), path=model_dir)
    model.requires_grad_(False)

    fact = _load_factorized(model_dir, embeddings, train_primitives) if factorized else None

    targets: list[str] = []
    wrapped: nn.Module = model
    if lora:
        from peft import LoraConfig, get_peft_model

        targets, conv1d = find_target_modules(model, target_modules)
        peft_config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                 target_modules=targets, fan_in_fan_out=conv1d, bias="none")
        wrapped = get_peft_model(model, peft_config)
        # get_peft_model freezes every non-adapter parameter; the embeddings are made trainable below.

    if fact is not None:
        install_factorized(model, layout, fact)
        fact.coordinates.requires_grad_(True)

    new_rows = None
    vocab: list[nn.Parameter] = []
    primitives: list[nn.Parameter] = []
    if embeddings != "frozen":
        if fact is not None:
            vocab.append(fact.coordinates)
            if not fact.freeze_primitives:
                # Their own group: shared by every row, they need a smaller learning rate than the rows.
                primitives.append(fact.primitives)
        else:
            vocab.append(model.get_parameter(layout.input_weight))
        if layout.output_weight is not None and not layout.tied and train_lm_head:
            vocab.append(model.get_parameter(layout.output_weight))
        if layout.output_bias is not None and train_output_bias:
            vocab.append(model.get_parameter(layout.output_bias))
    for p in vocab + primitives:
        p.requires_grad_(True)
    if embeddings == "new":
        new_rows = read_new_rows(model_dir, layout.vocab_size)
        hook = RowGradientMask(new_rows)
        for p in vocab:
            if p.shape[0] == layout.vocab_size:  # not the primitives (frozen above)
                p.register_hook(hook)
        log.info("training %d new of %d embedding rows", int(new_rows.sum()), layout.vocab_size)

    groups = _parameter_groups(wrapped, vocab, primitives)
    if not groups["embeddings"] and not groups["lora"]:
        raise ConfigError("nothing to train: LoRA is off and the embeddings are frozen")
    n_train = sum(p.numel() for n, p in wrapped.named_parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in wrapped.parameters())
    log.info("trainable: %s parameters of %s (%.2f%%): %d embedding tensors, %d LoRA tensors on %d modules%s",
             f"{n_train:,}", f"{n_all:,}", 100 * n_train / max(n_all, 1), len(groups["embeddings"]),
             len(groups["lora"]), len(targets), ", factorized embeddings" if fact is not None else "")
    return TrainableSetup(model=wrapped, base=model, layout=layout, groups=groups, target_modules=targets,
                          new_rows=new_rows, factorized=fact is not None)


def _load_factorized(model_dir: str | Path, embeddings: str,
                     train_primitives: bool | None) -> FactorizedEmbedding | None:
    """The model directory's factorized embedding to train in place of the dense one, if it has one and the
    embeddings train; ``train_primitives`` (None: the file's setting) decides whether its primitives train."""
    fact_path = Path(model_dir) / FACTORIZED_FILE
    if embeddings == "frozen" or not fact_path.is_file():
        return None
    fact = FactorizedEmbedding.load(fact_path)
    if train_primitives is not None:
        fact.primitives.requires_grad_(train_primitives)
    if embeddings == "new" and not fact.freeze_primitives:
        raise ConfigError("training only new rows of a factorized embedding needs frozen primitives (they "
                          "change every row)", hint="set train_primitives: false, or embeddings: all")
    return fact


def _parameter_groups(wrapped: nn.Module, vocab: list[nn.Parameter],
                      primitives: list[nn.Parameter]) -> dict[str, list[str]]:
    """Names of the trainable parameters of ``wrapped`` by optimizer group: ``embeddings`` (``vocab``),
    ``lora`` (the adapters) and, when there are any, ``primitives``."""
    vocab_ids, primitive_ids = {id(p) for p in vocab}, {id(p) for p in primitives}
    groups: dict[str, list[str]] = {"embeddings": [], "lora": []}
    if primitives:
        groups["primitives"] = []
    for name, p in wrapped.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in vocab_ids:
            groups["embeddings"].append(name)
        elif id(p) in primitive_ids:
            groups["primitives"].append(name)
        elif "lora_" in name:
            groups["lora"].append(name)
        else:
            raise ModelError(f"internal: unexpected trainable parameter {name}")
    return groups


def merge_for_export(setup: TrainableSetup) -> nn.Module:
    """The trained transformers model with LoRA merged in and factorized embeddings materialized."""
    # Materialize first: PEFT's merge checks the tie and would mark a factorized tied head untied.
    materialize_factorized(setup.base, setup.layout)
    model = setup.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload(safe_merge=True)
    layout = locate(model)
    if layout.tied != setup.layout.tied or not layout.tie_is_consistent:
        raise ModelError(f"internal: the head lost its tie during merging (tied before: {setup.layout.tied})")
    return model


def describe_parameters(setup: TrainableSetup) -> dict[str, Any]:
    """Counts for reports: trainable per group, total."""
    named = dict(setup.model.named_parameters())
    counts = {g: sum(named[n].numel() for n in names) for g, names in setup.groups.items()}
    return {"trainable": counts, "trainable_total": sum(counts.values()),
            "total": sum(p.numel() for p in setup.model.parameters()),
            "lora_modules": len(setup.target_modules), "factorized": setup.factorized,
            "new_rows_only": setup.new_rows is not None}
