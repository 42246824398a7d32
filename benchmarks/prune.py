"""Benchmark: prune an XLM-R-base-shaped model to {Latin, Ethiopic, Arabic} with ``vocabshift.vocabulary.prune``.

    python benchmarks/prune.py                        # 250,002 tokens, 12 layers, both cases, updates docs
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

Every measured run is a fresh subprocess that runs ``prune(PruneConfig(model=..., out=...,
keep_scripts=["Latin", "Ethiopic", "Arabic"], force=True))``, on the lean path (the default: the
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
GOAL_SECONDS = 10.0
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


def build_model(case: str, vocab_size: int, layers: int) -> Path:
    """A model folder: the case's tokenizer + a random XLMRobertaForMaskedLM of its vocabulary size."""
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
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    for f in tokenizer_dir.iterdir():
        shutil.copy2(f, tmp / f.name)
    tmp.rename(out)
    return out


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


def _clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of all this process's threads)."""
    cpu = os.times()
    return time.perf_counter(), cpu.user + cpu.system


class _Peaks:
    """Peak RSS of the whole process and of each step, from VmHWM reset at every step boundary.

    Writing 5 to /proc/self/clear_refs sets VmHWM back to the current RSS (Linux >= 4.0), so that the
    VmHWM read at the end of a step is that step's peak. The process peak is the largest of them.
    """

    def __init__(self) -> None:
        self.peak = _status_mb("VmHWM")
        try:
            self._reset()
            self.can_reset = True
        except OSError:
            self.can_reset = False

    @staticmethod
    def _reset() -> None:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")

    def boundary(self) -> float | None:
        """The peak since the last boundary (None where it cannot be reset); starts a new interval."""
        hwm = _status_mb("VmHWM")
        self.peak = max(self.peak, hwm)
        if not self.can_reset:
            return None
        self._reset()
        return hwm


def child(spec_path: str) -> None:
    t0 = _clock()
    peaks = _Peaks()
    spec = json.loads(Path(spec_path).read_text())
    phases: list[dict[str, Any]] = []

    def mark(name: str, since: tuple[float, float]) -> tuple[float, float]:
        peak = peaks.boundary()
        now = _clock()
        phases.append({"phase": name, "seconds": now[0] - since[0], "cpu_seconds": now[1] - since[1],
                       "peak_mb": peak, "rss_mb": _status_mb("VmRSS")})
        return now

    if spec["impl"] == "reference":  # for scale: what the imports alone cost
        import torch  # noqa: F401
        from transformers import AutoTokenizer, XLMRobertaForMaskedLM  # noqa: F401

        mark("import torch + transformers (AutoTokenizer, XLMRobertaForMaskedLM)", t0)
        start = end = _clock()
        report: dict[str, Any] = {}
    else:
        import vocabshift.surgery.lazy as lazy
        import vocabshift.tokenization.prune as tprune
        import vocabshift.vocabulary as vocabulary

        start = mark("import vocabshift.vocabulary (torch)", t0)
        # Time prune()'s steps by wrapping them where prune() and its callees look them up. None of
        # these calls another: each step's time and peak are its own.
        steps = [(vocabulary, "load_source_tokenizer", "load source tokenizer (tokenizer.json)"),
                 (tprune, "build_keep_set", "keep set by script"),
                 (tprune, "prune_tokenizer", "prune tokenizer"),
                 (tprune, "_write_output", "write tokenizer files"),
                 (tprune, "_verify_reload", "reload check (tokenizers)"),
                 (lazy, "meta_model", "lean: model on the meta device (imports its modeling code)"),
                 (lazy, "_rewrite_file", "lean: stream + rewrite the safetensors file"),
                 (vocabulary, "load_model", "in memory: load model (transformers)"),
                 (vocabulary, "remap_vocab", "in memory: remap_vocab"),
                 (vocabulary, "save_model", "in memory: save model (transformers)"),
                 (vocabulary, "_write_id_map", "write id_map.json")]
        for module, attr, label in steps:
            def timed(*args: Any, _fn: Any = getattr(module, attr), _label: str = label, **kwargs: Any) -> Any:
                begin = _clock()
                # the time and memory since the last step belong to "rest of prune()"
                rest[0] += begin[0] - last[0]
                rest[1] += begin[1] - last[1]
                rest[2] = max(rest[2], peaks.boundary() or 0.0)
                result = _fn(*args, **kwargs)
                last[:] = mark(_label, begin)
                return result

            setattr(module, attr, timed)
        rest = [0.0, 0.0, 0.0]  # wall seconds, CPU seconds, peak RSS (MiB) outside the steps
        last = list(start)
        peaks.boundary()
        config = vocabulary.PruneConfig(model=spec["source"], out=spec["out"], keep_scripts=KEEP_SCRIPTS,
                                        in_memory=spec["in_memory"], force=True)
        report = vocabulary.prune(config).report
        end = _clock()
        rest_peak = peaks.boundary()
        phases.append({"phase": "rest of prune() (checks, meta remap_vocab, report, rename)",
                       "seconds": rest[0] + end[0] - last[0], "cpu_seconds": rest[1] + end[1] - last[1],
                       "peak_mb": None if rest_peak is None else max(rest[2], rest_peak),
                       "rss_mb": _status_mb("VmRSS")})
    peaks.boundary()
    result = {"seconds": end[0] - t0[0], "prune_seconds": end[0] - start[0], "cpu_seconds": end[1] - t0[1],
              "peak_rss_mb": peaks.peak, "phases": phases, "report": report}
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
        missed = [name for name, ok in (("time", seconds < GOAL_SECONDS), ("memory", ratio < GOAL_MEMORY_RATIO))
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
            "goal": "yes" if not missed else "no (" + ", ".join(missed) + ")",
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
    lines = ["| case | path | step | seconds | CPU seconds | peak RSS in step (MiB) | RSS after (MiB) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        for p in r["phases"]:
            peak = "n/a" if p["peak_mb"] is None else f"{p['peak_mb']:,.0f}"
            lines.append(f"| {r['case']} | {r['path']} | {p['phase']} | {p['seconds']:.2f} | {p['cpu_seconds']:.2f} "
                         f"| {peak} | {p['rss_mb']:,.0f} |")
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


def _kind(phase: str) -> str:
    if phase.startswith("import"):
        return "imports"
    if phase.startswith(("lean:", "in memory:")):
        return "weights"
    if "tokenizer" in phase or phase.startswith("keep set"):
        return "tokenizer"
    return "rest"


def _observation(r: dict[str, Any]) -> str:
    """Time by kind of step, the slowest steps, and the step that holds the peak (with what it added)."""
    by_kind: dict[str, float] = {}
    for p in r["phases"]:
        by_kind[_kind(p["phase"])] = by_kind.get(_kind(p["phase"]), 0.0) + p["seconds"]
    kinds = ", ".join(f"{k} {by_kind.get(k, 0.0):.1f} s" for k in ("imports", "tokenizer", "weights", "rest"))
    top = sorted(r["phases"], key=lambda p: -p["seconds"])[:3]
    slowest = ", ".join(f"{p['phase']} ({p['seconds']:.1f} s)" for p in top)
    known = [(i, p) for i, p in enumerate(r["phases"]) if p["peak_mb"] is not None]
    if not known:
        peak = "unknown (the high-water mark cannot be reset here)"
    else:
        i, p = max(known, key=lambda ip: ip[1]["peak_mb"])
        before = r["phases"][i - 1]["rss_mb"] if i else 0.0
        peak = f"{p['phase']}: {p['peak_mb']:,.0f} MiB, {p['peak_mb'] - before:+,.0f} MiB over the RSS it started from"
    budget = GOAL_MEMORY_RATIO * r["out_mb"]
    return (f"{r['case']}/{r['path']}: {kinds}; slowest steps: {slowest}. Peak in {peak} "
            f"(the memory goal allows {budget:,.0f} MiB for this output).")


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
        case_lines.append(f"  - `{case}`: {CASES[case]}; `{s['text']}`, {s['text_bytes'] / 1e6:.1f} MB; "
                          f"the tokenizer reached {s['vocab_size']:,} tokens (asked: {args.vocab_size:,}); "
                          f"model `{s['model']}`: {s['layers']} layers, {s['weights_bytes'] / MIB:,.0f} MiB of weights.")
    observations = "\n".join(f"- {_observation(r)}" for r in rows)
    return f"""## Vocabulary pruning: an XLM-R-base-shaped model to {{Latin, Ethiopic, Arabic}}

`vocabshift.vocabulary.prune` with `keep_scripts=["Latin", "Ethiopic", "Arabic"]` on an `XLMRobertaForMaskedLM`
in XLM-R base's shape (hidden 768, intermediate 3072, 12 heads, tied MLM head, random fp32 weights, seed 0)
whose vocabulary is that of a real sentencepiece Unigram tokenizer trained on multi-script text.
Goals: under {GOAL_SECONDS:g} s, peak memory under {GOAL_MEMORY_RATIO:g}x the output weights; report the size
reduction (MAFT pruned XLM-R base to about 50%).
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
- "lean" is the default path (`remap_checkpoint`: the model is built on the meta device and the safetensors
  file is streamed tensor by tensor); "in_memory" is `in_memory=True` (load the model, `remap_vocab`, `save_pretrained`).
- For scale, a child that only imports torch and `transformers`' `AutoTokenizer` and `XLMRobertaForMaskedLM`
  takes {reference['seconds']:.1f} s and {reference['peak_rss_mb']:,.0f} MiB peak RSS here.
- Cases (tokenizer: `XLMRobertaTokenizer` over a native `sentencepiece.bpe.model` with `tokenizer.json` beside it,
  sentencepiece's default settings, `character_coverage=1.0`, `hard_vocab_limit=False`):
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

Where the time and the memory go (the fastest run of each row; "peak RSS in step" is the high-water mark
between the step's start and end, reset at every step boundary through `/proc/self/clear_refs`):

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
        text = build_text(case)
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
