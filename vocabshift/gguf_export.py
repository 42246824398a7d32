"""Write a Llama-family model folder as one GGUF file for llama.cpp and ollama (``vocabshift export --gguf``).

llama.cpp's own ``convert_hf_to_gguf.py`` recognizes a BPE vocabulary by hashing the ids it gives a fixed
text, so it refuses every vocabulary vocabshift trains, prunes or extends ("BPE pre-tokenizer was not
recognized"), although the new tokenizer splits text exactly as the source's does. This module writes
the file with the ``gguf`` package (the writer llama.cpp maintains) and follows that converter's
conventions for Llama, Mistral and Qwen2 (SmolLM2 is a Llama):

* tensors under llama.cpp's names (``gguf.get_tensor_name_map``: ``token_embd``, ``blk.N.attn_q`` ...,
  ``output`` only for an untied head), with the Q/K row permutation llama.cpp's Llama graph expects
  (``LlamaModel.permute``; transformers undoes it on load, so a round trip is exact);
* 1-D tensors (norms, biases) in f32; 2-D ones in the chosen type, q8_0 falling back to f16 for rows
  that are not a whole number of blocks, as the converter does;
* the tokenizer as metadata: ``gpt2`` (byte-level BPE: tokens, types, merges) or ``llama``
  (sentencepiece-style BPE with byte fallback: scores), special token ids, ``add_bos``/``add_eos``
  and the chat template, read with ``gguf.SpecialVocab`` as the converter reads them;
* ``tokenizer.ggml.pre``, the name of the source's pre-tokenizer, which llama.cpp maps to its splitting
  regexes. It is what the hash would have found for the source model. It is taken from, in this order:
  the ``pre`` given (``--gguf-pre``); the source GGUF when a stage report of the model folder names one
  (``tokenizer.ggml.pre`` of that file, e.g. ``smollm``); the ``tokenizer.json`` pre-tokenizer for the
  families known here (:data:`KNOWN_SPLITS`). Anything else is refused, asking for ``--gguf-pre``.

The file is written atomically (a temporary sibling renamed into place), tensor by tensor, so memory
holds one tensor at a time. :func:`verify_gguf` loads it back with transformers (``gguf_file=``) and
compares logits with the folder's model.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vocabshift.config import ConfigMixin
from vocabshift.errors import ConfigError, ModelError, TokenizerError
from vocabshift.outputs import atomic_output_file, writes_output
from vocabshift.tokenization.source import TokenizerFamily, _walk_components, detect_family

log = logging.getLogger(__name__)

GGUF_TYPES = ("auto", "f32", "f16", "bf16", "q8_0")
# transformers model_type -> GGUF architecture (llama.cpp converts Mistral as a Llama).
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}
SUPPORTED = "Llama, Mistral, Qwen2 and SmolLM2 (model_type llama, mistral, qwen2)"
# The architectures whose attention runs on permuted Q/K rows in llama.cpp.
_PERMUTED = {"llama"}
# Tensors of one block and of the whole model that llama.cpp's dense Llama/Qwen2 graphs read.
_BLOCK_TENSORS = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
                  "ffn_down"}
_GLOBAL_TENSORS = {"token_embd", "output_norm", "output"}
# Split regexes of tokenizer.json pre-tokenizers -> llama.cpp's name for them (as in llama.cpp's
# convert_hf_to_gguf.py and transformers' GGUF loader).
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
KNOWN_SPLITS = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2"}
# Names llama.cpp knows (src/llama-vocab.cpp); another name is written with a warning, since newer
# llama.cpp versions add names.
KNOWN_PRE = frozenset({
    "default", "llama3", "llama-v3", "llama-bpe", "deepseek-llm", "deepseek-coder", "deepseek-v3", "falcon",
    "falcon3", "mpt", "starcoder", "gpt-2", "refact", "command-r", "stablelm2", "qwen2", "qwen35", "olmo",
    "dbrx", "smaug-bpe", "poro-chat", "chatglm-bpe", "viking", "jais", "tekken", "smollm", "codeshell", "bloom",
    "gpt3-finnish", "exaone", "phi-2", "chameleon", "minerva-7b", "roberta-bpe", "gigachat", "megrez",
    "deepseek-r1-qwen", "gpt-4o", "superbpe", "trillion", "bailingmoe", "llama4", "pixtral", "seed-coder",
})
_STAGE_REPORTS = ("init_report.json", "extend_report.json", "prune_report.json", "id_map.json",
                  "tokenizer_report.json")
PROBE_TEXTS = ("The quick brown fox jumps over the lazy dog. 0123456789",
               "¿Qué tal? El niño comió ñandú y pingüino en Logroño; ¡qué día más señalado!",
               "Toda persona tiene derecho a la educación.\n  Tabs\tand  spaces, 12,345.67 €")


def _quant_type(name: str) -> Any:
    import gguf

    return {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
            "bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0}[name]


def _file_type(name: str) -> Any:
    import gguf

    return {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
            "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[name]


def check_gguf_type(value: str) -> None:
    """Refuse a GGUF tensor type that is not one of :data:`GGUF_TYPES`."""
    if value not in GGUF_TYPES:
        raise ConfigError(f"GGUF type must be one of {', '.join(GGUF_TYPES)}, got {value!r}",
                          hint="f32 is exact; f16/bf16 halve the file; q8_0 quarters it")


def check_gguf_pre(value: str | None) -> None:
    """Refuse a pre-tokenizer name that cannot be one of llama.cpp's (lowercase letters, digits, . and -)."""
    if value is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", value):
        raise ConfigError(f"not a llama.cpp pre-tokenizer name: {value!r}",
                          hint="use the name llama.cpp gives the source model, e.g. smollm, llama-bpe, qwen2, gpt-2")


@dataclass
class GGUFConfig(ConfigMixin):
    """Write a model folder (an export, or any prune/extend/init output) as one GGUF file."""

    model: str = field(metadata={"help": "Model folder with safetensors weights and tokenizer.json."})
    out: str = field(metadata={"help": "GGUF file to write (atomically)."})
    type: str = field(default="auto", metadata={
        "help": "Tensor type: auto (the weights' own: f32, f16 or bf16), f32, f16, bf16 or q8_0."})
    pre: str | None = field(default=None, metadata={
        "help": "llama.cpp pre-tokenizer name (tokenizer.ggml.pre); default: the source's, see docs."})
    verify: bool = field(default=True, metadata={
        "help": "Load the file back with transformers and compare its logits with the folder's model."})
    force: bool = field(default=False, metadata={"help": "Replace an existing file."})

    def __post_init__(self) -> None:
        check_gguf_type(self.type)
        check_gguf_pre(self.pre)


@dataclass
class GGUFResult:
    """What :func:`export_gguf` wrote."""

    out: Path
    report: dict[str, Any]


@writes_output
def export_gguf(config: GGUFConfig) -> GGUFResult:
    """Write ``config.model`` as a GGUF file at ``config.out`` (and verify it when asked)."""
    out = Path(config.out)
    with atomic_output_file(out, force=config.force) as tmp:
        report = write_gguf(config.model, tmp, gguf_type=config.type, pre=config.pre, name=out.stem)
        if config.verify:
            report["verify"] = verify_gguf(tmp, config.model, report["type"])
    report["file"] = str(out)
    return GGUFResult(out=out, report=report)


# ---------------------------------------------------------------------------------------------------------
# Architecture


def _hf_config(model_dir: Path) -> Any:
    from transformers import AutoConfig

    from vocabshift.safe_loading import LOAD_KWARGS, refuse_remote_code

    refuse_remote_code(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelError("not a model folder (no config.json)", path=model_dir,
                         hint="GGUF export takes a transformers model folder, such as `vocabshift export --out`")
    return AutoConfig.from_pretrained(str(model_dir), **LOAD_KWARGS)


def gguf_architecture(config: Any, path: str | Path | None = None) -> str:
    """The GGUF architecture for a transformers config, or a :class:`ModelError` naming what is supported."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ModelError(f"GGUF export does not support model_type {model_type!r}", path=path,
                         hint=f"supported: {SUPPORTED}; other models stay in transformers format")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    if rope_type not in (None, "default"):
        raise ModelError(f"GGUF export does not support rope scaling {rope_type!r} yet", path=path,
                         hint="only models with plain RoPE (no rope_scaling) are exported")
    if getattr(config, "use_sliding_window", False):
        raise ModelError("GGUF export does not support sliding-window attention (use_sliding_window)", path=path)
    if getattr(config, "mlp_bias", False):
        raise ModelError("GGUF export does not support MLP biases (mlp_bias)", path=path)
    return ARCHITECTURES[model_type]


def _head_dim(config: Any) -> int:
    head_dim = getattr(config, "head_dim", None)
    return int(head_dim) if head_dim else config.hidden_size // config.num_attention_heads


def _rope_theta(config: Any) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta") if isinstance(rope, dict) else None
    return float(theta if theta is not None else getattr(config, "rope_theta", 10000.0))


def _add_architecture(writer: Any, arch: str, config: Any, vocab_rows: int) -> None:
    """The ``{arch}.*`` hyperparameters llama.cpp reads for a dense Llama/Qwen2 model."""
    heads = config.num_attention_heads
    head_dim = _head_dim(config)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(_rope_theta(config))
    if arch == "llama":
        writer.add_rope_dimension_count(head_dim)
        writer.add_vocab_size(vocab_rows)
    if head_dim != config.hidden_size // heads:  # e.g. Mistral-Nemo: heads narrower than hidden / heads
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


def _permute(weights: Any, n_head: int, n_head_kv: int) -> Any:
    """llama.cpp's ``LlamaModel.permute``: rotary halves interleaved per head (rows of Q or K)."""
    if n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


@dataclass
class _Tensor:
    gguf_name: str
    hf_name: str
    file: Path
    shape: tuple[int, ...]
    qtype: Any


def _plan_tensors(model_dir: Path, arch: str, config: Any, tied: bool, gguf_type: str) -> list[_Tensor]:
    """Every weight of the folder under its llama.cpp name, in the type it is written in."""
    import gguf
    from safetensors import safe_open

    from vocabshift.surgery.checkpoint import check_model_files
    from vocabshift.surgery.lazy import check_safetensors

    check_model_files(model_dir)
    files = check_safetensors(model_dir)
    if not files:
        raise ModelError("no safetensors weights in the model folder", path=model_dir,
                         hint="GGUF export reads model.safetensors (vocabshift writes it; re-save a .bin model "
                              "with save_pretrained)")
    arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    name_map = gguf.get_tensor_name_map(arch_enum, config.num_hidden_layers)
    qtype = _quant_type(gguf_type)
    planned: list[_Tensor] = []
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for hf_name in f.keys():  # noqa: SIM118  (safe_open is not a mapping)
                if hf_name.endswith("rotary_emb.inv_freq"):
                    continue  # recomputed from rope.freq_base, as llama.cpp's converter skips it
                if hf_name == "lm_head.weight" and tied:
                    continue  # a tied head is the embedding: llama.cpp reads token_embd for both
                base, _, suffix = hf_name.rpartition(".")
                gguf_base = name_map.get_name(base)
                kind = gguf_base.rsplit(".", 1)[-1] if gguf_base else None
                if kind not in _BLOCK_TENSORS | _GLOBAL_TENSORS or suffix not in ("weight", "bias"):
                    raise ModelError(f"GGUF export has no place for the tensor {hf_name!r}", path=path,
                                     hint=f"supported: dense {SUPPORTED} checkpoints")
                shape = tuple(f.get_slice(hf_name).get_shape())
                tensor_qtype = qtype
                if len(shape) == 1:
                    tensor_qtype = gguf.GGMLQuantizationType.F32  # norms and biases stay f32, as in llama.cpp
                elif tensor_qtype == gguf.GGMLQuantizationType.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
                    tensor_qtype = gguf.GGMLQuantizationType.F16  # the converter's fallback for odd rows
                planned.append(_Tensor(f"{gguf_base}.{suffix}", hf_name, path, shape, tensor_qtype))
    names = {t.gguf_name for t in planned}
    if "token_embd.weight" not in names:
        raise ModelError("the checkpoint has no input embedding (model.embed_tokens.weight)", path=model_dir)
    if not tied and "output.weight" not in names:
        raise ModelError("the config says the LM head is untied, but the checkpoint has no lm_head.weight",
                         path=model_dir)
    order = {"token_embd": -1, "output_norm": 1 << 30, "output": (1 << 30) + 1}
    return sorted(planned, key=lambda t: (order.get(t.gguf_name.split(".")[0], 0),
                                          int(t.gguf_name.split(".")[1]) if t.gguf_name.startswith("blk.") else 0))


def _tensor_bytes(t: _Tensor) -> tuple[tuple[int, ...], Any, int]:
    """``(shape as add_tensor_info takes it, numpy dtype, bytes)`` of a planned tensor."""
    import gguf
    import numpy as np

    count = int(np.prod(t.shape))
    if t.qtype == gguf.GGMLQuantizationType.F32:
        return t.shape, np.float32, 4 * count
    if t.qtype == gguf.GGMLQuantizationType.F16:
        return t.shape, np.float16, 2 * count
    byte_shape = gguf.quants.quant_shape_to_byte_shape(t.shape, t.qtype)
    return byte_shape, np.uint8, int(np.prod(byte_shape))


def _tensor_data(t: _Tensor, f: Any, arch: str, config: Any) -> Any:
    """The tensor as llama.cpp stores it: permuted Q/K rows for a Llama, converted to its type."""
    import gguf
    import torch

    data = f.get_tensor(t.hf_name).to(torch.float32).numpy()
    kind = t.gguf_name.split(".")[-2]
    if arch in _PERMUTED and kind in ("attn_q", "attn_k"):
        heads = config.num_attention_heads
        data = _permute(data, heads, heads if kind == "attn_q" else (config.num_key_value_heads or heads))
    return gguf.quants.quantize(data, t.qtype)


def _auto_type(config: Any) -> str:
    """The type of the folder's weights: bf16 and f16 stay as they are, everything else is f32."""
    import torch

    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return {torch.bfloat16: "bf16", torch.float16: "f16", "bfloat16": "bf16", "float16": "f16"}.get(dtype, "f32")


# ---------------------------------------------------------------------------------------------------------
# Tokenizer


def _read_gguf_pre(path: Path) -> str | None:
    """``tokenizer.ggml.pre`` of a GGUF file (None when it has none)."""
    from gguf import GGUFReader

    field_ = GGUFReader(str(path)).fields.get("tokenizer.ggml.pre")
    return None if field_ is None else str(field_.contents())


def _source_gguf(model_dir: Path, depth: int = 0) -> Path | None:
    """The GGUF file the folder's vocabulary stages started from, found through their reports
    (``source`` of init/extend/prune reports and ``id_map.json``, followed through earlier stages)."""
    if depth > 8:
        return None
    for name in _STAGE_REPORTS:
        try:
            source = json.loads((model_dir / name).read_text(encoding="utf-8")).get("source")
        except (OSError, ValueError, AttributeError):
            continue
        if not isinstance(source, str) or not source:
            continue
        path = Path(source)
        if path.is_file() and path.suffix == ".gguf":
            return path
        if path.is_dir():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1 and not (path / "config.json").exists():
                return ggufs[0]
            if path.resolve() != model_dir.resolve():
                found = _source_gguf(path, depth + 1)
                if found is not None:
                    return found
    return None


def pre_from_tokenizer_json(tokenizer_json: dict[str, Any]) -> str | None:
    """llama.cpp's name for a byte-level BPE pre-tokenizer of a known family, else None.

    * ``ByteLevel`` with its own (GPT-2) regex: ``gpt-2``;
    * ``Digits(individual_digits)`` then GPT-2 ``ByteLevel`` (SmolLM, StarCoder): ``smollm``;
    * a ``Split`` on Llama-3's or Qwen2's regex then ``ByteLevel`` without regex: ``llama-bpe``, ``qwen2``.
    """
    parts = _walk_components(tokenizer_json.get("pre_tokenizer"))
    types = [p.get("type") for p in parts]
    if not types or types[-1] != "ByteLevel" or parts[-1].get("add_prefix_space"):
        return None
    byte_level_regex = parts[-1].get("use_regex", True)
    if types == ["ByteLevel"] and byte_level_regex:
        return "gpt-2"
    if types == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and byte_level_regex:
        return "smollm"
    if types == ["Split", "ByteLevel"] and not byte_level_regex and parts[0].get("behavior") == "Isolated" \
            and not parts[0].get("invert"):
        return KNOWN_SPLITS.get((parts[0].get("pattern") or {}).get("Regex", ""))
    return None


def resolve_pre(model_dir: str | Path, tokenizer_json: dict[str, Any], pre: str | None = None) -> tuple[str, str]:
    """``(name, where it came from)`` of the pre-tokenizer written as ``tokenizer.ggml.pre``.

    The name given wins; then the source GGUF's own name (the stage reports say which file the vocabulary
    started from); then the ``tokenizer.json`` pre-tokenizer of a known family. Raises otherwise.
    """
    if pre is not None:
        if pre not in KNOWN_PRE:
            log.warning("pre-tokenizer %r is not one llama.cpp is known to have: llama.cpp refuses unknown names", pre)
        return pre, "given"
    source = _source_gguf(Path(model_dir))
    if source is not None:
        found = _read_gguf_pre(source)
        if found:
            return found, f"source GGUF {source}"
    found = pre_from_tokenizer_json(tokenizer_json)
    if found is not None:
        return found, "tokenizer.json pre-tokenizer"
    pre_types = [p.get("type") for p in _walk_components(tokenizer_json.get("pre_tokenizer"))]
    raise TokenizerError(f"cannot tell llama.cpp's name for this pre-tokenizer ({' + '.join(pre_types) or 'none'})",
                         path=Path(model_dir) / "tokenizer.json",
                         hint="pass the source model's name with --gguf-pre (e.g. smollm, llama-bpe, qwen2, gpt-2: "
                              "tokenizer.ggml.pre of the source's GGUF, or the name llama.cpp's converter prints)")


def _gpt2_vocab(tokenizer_json: dict[str, Any], added: dict[int, Any], vocab_rows: int) -> tuple[list[str], list[int]]:
    """Tokens and types of a byte-level BPE, as llama.cpp's converter lists them (``get_vocab_base``).

    Normal tokens keep their byte-level spelling; added tokens are raw text, CONTROL when special and
    USER_DEFINED otherwise; rows past the tokenizer (padding) are ``[PADn]``, UNUSED.
    """
    import gguf

    reverse = {i: t for t, i in tokenizer_json["model"]["vocab"].items()}
    tokens, types = [], []
    for i in range(vocab_rows):
        if i in added:
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        elif i in reverse:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    return tokens, types


def _spm_vocab(tokenizer_json: dict[str, Any], added: dict[int, Any], unk_id: int | None,
               vocab_rows: int) -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and types of a sentencepiece-style BPE (byte fallback) from its ``tokenizer.json``.

    llama.cpp merges the adjacent pair whose result has the highest score; a token made by the merge of
    rank r scores -r, so it merges in the order the ``merges`` list gives, as the tokenizer here does.
    Byte pieces (``<0xNN>``) are BYTE, the unknown token UNKNOWN, specials CONTROL.
    """
    import gguf

    model = tokenizer_json["model"]
    merges = model.get("merges") or []
    score: dict[str, float] = {}
    for rank, merge in enumerate(merges):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        score.setdefault(left + right, -float(rank))
    reverse = {i: t for t, i in model["vocab"].items()}
    tokens, scores, types = [], [], []
    for i in range(vocab_rows):
        token = added[i].content if i in added else reverse.get(i, f"[PAD{i}]")
        if i == unk_id:
            kind = gguf.TokenType.UNKNOWN
        elif i in added:
            kind = gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED
        elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token):
            kind = gguf.TokenType.BYTE
        elif i not in reverse:
            kind = gguf.TokenType.UNUSED
        else:
            kind = gguf.TokenType.NORMAL
        tokens.append(token)
        scores.append(score.get(token, -float(len(merges) + i)) if kind == gguf.TokenType.NORMAL else 0.0)
        types.append(kind)
    return tokens, scores, types


def _tokenizer_json(model_dir: Path) -> tuple[dict[str, Any], TokenizerFamily]:
    """The folder's ``tokenizer.json`` and its family, refused unless GGUF has a tokenizer model for it."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise TokenizerError("GGUF export needs tokenizer.json beside the model", path=model_dir,
                             hint="save the tokenizer with a fast (tokenizers) backend")
    tokenizer_json = json.loads(path.read_text(encoding="utf-8"))
    family = detect_family(tokenizer_json, path)
    if family is TokenizerFamily.BYTE_LEVEL_BPE or (
            family is TokenizerFamily.SENTENCEPIECE_BPE and tokenizer_json["model"].get("byte_fallback")):
        return tokenizer_json, family
    raise TokenizerError(f"GGUF export does not support {family.value} tokenizers", path=path,
                         hint="supported: byte-level BPE (GPT-2/Llama-3/Qwen2/SmolLM style) and sentencepiece "
                              "BPE with byte fallback (Llama-2/Mistral style)")


def check_gguf_model(model_dir: str | Path, pre: str | None = None, origin: str | Path | None = None) -> None:
    """Fail early, before any long work, when ``model_dir`` cannot be written as GGUF: its architecture,
    its tokenizer, or (byte-level BPE) no pre-tokenizer name to write (see :func:`resolve_pre`)."""
    model_dir = Path(model_dir)
    gguf_architecture(_hf_config(model_dir), model_dir)
    tokenizer_json, family = _tokenizer_json(model_dir)
    if family is TokenizerFamily.BYTE_LEVEL_BPE:
        resolve_pre(Path(origin) if origin else model_dir, tokenizer_json, pre)


def _add_tokenizer(writer: Any, model_dir: Path, vocab_rows: int, pre: str | None, origin: Path) -> dict[str, Any]:
    """The tokenizer metadata; returns what was written, for the report."""
    import gguf
    from tokenizers import Tokenizer

    tokenizer_json, family = _tokenizer_json(model_dir)
    tokenizer = Tokenizer.from_str(json.dumps(tokenizer_json))
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size > vocab_rows:
        raise ModelError(f"the tokenizer has {size:,} tokens but the model only {vocab_rows:,} embedding rows",
                         path=model_dir)
    added = tokenizer.get_added_tokens_decoder()
    # the special tokens GGUF has keys for (a RoBERTa-style post-processor also names a cls token)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_rows,
                                special_token_types=("bos", "eos", "unk", "sep", "pad", "mask"))
    info: dict[str, Any] = {"tokens": vocab_rows, "tokenizer_tokens": size}
    if family is TokenizerFamily.BYTE_LEVEL_BPE:
        name, where = resolve_pre(origin, tokenizer_json, pre)
        tokens, types = _gpt2_vocab(tokenizer_json, added, vocab_rows)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(name)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        info.update(model="gpt2", pre=name, pre_from=where)
    else:
        unk = tokenizer_json["model"].get("unk_token")
        unk_id = special.special_token_ids.get("unk", tokenizer_json["model"]["vocab"].get(unk) if unk else None)
        tokens, scores, types = _spm_vocab(tokenizer_json, added, unk_id, vocab_rows)
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre(pre or "default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_add_space_prefix(_adds_space_prefix(tokenizer_json))
        info.update(model="llama", pre=pre or "default", pre_from="given" if pre else "sentencepiece")
    # What the folder's tokenizer really adds around a text, whatever file says it (post-processor, config).
    special.add_special_token.update(_added_specials(model_dir))
    special.add_to_gguf(writer, quiet=True)
    info.update(special_token_ids=dict(special.special_token_ids), add_special_tokens=dict(special.add_special_token),
                merges=len(special.merges), chat_template=special.chat_template is not None)
    return info


def _added_specials(model_dir: Path) -> dict[str, bool]:
    """Whether the folder's tokenizer puts BOS before and EOS after a text (``add_bos``/``add_eos``)."""
    from transformers import AutoTokenizer

    from vocabshift.safe_loading import LOAD_KWARGS

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), **LOAD_KWARGS)
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return {"bos": bos is not None and ids[:1] == [bos], "eos": eos is not None and ids[-1:] == [eos]}


def _adds_space_prefix(tokenizer_json: dict[str, Any]) -> bool:
    """Whether a sentencepiece-style tokenizer puts ``▁`` before the text (Metaspace or Prepend normalizer)."""
    for part in _walk_components(tokenizer_json.get("pre_tokenizer")):
        if part.get("type") == "Metaspace":
            return part.get("prepend_scheme", "always") != "never" and part.get("add_prefix_space", True)
    return any(n.get("type") == "Prepend" for n in _walk_components(tokenizer_json.get("normalizer")))


# ---------------------------------------------------------------------------------------------------------
# Writing and verifying


def write_gguf(model_dir: str | Path, path: str | Path, *, gguf_type: str = "auto", pre: str | None = None,
               name: str | None = None, origin: str | Path | None = None) -> dict[str, Any]:
    """Write the model folder ``model_dir`` as a GGUF file at ``path`` (not atomically: see :func:`export_gguf`).

    ``origin`` is the folder whose stage reports say which model the vocabulary came from (default:
    ``model_dir``; an export passes the run's model). Returns a report: architecture, type, tensors, tied
    head, tokenizer metadata written.
    """
    import gguf
    from safetensors import safe_open

    model_dir, path = Path(model_dir), Path(path)
    check_gguf_type(gguf_type)
    check_gguf_pre(pre)
    config = _hf_config(model_dir)
    arch = gguf_architecture(config, model_dir)
    if gguf_type == "auto":
        gguf_type = _auto_type(config)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    tensors = _plan_tensors(model_dir, arch, config, tied, gguf_type)
    vocab_rows = next(t.shape[0] for t in tensors if t.gguf_name == "token_embd.weight")

    writer = gguf.GGUFWriter(path=None, arch=arch)
    writer.add_type(gguf.GGUFType.MODEL)
    name = name or model_dir.name
    # transformers loads a file named exactly "mistral" as an architecture gguf-py lacks (and fails)
    writer.add_name("Mistral" if name == "mistral" else name)
    _add_architecture(writer, arch, config, vocab_rows)
    writer.add_file_type(_file_type(gguf_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokenizer = _add_tokenizer(writer, model_dir, vocab_rows, pre, Path(origin) if origin else model_dir)
    for t in tensors:
        shape, dtype, nbytes = _tensor_bytes(t)
        writer.add_tensor_info(t.gguf_name, shape, dtype, nbytes, raw_dtype=t.qtype)
    try:
        writer.write_header_to_file(path)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        handles: dict[Path, Any] = {}
        for t in tensors:  # one tensor in memory at a time
            if t.file not in handles:
                handles[t.file] = safe_open(str(t.file), framework="pt")
            writer.write_tensor_data(_tensor_data(t, handles[t.file], arch, config))
    finally:
        writer.close()
    counts: dict[str, int] = {}
    for t in tensors:
        counts[t.qtype.name.lower()] = counts.get(t.qtype.name.lower(), 0) + 1
    log.info("GGUF %s (%s, %d tensors, pre-tokenizer %s) -> %s", arch, gguf_type, len(tensors),
             tokenizer.get("pre"), path)
    return {"architecture": arch, "model_type": config.model_type, "type": gguf_type, "tensors": len(tensors),
            "tensor_types": counts, "tied": tied, "bytes": path.stat().st_size, "tokenizer": tokenizer}


def verify_gguf(path: str | Path, model_dir: str | Path, gguf_type: str) -> dict[str, Any]:
    """Load the GGUF file with transformers (``gguf_file=``) and compare it with the folder's model.

    Logits on a probe batch: an f32 file must agree within ``1e-4`` x the largest logit (at least 1);
    other types report the difference and how often the argmax agrees. The tokenizer transformers
    rebuilds from the file is compared with the folder's on sample text (reported, not enforced:
    transformers rebuilds some pre-tokenizers, e.g. ``smollm``'s digit split, differently from llama.cpp).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from vocabshift.export import FP32_TOLERANCE, _probe_ids
    from vocabshift.safe_loading import LOAD_KWARGS

    path, model_dir = Path(path), Path(model_dir)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        reference_model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, **LOAD_KWARGS)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32,
                                                     **LOAD_KWARGS)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), **LOAD_KWARGS)
        gguf_tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, **LOAD_KWARGS)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    probe = _probe_ids(tokenizer, reference_model.get_input_embeddings().weight.shape[0])
    reference_model.eval()
    model.eval()
    with torch.no_grad():
        reference = reference_model(input_ids=probe).logits.float()
        logits = model(input_ids=probe).logits.float()
    diff = float((logits - reference).abs().max())
    agree = float((logits.argmax(-1) == reference.argmax(-1)).float().mean())
    tolerance = FP32_TOLERANCE * max(1.0, float(reference.abs().max()))
    mismatched = [text for text in PROBE_TEXTS
                  if tokenizer(text, add_special_tokens=False)["input_ids"]
                  != gguf_tokenizer(text, add_special_tokens=False)["input_ids"]]
    result = {"max_abs_logit_difference": diff, "argmax_agreement": agree, "tolerance": tolerance,
              "tokenizer_agrees": not mismatched, "tokenizer_texts": len(PROBE_TEXTS),
              "tokenizer_mismatches": mismatched}
    if gguf_type == "f32" and not diff <= tolerance:
        raise ModelError(f"the GGUF file's logits differ from the model's by {diff:.2e} (tolerance {tolerance:.2e})",
                         path=path, hint="please report this with the model's config.json")
    if mismatched:
        log.warning("transformers rebuilds the GGUF tokenizer differently on %d of %d sample texts",
                    len(mismatched), len(PROBE_TEXTS))
    log.info("verified GGUF: logits within %.2e, argmax agreement %.3f", diff, agree)
    return result


__all__ = ["GGUFConfig", "GGUFResult", "GGUF_TYPES", "check_gguf_model", "export_gguf", "gguf_architecture",
           "pre_from_tokenizer_json", "resolve_pre", "verify_gguf", "write_gguf"]
