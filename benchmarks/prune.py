"""Benchmark: prune an XLM-R-base-shaped model to {Latin, Ethiopic, Arabic} with ``vocabshift.vocabulary.prune``.

    python benchmarks/prune.py                        # 250,002 tokens, 12 layers, all cases, updates docs
    python benchmarks/prune.py --cases gemma3 --repeats 3 --no-write    # the 262k-token Gemma 3 case
    python benchmarks/prune.py --cases shipped --no-write --layers 2     # quick check

The issue's goals, for a 250k-token, 768-dimensional model with a real multilingual Unigram tokenizer:
prune to {Latin, Ethiopic, Arabic} in under 10 s, with a peak memory under 1.5x the size of the output
weights; and report the size reduction (MAFT, Alabi et al. 2022, pruned XLM-R base to about 50%).

The model is ``XLMRobertaForMaskedLM`` in XLM-R base's shape (hidden 768, 12 layers of 12 heads,
intermediate 3072, 514 positions, tied MLM head) with random weights (seed 0), saved as one fp32
safetensors file; its vocabulary is always its tokenizer's size. The tokenizer is an XLM-R-style
sentencepiece Unigram with a native ``sentencepiece.bpe.model`` (loaded by ``XLMRobertaTokenizer``,
saved so that ``tokenizer.json`` sits beside it), trained here with sentencepiece in one of two cases:

* ``shipped``: on the 24 samples shipped in ``vocabshift/data`` (two Bibles, 22 UDHR translations,
  8.3 MB), asking for ``--vocab-size`` tokens with ``hard_vocab_limit=False``. That text supports
  only about 41k pieces (sentencepiece drops every piece no Viterbi segmentation of the text uses),
  so this case is real text at a fraction of the issue's size.
* ``generated``: on about 100 MB generated from the same samples, one order-3 character Markov
  chain per UDHR language (English and Spanish also learn from their Bibles), 2.5M characters per
  language: pseudo-words with each language's real character statistics, in its own script, enough
  distinct words for a 250k-piece Unigram. This is the issue's shape (250,002 tokens, as XLM-R).

* ``gemma3`` (issue 18's real-scale case): a ``Gemma3ForCausalLM`` in gemma-3-270m's shape (18 layers, hidden
  640, tied head, 268M parameters, 1.07 GB fp32) with a 262,144-token sentencepiece BPE in Gemma 3's layout
  (``tokenizer.json`` with byte fallback and ``tokenizer.model``; BPE trained by ``tokenizers`` on the generated
  text), pruned to {Latin, Cyrillic}. Goal: under 8 s whole process.

Every measured run is a fresh subprocess that runs ``prune(PruneConfig(model=..., out=...,
keep_scripts=..., force=True))``, on the lean path (the default: the
safetensors file is streamed tensor by tensor) and with ``in_memory=True``. Time is measured inside
the child from its first statement (imports included, interpreter start-up not) and for the
``prune()`` call alone. Peak memory is the child's peak RSS (``VmHWM`` of ``/proc/self/status``);
the child also resets the high-water mark at every step (``/proc/self/clear_refs``) to tell which step
holds the peak. Sources, tokenizers and models are built once into ``benchmarks/.cache/prune/``.
Nothing here is a test: timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import bisect
import datetime
import gzip
import io
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _docsection import write_section  # noqa: E402  (sibling modules of this script)
from _harness import machine_facts  # noqa: E402

CACHE = ROOT / "benchmarks" / ".cache" / "prune"
DOC = ROOT / "docs" / "benchmarks.md"
MARK_START = "<!-- prune:start -->"
MARK_END = "<!-- prune:end -->"
DOC_HEADER = (
    "# Benchmarks\n\n"
    "Numbers measured by the scripts in `benchmarks/` (see `benchmarks/README.md` for what each one\n"
    "measures and how to run it). Each script rewrites only its own section, between its markers.\n"
)

KEEP_SCRIPTS = ["Latin", "Ethiopic", "Arabic"]
GOAL_SECONDS = 10.0  # XLM-R cases; the Gemma-3 case has its own goal (issue 18)
GEMMA3_GOAL_SECONDS = 8.0
GOAL_MEMORY_RATIO = 1.5
# afro-xlmr-small (MAFT's pruned XLM-R base): "reducing the vocabulary token size of XLM-R-base from
# 250K to 70k" (its model card), "reducing the model size by around 50%" (the paper's abstract).
MAFT_KEPT_TOKENS = 70_000
XLMR_VOCAB = 250_002

TEXT_VERSION = 1  # bump when build_text changes, so that cached texts, tokenizers and models are rebuilt
UDHR_CODES = ("amh", "arb", "ben", "cmn_hans", "deu", "ell", "eng", "fra", "hau_NG", "heb", "hin",
              "hun", "jpn", "kor", "rus", "spa", "swh", "tha", "tir", "vie", "yor", "zul")
MARKOV_ORDER = 3
CHARS_PER_LANGUAGE = 2_500_000  # 22 x 2.5M characters (~100 MB) support a 250k-piece Unigram
MAX_LINE_CHARS = 2000  # sentencepiece skips longer "sentences" (in bytes) than max_sentence_length
# XLM-R's tokenizer has two tokens that its .model lacks: <pad> (fairseq's id 1) and <mask> (the last id).
XLMR_EXTRA_TOKENS = 2
CASES = {
    "generated": "generated text: order-3 character Markov chains over the shipped samples, 22 languages",
    "shipped": "the 24 shipped samples (8.3 MB of real text)",
    "gemma3": "a Gemma-3-shaped decoder (gemma-3-270m: 18 layers, hidden 640, tied head) with a 262,144-token "
              "sentencepiece BPE in tokenizer.json (byte fallback) and tokenizer.model, trained on the generated text",
}
PATHS = {"lean": False, "in_memory": True}  # name -> PruneConfig.in_memory
CHILD_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "true"}
MIB = 1 << 20


# --------------------------------------------------------------------------------------------------
# Texts, tokenizers and models (built once into the cache)


def _sample_text(name: str) -> str:
    from vocabshift.data import sample_path

    path = sample_path(name)
    raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    return "\n".join(line for line in raw.decode("utf-8").split("\n") if line.strip()) + "\n"


def _markov_text(text: str, n_chars: int, seed: int) -> str:
    """``n_chars`` characters from an order-``MARKOV_ORDER`` character chain estimated on ``text``.

    The text is read as a ring (its end continues into its start), so every context has a successor.
    """
    n = MARKOV_ORDER
    ring = text + text[:n]
    counts: dict[str, Counter[str]] = {}
    for i in range(n, len(ring)):
        counts.setdefault(ring[i - n:i], Counter())[ring[i]] += 1
    chain = {ctx: (list(c), list(itertools.accumulate(c.values()))) for ctx, c in counts.items()}
    rng = random.Random(seed)
    context, out = text[:n], []
    for _ in range(n_chars):
        chars, cumulative = chain[context]
        ch = chars[0] if len(chars) == 1 else chars[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]
        out.append(ch)
        context = context[1:] + ch
    return "".join(out)


def build_text(case: str) -> Path:
    """The training text of a case, one line per verse or paragraph (see the module docstring)."""
    path = CACHE / f"text-{case}-v{TEXT_VERSION}.txt"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        if case == "shipped":
            for name in ["bible.eng.txt.gz", "bible.spa.txt.gz"] + [f"udhr.{code}.txt" for code in UDHR_CODES]:
                fh.write(_sample_text(name))
        else:
            for seed, code in enumerate(UDHR_CODES):
                text = _sample_text(f"udhr.{code}.txt")
                if code in ("eng", "spa"):
                    text += _sample_text(f"bible.{code}.txt.gz")
                for line in _markov_text(text, CHARS_PER_LANGUAGE, seed).split("\n"):
                    for start in range(0, len(line), MAX_LINE_CHARS):
                        if line[start:start + MAX_LINE_CHARS].strip():
                            fh.write(line[start:start + MAX_LINE_CHARS] + "\n")
    tmp.rename(path)
    return path


def build_tokenizer(case: str, vocab_size: int) -> Path:
    """An XLM-R-style tokenizer folder (native .model + tokenizer.json), trained on the case's text."""
    out = CACHE / f"tokenizer-{case}-{vocab_size}-v{TEXT_VERSION}"
    if (out / "tokenizer.json").exists():
        return out
    import sentencepiece as spm
    from transformers import AutoTokenizer

    text = build_text(case)
    print(f"training a sentencepiece Unigram of up to {vocab_size:,} tokens on {text.name} "
          f"({text.stat().st_size / 1e6:.0f} MB) ...", flush=True)
    writer = io.BytesIO()
    # sentencepiece's defaults otherwise (as XLM-R's .model: nmt_nfkc, split by whitespace and script).
    # hard_vocab_limit=False: the largest vocabulary the text supports, up to vocab_size.
    spm.SentencePieceTrainer.train(input=str(text), model_writer=writer, model_type="unigram",
                                   vocab_size=vocab_size - XLMR_EXTRA_TOKENS, hard_vocab_limit=False,
                                   character_coverage=1.0, max_sentence_length=1 << 16,
                                   num_threads=os.cpu_count() or 1, minloglevel=2)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # As tests/conftest.py's xlmr_source: the .model, a tokenizer_config naming XLMRobertaTokenizer,
    # loaded by transformers and saved, which writes tokenizer.json beside the .model.
    (tmp / "sentencepiece.bpe.model").write_bytes(writer.getvalue())
    (tmp / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512}))
    AutoTokenizer.from_pretrained(str(tmp)).save_pretrained(tmp)
    if not (tmp / "sentencepiece.bpe.model").exists():
        raise SystemExit(f"{tmp}: save_pretrained removed the native .model")
    tmp.rename(out)
    return out


def _save_model_dir(model: Any, tokenizer_dir: Path, out: Path) -> Path:
    """``model`` saved (safetensors) with the files of ``tokenizer_dir`` beside it, renamed into ``out`` whole."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    for f in tokenizer_dir.iterdir():
        shutil.copy2(f, tmp / f.name)
    tmp.rename(out)
    return out


def build_model(case: str, vocab_size: int, layers: int) -> Path:
    """A model folder: the case's tokenizer + a random XLMRobertaForMaskedLM of its vocabulary size
    (``gemma3``: :func:`build_gemma3_model`, whose size is fixed)."""
    if case == "gemma3":
        return build_gemma3_model()
    tokenizer_dir = build_tokenizer(case, vocab_size)
    out = CACHE / f"model-{case}-{vocab_size}-{layers}L-v{TEXT_VERSION}"
    if (out / "model.safetensors").exists():
        return out
    import torch
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaForMaskedLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    print(f"building a {layers}-layer XLMRobertaForMaskedLM with {len(tok):,} tokens ...", flush=True)
    config = XLMRobertaConfig(vocab_size=len(tok), hidden_size=768, num_hidden_layers=layers,
                              num_attention_heads=12, intermediate_size=3072, max_position_embeddings=514,
                              type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=tok.pad_token_id,
                              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = XLMRobertaForMaskedLM(config)
    return _save_model_dir(model, tokenizer_dir, out)


# The real-scale case of issue 18: a Gemma-3-shaped decoder (gemma-3-270m's shape) whose 262,144-token
# sentencepiece BPE lives in tokenizer.json (byte fallback, "▁" for spaces, no pre-tokenizer) beside
# its tokenizer.model, pruned to Latin + Cyrillic.
GEMMA3_VOCAB = 262_144
GEMMA3_KEEP = ["Latin", "Cyrillic"]
# Gemma 3 puts its control tokens and 99 unused ones first, its remaining 6,143 unused (and image)
# tokens last; all are added tokens, present in the BPE vocabulary too.
GEMMA3_HEAD = (["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "[multimodal]"] + [f"<unused{i}>" for i in range(99)]
               + ["<start_of_turn>", "<end_of_turn>"])
GEMMA3_TAIL = 6_143


def _gemma3_spec(pieces: list[str], merges: list[list[str]]) -> dict[str, Any]:
    """tokenizer.json of the Gemma 3 layout: head specials, the 256 byte pieces, ``pieces``, tail specials."""
    tail = [f"<unused{99 + i}>" for i in range(GEMMA3_VOCAB - len(GEMMA3_HEAD) - 256 - len(pieces))]
    order = GEMMA3_HEAD + [f"<0x{b:02X}>" for b in range(256)] + pieces + tail
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for i, t in enumerate(order) if i < len(GEMMA3_HEAD) or i >= len(order) - len(tail)]
    bos = {"SpecialToken": {"id": "<bos>", "type_id": 0}}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, bos,
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(order)}, "merges": merges},
    }


def _gemma3_proto(spec: dict[str, Any]) -> bytes:
    """The tokenizer.model beside it: a sentencepiece BPE with the same pieces, scores by merge order."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    kinds = pb.ModelProto.SentencePiece
    proto = pb.ModelProto()
    proto.trainer_spec.model_type = pb.TrainerSpec.BPE
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.vocab_size = GEMMA3_VOCAB
    proto.trainer_spec.unk_id, proto.trainer_spec.bos_id, proto.trainer_spec.eos_id, proto.trainer_spec.pad_id = 3, 2, 1, 0
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = False
    proto.normalizer_spec.remove_extra_whitespaces = False
    added = {t["content"] for t in spec["added_tokens"]}
    for i, (piece, _) in enumerate(sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])):
        kind = (kinds.UNKNOWN if piece == "<unk>" else kinds.CONTROL if piece in added
                else kinds.BYTE if piece.startswith("<0x") and len(piece) == 6 else kinds.NORMAL)
        proto.pieces.add(piece=piece, score=0.0 if kind != kinds.NORMAL else -float(i), type=kind)
    return proto.SerializeToString()


def build_gemma3_tokenizer() -> Path:
    """A Gemma-3-style tokenizer folder (tokenizer.json + tokenizer.model), BPE trained on the generated text."""
    out = CACHE / f"tokenizer-gemma3-{GEMMA3_VOCAB}-v{TEXT_VERSION}"
    if (out / "tokenizer.json").exists():
        return out
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    text = build_text("generated")
    wanted = GEMMA3_VOCAB - len(GEMMA3_HEAD) - 256 - GEMMA3_TAIL
    print(f"training a BPE of {wanted:,} pieces on {text.name} ({text.stat().st_size / 1e6:.0f} MB) ...", flush=True)
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    trainer_tok.normalizer = normalizers.Replace(" ", "\u2581")
    # Training only: words split before each "▁" so that no merge crosses a word boundary; the final
    # tokenizer has no pre-tokenizer (as Gemma's), which then segments the same way.
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never")
    trainer = trainers.BpeTrainer(vocab_size=wanted, limit_alphabet=8_000, show_progress=False)
    trainer_tok.train([str(text)], trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    pieces = [p for p, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1])]
    merges = [list(m.split(" ", 1)) if isinstance(m, str) else list(m) for m in trained["merges"]]
    spec = _gemma3_spec(pieces, merges)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    (tmp / "tokenizer.model").write_bytes(_gemma3_proto(spec))
    (tmp / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
        "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False, "model_max_length": 32768}))
    Tokenizer.from_file(str(tmp / "tokenizer.json"))  # loads: the layout is consistent
    tmp.rename(out)
    return out


def build_gemma3_model() -> Path:
    """The Gemma-3 tokenizer + a random Gemma3ForCausalLM in gemma-3-270m's shape (fp32, tied head)."""
    tokenizer_dir = build_gemma3_tokenizer()
    out = CACHE / f"model-gemma3-{GEMMA3_VOCAB}-v{TEXT_VERSION}"
    if (out / "model.safetensors").exists():
        return out
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    print("building a Gemma3ForCausalLM in gemma-3-270m's shape ...", flush=True)
    config = Gemma3TextConfig(vocab_size=GEMMA3_VOCAB, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=256,
                              max_position_embeddings=32768, pad_token_id=0, eos_token_id=1, bos_token_id=2,
                              tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config)
    return _save_model_dir(model, tokenizer_dir, out)


def keep_scripts(case: str) -> list[str]:
    return GEMMA3_KEEP if case == "gemma3" else KEEP_SCRIPTS


def goal_seconds(case: str) -> float:
    return GEMMA3_GOAL_SECONDS if case == "gemma3" else GOAL_SECONDS


def model_facts(model_dir: Path) -> dict[str, Any]:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model_dir))
    return {"vocab_size": config.vocab_size, "hidden": config.hidden_size, "layers": config.num_hidden_layers,
            "weights_bytes": (model_dir / "model.safetensors").stat().st_size}


# --------------------------------------------------------------------------------------------------
# The child: one timed prune()


def _status_mb(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process, from /proc/self/status."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


class _RssSampler:
    """Resident memory of this process every few milliseconds, on a thread: when the peak happened."""

    def __init__(self, t0: float, every: float = 0.01) -> None:
        import threading

        self.t0, self.every, self.samples = t0, every, [(0.0, _status_mb("VmRSS"))]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append((time.perf_counter() - self.t0, _status_mb("VmRSS")))

    def stop(self) -> tuple[float, float]:
        """(seconds since start, MiB) of the highest sample."""
        self._stop.set()
        self._thread.join()
        return max(self.samples, key=lambda s: s[1])


# prune()'s steps, timed where prune() and its callees look them up (module, attribute, label). They run
# on two threads: the tokenizer side on the main thread, the weights on "vocabshift-prune-weights".
STEPS = [("vocabshift.vocabulary", "load_source_tokenizer", "load source tokenizer (tokenizer.json, .model)"),
         ("vocabshift.tokenization.prune", "build_keep_set", "keep set by script"),
         ("vocabshift.tokenization.prune", "prune_tokenizer", "prune tokenizer (closure, new tokenizer.json + .model)"),
         ("vocabshift.tokenization.prune", "write_pruned_tokenizer_files", "write + check tokenizer files"),
         ("vocabshift.vocabulary", "_import_model_side", "weights thread: imports (none for a supported decoder)"),
         ("vocabshift.surgery.row_prune", "plan", "weights: plan from the headers and config"),
         ("vocabshift.surgery.row_prune", "prune_rows", "weights: copy kept rows, no model (header path)"),
         ("vocabshift.surgery.lazy", "meta_model", "weights: model on the meta device (general path)"),
         ("vocabshift.surgery.lazy", "_rewrite_file", "weights: stream + rewrite a safetensors file (general path)"),
         ("vocabshift.surgery.checkpoint", "load_model", "in memory: load model (transformers)"),
         ("vocabshift.surgery.resize", "remap_vocab", "in memory: remap_vocab"),
         ("vocabshift.surgery.checkpoint", "save_model", "in memory: save model (transformers)"),
         ("vocabshift.vocabulary", "_write_id_map", "write id_map.json")]


def child(spec_path: str) -> None:
    import threading

    t0 = time.perf_counter()
    sampler = _RssSampler(t0)
    spec = json.loads(Path(spec_path).read_text())
    phases: list[dict[str, Any]] = []

    def record(label: str, begin: float, cpu: float) -> None:
        main = threading.current_thread() is threading.main_thread()
        phases.append({"phase": label, "thread": "main" if main else "weights", "start": begin - t0,
                       "seconds": time.perf_counter() - begin, "cpu_seconds": time.thread_time() - cpu})

    if spec["impl"] == "reference":  # for scale: what the imports alone cost
        begin = time.perf_counter()
        import torch  # noqa: F401
        from transformers import AutoTokenizer, Gemma3ForCausalLM, XLMRobertaForMaskedLM  # noqa: F401

        record("import torch + transformers (AutoTokenizer, Gemma3ForCausalLM, XLMRobertaForMaskedLM)", begin, 0.0)
        start = end = time.perf_counter()
        report: dict[str, Any] = {}
    else:
        begin = time.perf_counter()
        import vocabshift.vocabulary as vocabulary

        record("import vocabshift.vocabulary", begin, 0.0)
        patched: set[tuple[str, str]] = set()

        def patch_loaded() -> None:
            # Only modules already imported: importing torch's here would add its import to the timings.
            for module_name, attr, label in STEPS:
                module = sys.modules.get(module_name)
                if module is None or (module_name, attr) in patched:
                    continue
                patched.add((module_name, attr))

                def timed(*args: Any, _fn: Any = getattr(module, attr), _label: str = label, **kwargs: Any) -> Any:
                    begin, cpu = time.perf_counter(), time.thread_time()
                    try:
                        return _fn(*args, **kwargs)
                    finally:
                        record(_label, begin, cpu)

                setattr(module, attr, timed)

        import vocabshift.surgery.row_prune  # noqa: F401  (torch-free, as vocabulary and tokenization.prune)
        import vocabshift.tokenization.prune  # noqa: F401

        patch_loaded()
        apply_to_model = vocabulary._apply_to_model

        def apply_patched(*args: Any, **kwargs: Any) -> Any:
            patch_loaded()  # the weights thread has imported what its path needs by now
            return apply_to_model(*args, **kwargs)

        vocabulary._apply_to_model = apply_patched
        start = time.perf_counter()
        config = vocabulary.PruneConfig(model=spec["source"], out=spec["out"], keep_scripts=spec["keep_scripts"],
                                        in_memory=spec["in_memory"], force=True)
        report = vocabulary.prune(config).report
        end = time.perf_counter()
    peak_at, _ = sampler.stop()
    cpu = os.times()
    result = {"seconds": end - t0, "prune_seconds": end - start, "cpu_seconds": cpu.user + cpu.system,
              "peak_rss_mb": _status_mb("VmHWM"), "peak_at": peak_at, "phases": phases, "report": report}
    Path(spec["result"]).write_text(json.dumps(result, default=str))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown: not part of the work


def run_child(spec: dict[str, Any], log: Path) -> dict[str, Any]:
    """Run one child; return its timings, peak RSS and prune report, as it measured them."""
    spec_path = log.with_suffix(".spec.json")
    spec_path.write_text(json.dumps(spec))
    Path(spec["result"]).unlink(missing_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
                                stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **CHILD_ENV}, cwd=ROOT)
        proc.wait()
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{spec['case']} / {spec['impl']} failed with exit status {proc.returncode}:\n{tail}")
    return json.loads(Path(spec["result"]).read_text())


# --------------------------------------------------------------------------------------------------
# Machine facts, the report


PACKAGES = ("vocabshift", "torch", "transformers", "tokenizers", "sentencepiece", "safetensors")


def _machine_busy() -> tuple[float, float, float]:
    """(wall seconds, CPU seconds all processes used, CPU seconds this process and its children used)."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    own = os.times()
    return time.perf_counter(), busy / ticks, own.user + own.system + own.children_user + own.children_system


def summarize(results: dict[tuple[str, str], list[dict[str, Any]]],
              sources: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for (case, path), runs in results.items():
        best = min(runs, key=lambda r: r["seconds"])
        model = best["report"]["model"]
        seconds = min(r["seconds"] for r in runs)
        peak = min(r["peak_rss_mb"] for r in runs)
        out_mb = model["weights_bytes_after"] / MIB
        ratio = peak / out_mb
        missed = [name for name, ok in (("time", seconds < goal_seconds(case)), ("memory", ratio < GOAL_MEMORY_RATIO))
                  if not ok]
        rows.append({
            "case": case, "path": path, "runs": len(runs), "seconds": seconds,
            "prune_seconds": min(r["prune_seconds"] for r in runs),
            "cpu_seconds": min(r["cpu_seconds"] for r in runs),
            "spread": max(r["seconds"] for r in runs) / seconds, "peak_mb": peak,
            "tokens_before": best["report"]["source_vocab_size"], "tokens_after": best["report"]["vocab_size"],
            "params_before": model["parameters_before"], "params_after": model["parameters_after"],
            "in_mb": model["weights_bytes_before"] / MIB, "out_mb": out_mb, "ratio": ratio,
            "reduction": 1 - model["weights_bytes_after"] / model["weights_bytes_before"],
            "goal": "yes" if not missed else "no (" + ", ".join(missed) + ")", "peak_at": best["peak_at"],
            "layers": sources[case]["layers"], "phases": best["phases"], "tokens": best["report"]["tokens"],
        })
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = ["case", "path", "tokens before -> after", "parameters before -> after", "weights before -> after (MiB)",
            "size reduction", "time (s)", "prune() (s)", "peak RSS (MiB)", "peak / output", "goals met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|"]
    for r in rows:
        cells = [r["case"], r["path"], f"{r['tokens_before']:,} -> {r['tokens_after']:,}",
                 f"{r['params_before'] / 1e6:.1f}M -> {r['params_after'] / 1e6:.1f}M",
                 f"{r['in_mb']:,.0f} -> {r['out_mb']:,.0f}", f"{100 * r['reduction']:.1f}%",
                 f"{r['seconds']:.1f}", f"{r['prune_seconds']:.1f}", f"{r['peak_mb']:,.0f}", f"{r['ratio']:.2f}x",
                 r["goal"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def phase_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| case | path | step | thread | starts at (s) | seconds | thread CPU seconds |",
             "|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        for p in sorted(r["phases"], key=lambda p: p["start"]):
            lines.append(f"| {r['case']} | {r['path']} | {p['phase']} | {p['thread']} | {p['start']:.2f} "
                         f"| {p['seconds']:.2f} | {p['cpu_seconds']:.2f} |")
    return "\n".join(lines)


def script_table(rows: list[dict[str, Any]]) -> str:
    """Tokens kept and removed per script (ISO 15924 label), per case."""
    lines = ["| case | kept by script | removed by script |", "|---|---|---|"]
    seen = set()
    for r in rows:
        if r["case"] in seen:
            continue
        seen.add(r["case"])

        def fmt(counts: dict[str, int]) -> str:
            top = list(counts.items())
            shown = ", ".join(f"{k} {v:,}" for k, v in top[:8])
            return shown + (f", {len(top) - 8} more labels ({sum(v for _, v in top[8:]):,})" if len(top) > 8 else "")

        lines.append(f"| {r['case']} | {fmt(r['tokens']['kept_by_script'])} | {fmt(r['tokens']['removed_by_script'])} |")
    return "\n".join(lines)


def maft_projection(rows: list[dict[str, Any]]) -> str:
    """What this model's size reduction would be with XLM-R's own kept-token count (exact arithmetic)."""
    r = next((r for r in rows if r["case"] == "generated" and r["tokens_before"] == XLMR_VOCAB
              and r["layers"] == 12), None)
    if r is None:
        return ("(this run has no `generated` case with 250,002 tokens and 12 layers, XLM-R base's shape, "
                "for which the projection to XLM-R's kept-token count is made)")
    per_token = (r["params_before"] - r["params_after"]) / (r["tokens_before"] - r["tokens_after"])
    after = r["params_before"] - per_token * (r["tokens_before"] - MAFT_KEPT_TOKENS)
    return (f"Every removed token takes {per_token:.0f} parameters with it (its 768-wide embedding row, which the "
            f"tied MLM head shares, and its MLM bias entry), so this model's reduction depends only on how many "
            f"tokens are kept. XLM-R's own tokenizer keeps about {MAFT_KEPT_TOKENS:,} tokens for these scripts "
            f"(afro-xlmr-small's model card: \"from 250K to 70k\"); at that count this model (XLM-R base's exact "
            f"shape, {r['params_before'] / 1e6:.1f}M parameters) would keep {after / 1e6:.1f}M parameters, a "
            f"**{100 * (1 - after / r['params_before']):.1f}% reduction**, MAFT's \"around 50%\". The tokenizer "
            f"here keeps {r['tokens_after']:,} of {r['tokens_before']:,} tokens "
            f"({100 * r['tokens_after'] / r['tokens_before']:.0f}%) because {_latin_share(r):.0f}% of its pieces "
            "are Latin: 10 of its 22 languages write in Latin script, and alphabetic languages separated by spaces "
            "give a Unigram more distinct pieces than Chinese, Japanese or Korean text of the same length.")


def _latin_share(r: dict[str, Any]) -> float:
    return 100 * r["tokens"]["kept_by_script"].get("Latn", 0) / r["tokens_before"]


def _observation(r: dict[str, Any]) -> str:
    """Time on each thread, the slowest steps, and what ran when the memory peaked."""
    main = sum(p["seconds"] for p in r["phases"] if p["thread"] == "main" and not p["phase"].startswith("import"))
    weights = sum(p["seconds"] for p in r["phases"] if p["thread"] == "weights")
    top = sorted(r["phases"], key=lambda p: -p["seconds"])[:3]
    slowest = ", ".join(f"{p['phase']} ({p['seconds']:.1f} s)" for p in top)
    running = [p["phase"] for p in r["phases"] if p["start"] <= r["peak_at"] <= p["start"] + p["seconds"]]
    budget = GOAL_MEMORY_RATIO * r["out_mb"]
    return (f"{r['case']}/{r['path']}: tokenizer steps {main:.1f} s on the main thread, weights {weights:.1f} s "
            f"on the weights thread, overlapping; slowest steps: {slowest}. Peak {r['peak_mb']:,.0f} MiB at "
            f"{r['peak_at']:.1f} s, during: {'; '.join(running) or 'no timed step'} (the memory goal allows "
            f"{budget:,.0f} MiB for this output).")


def doc_section(rows: list[dict[str, Any]], args: argparse.Namespace, sources: dict[str, dict[str, Any]],
                facts: dict[str, Any], reference: dict[str, Any], foreign: float) -> str:
    command = "python benchmarks/prune.py" + "".join(
        f" {flag} {value}" for flag, value, default in (
            ("--vocab-size", args.vocab_size, XLMR_VOCAB), ("--layers", args.layers, 12),
            ("--cases", ",".join(args.cases), ",".join(CASES)), ("--repeats", args.repeats, 1)) if value != default)
    verdicts = []
    for r in rows:
        verdicts.append(f"{r['case']}/{r['path']}: " + ("met" if r["goal"] == "yes" else f"missed ({r['goal'][4:-1]})"))
    spread = "" if args.repeats < 2 else (
        f"\n  Wall time varied by up to {max(r['spread'] for r in rows):.2f}x (slowest / fastest run of one row) "
        "on this shared virtual machine; the minimum filters most of that out.")
    case_lines = []
    for case in args.cases:
        s = sources[case]
        asked = GEMMA3_VOCAB if case == "gemma3" else args.vocab_size
        case_lines.append(f"  - `{case}` (kept: {', '.join(keep_scripts(case))}; goal: under {goal_seconds(case):g} s): "
                          f"{CASES[case]}; `{s['text']}`, {s['text_bytes'] / 1e6:.1f} MB; "
                          f"the tokenizer has {s['vocab_size']:,} tokens (asked: {asked:,}); "
                          f"model `{s['model']}`: {s['layers']} layers, {s['weights_bytes'] / MIB:,.0f} MiB of weights.")
    observations = "\n".join(f"- {_observation(r)}" for r in rows)
    return f"""## Vocabulary pruning: XLM-R base to {{Latin, Ethiopic, Arabic}}, a 262k-token Gemma 3 to {{Latin, Cyrillic}}

`vocabshift.vocabulary.prune` on two shapes of real-scale models, random fp32 weights (seed 0), real tokenizers
trained on multi-script text: an `XLMRobertaForMaskedLM` in XLM-R base's shape (hidden 768, intermediate 3072,
12 heads, tied MLM head, sentencepiece Unigram) kept to `["Latin", "Ethiopic", "Arabic"]` (MAFT), and a
`Gemma3ForCausalLM` in gemma-3-270m's shape with a 262,144-token sentencepiece BPE kept to `["Latin", "Cyrillic"]`.
Goals: XLM-R under {GOAL_SECONDS:g} s, Gemma 3 under {GEMMA3_GOAL_SECONDS:g} s (issue 18), peak memory under
{GOAL_MEMORY_RATIO:g}x the output weights; report the size reduction (MAFT pruned XLM-R base to about 50%).
Goals met: **{'; '.join(verdicts)}**.
Measured on {datetime.date.today().isoformat()} with

    {command}

{table(rows)}

- "time" runs from the child's first statement to the return of `prune()` (imports included, interpreter start-up not);
  "prune()" is the call alone. The time goal is judged on "time", what `vocabshift prune` makes a user wait.
  Peak RSS is the child's peak resident set (`VmHWM` of `/proc/self/status`); "peak / output" divides it by the
  size of the output's safetensors weights, which is what the memory goal compares with.
  Both are the minimum of {args.repeats} run(s), each a fresh subprocess.{spread}
  Other processes used {100 * foreign:.0f}% of the machine's CPU while the benchmark ran.
  The source checkpoint is in the page cache (the model was built, and pruned, before); outputs are written
  without fsync, as `save_pretrained` does.
- "lean" is the default path. For a supported decoder (Llama, Mistral, Qwen2/3, Gemma 1-3: the Gemma 3 case) the
  weights are pruned from the safetensors headers and config files alone (`vocabshift.surgery.row_prune`: kept rows
  copied as bytes, unchanged tensors copied by the kernel, torch never imported); for other models
  (`remap_checkpoint`: the XLM-R cases) the model is built on the meta device and the safetensors file is streamed
  tensor by tensor. Either way the weights are written on a second thread while the main thread builds, writes and
  checks the tokenizer files. "in_memory" is `in_memory=True` (load the model, `remap_vocab`, `save_pretrained`).
- For scale, a child that only imports torch and `transformers`' `AutoTokenizer`, `Gemma3ForCausalLM` and `XLMRobertaForMaskedLM`
  takes {reference['seconds']:.1f} s and {reference['peak_rss_mb']:,.0f} MiB peak RSS here.
- Cases (XLM-R tokenizers: `XLMRobertaTokenizer` over a native `sentencepiece.bpe.model` with `tokenizer.json`
  beside it, sentencepiece's default settings, `character_coverage=1.0`, `hard_vocab_limit=False`; the Gemma 3
  tokenizer: Gemma 3's layout, 107 control and unused tokens first, the 256 byte pieces, the BPE pieces trained by
  `tokenizers` on the generated text, the remaining unused tokens last; "▁" for spaces, no pre-tokenizer, byte
  fallback; a matching `tokenizer.model`):
{chr(10).join(case_lines)}
  The shipped samples support only the `shipped` tokenizer's size: sentencepiece drops every piece that no
  Viterbi segmentation of the text uses, and 8.3 MB of text (two thirds of it two Bibles) use about 41k.
  The `generated` text is {CHARS_PER_LANGUAGE / 1e6:g}M characters per UDHR language from an order-{MARKOV_ORDER}
  character Markov chain estimated on that language's sample (English and Spanish also on their Bibles):
  pseudo-words with the language's real characters and character statistics, enough distinct ones for
  XLM-R's 250,002 tokens.
- Machine: {facts['cpu']}, {facts['cores']} cores, {facts['ram']} RAM, {facts['os']}.
  Python {facts['python']}, vocabshift {facts['vocabshift']}, torch {facts['torch']}, transformers {facts['transformers']},
  tokenizers {facts['tokenizers']}, sentencepiece {facts['sentencepiece']}, safetensors {facts['safetensors']}.

Size reduction. {maft_projection(rows)}

Tokens kept and removed, by script (ISO 15924; "neutral" is digits, punctuation and marks):

{script_table(rows)}

Where the time and the memory go (the fastest run of each row; steps on the two threads overlap: "starts at" is
seconds since the child started, "thread CPU seconds" that thread's own CPU time; the peak's time comes from
sampling the resident set every 10 ms):

{observations}

{phase_table(rows)}
"""


def write_doc(section: str) -> None:
    """Replace this script's section of the doc."""
    write_section(DOC, MARK_START, MARK_END, section, DOC_HEADER)


# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab-size", type=int, default=XLMR_VOCAB,
                        help="tokens to ask the tokenizer trainer for (XLM-R's 250,002 by default); "
                             "the shipped text supports fewer")
    parser.add_argument("--layers", type=int, default=12, help="transformer layers (XLM-R base: 12)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--repeats", type=int, default=1, help="runs per case and path (min reported)")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DOC.relative_to(ROOT)}")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is None:
        args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = [c for c in args.cases if c not in CASES]
        if unknown or not args.cases:
            parser.error(f"unknown case(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(CASES)}")
        if args.repeats < 1 or args.layers < 1 or args.vocab_size < 1000:
            parser.error("--repeats and --layers must be positive, --vocab-size at least 1000")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args.child)
        return
    os.environ.update(CHILD_ENV)
    sources: dict[str, dict[str, Any]] = {}
    for case in args.cases:  # build everything first, so that no build runs between measured runs
        model_dir = build_model(case, args.vocab_size, args.layers)
        text = build_text("generated" if case == "gemma3" else case)
        sources[case] = {"model_dir": model_dir, "model": str(model_dir.relative_to(ROOT)),
                         "text": str(text.relative_to(ROOT)), "text_bytes": text.stat().st_size,
                         **model_facts(model_dir)}
        print(f"{case}: {sources[case]['vocab_size']:,} tokens, {sources[case]['layers']} layers, "
              f"{sources[case]['weights_bytes'] / MIB:,.0f} MiB of weights", flush=True)
    runs = CACHE / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    busy_start = _machine_busy()
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for case in args.cases:
        for rep in range(args.repeats):
            for path, in_memory in PATHS.items():  # alternate, so that drift in the machine hits both alike
                out = CACHE / "out" / f"{case}-{path}"
                shutil.rmtree(out, ignore_errors=True)  # not timed: prune(force=True) would delete it
                log = runs / f"{case}.{path}.{rep}.log"
                spec = {"case": case, "impl": path, "source": str(sources[case]["model_dir"]), "out": str(out),
                        "keep_scripts": keep_scripts(case),
                        "in_memory": in_memory, "result": str(log.with_suffix(".result.json"))}
                result = run_child(spec, log)
                results.setdefault((case, path), []).append(result)
                print(f"{case:>10} {path:>10} run {rep + 1}/{args.repeats}: {result['seconds']:6.1f} s "
                      f"(prune() {result['prune_seconds']:.1f} s), {result['peak_rss_mb']:8,.0f} MiB peak RSS",
                      flush=True)
    log = runs / "reference.log"
    reference = run_child({"case": "reference", "impl": "reference", "result": str(log.with_suffix(".result.json"))},
                          log)
    busy_end = _machine_busy()
    wall, busy, own = (end - start for start, end in zip(busy_start, busy_end, strict=True))
    foreign = max(busy - own, 0.0) / (wall * (os.cpu_count() or 1))
    rows = summarize(results, sources)
    print()
    print(table(rows))
    print()
    print(phase_table(rows))
    print()
    for r in rows:
        print(_observation(r))
    print()
    print(maft_projection(rows))
    print(f"\nfor scale: importing torch + transformers' AutoTokenizer, XLMRobertaForMaskedLM alone: "
          f"{reference['seconds']:.1f} s, {reference['peak_rss_mb']:,.0f} MiB peak RSS")
    print(f"other processes used {100 * foreign:.0f}% of the machine's CPU during the run")
    if not args.no_write:
        write_doc(doc_section(rows, args, sources, machine_facts(PACKAGES), reference, foreign))
        print(f"\nwrote the prune section of {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
