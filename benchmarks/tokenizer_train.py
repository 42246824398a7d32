"""Benchmark: train a 32k tokenizer with vocabshift versus the raw trainer it drives, same settings.

    python benchmarks/tokenizer_train.py                  # ~100 MB, 32,000 tokens, all cases, updates docs
    python benchmarks/tokenizer_train.py --mb 5 --no-write --cases wordpiece

For each case (one tokenizer family, with a real or realistic source tokenizer) two implementations
train on the same text file:

* ``vocabshift``: :func:`vocabshift.tokenization.train.train_tokenizer` with a ``TokenizerTrainConfig``
  (everything it does: load the source through transformers, read the corpus, train, mirror the
  source pipeline, write the output folder, reload it with ``AutoTokenizer`` and check it);
* ``raw``: what a user of the trainer library writes by hand, with the settings vocabshift passes
  (mirrored from ``vocabshift/tokenization/train.py``, derived here before timing starts):
  ``Tokenizer.train([file], trainer)`` on the same empty pipeline for ``tokenizers``, and
  ``SentencePieceTrainer.train(input=file, ...)`` with the same arguments for ``sentencepiece``.
  It saves the trained ``tokenizer.json`` / ``.model`` and nothing else.

Every run is a fresh subprocess. Time is measured inside the child from its first statement (imports
included, interpreter start-up not), as wall time and as CPU time of all its threads; peak memory is
the child's peak RSS (``VmHWM`` of ``/proc/self/status`` when it ends). With ``--repeats N`` the
minimum of each is reported. Ratios are vocabshift / raw; the project's goal is at most 1.1x for wall
time and peak memory.

The text is built once in ``benchmarks/.cache/`` from the samples shipped in ``vocabshift/data``,
repeated with a deterministic shift so that repeated lines are not byte-identical (see
:func:`build_text`). Nothing here is a test: timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _docsection import write_section  # noqa: E402  (sibling modules of this script)
from _harness import machine_facts  # noqa: E402

CACHE = ROOT / "benchmarks" / ".cache"
DOC = ROOT / "docs" / "benchmarks.md"
MARK_START = "<!-- tokenizer_train:start -->"
MARK_END = "<!-- tokenizer_train:end -->"
DOC_HEADER = (
    "# Benchmarks\n\n"
    "Numbers measured by the scripts in `benchmarks/` (see `benchmarks/README.md` for what each one\n"
    "measures and how to run it). Each script rewrites only its own section, between its markers.\n"
)

TEXT_VERSION = 1  # bump when build_text changes, so that cached text files are rebuilt
SAMPLE_NAMES = ["bible.eng.txt.gz", "bible.spa.txt.gz"] + [
    f"udhr.{code}.txt"
    for code in ("amh", "arb", "ben", "cmn_hans", "deu", "ell", "eng", "fra", "hau_NG", "heb", "hin",
                 "hun", "jpn", "kor", "rus", "spa", "swh", "tha", "tir", "vie", "yor", "zul")
]
# case name -> the source it trains from and the trainer that does the work
CASES = {
    "byte_level_bpe": "SmolLM2-135M-Instruct (GGUF, converted once to an HF folder)",
    "wordpiece": "all-MiniLM-L6-v2 (BERT uncased)",
    "sentencepiece_unigram": "XLM-R-style sentencepiece Unigram (native sentencepiece.bpe.model)",
}
IMPLS = ("raw", "vocabshift")
CHILD_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "true"}


# --------------------------------------------------------------------------------------------------
# The text


def _sample_lines(name: str) -> list[str]:
    from vocabshift.data import sample_path

    path = sample_path(name)
    raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    return [line for line in raw.decode("utf-8").split("\n") if line.strip()]


def _shifted_lines(samples: list[list[str]]) -> Iterator[str]:
    """The samples' lines, interleaved, pass after pass, each pass shifted one more word (endless)."""
    words = [[w for line in lines for w in line.split()] for lines in samples]
    starts = []  # starts[s][j]: index in words[s] of the first word of line j of sample s
    for lines in samples:
        offsets, total = [], 0
        for line in lines:
            offsets.append(total)
            total += len(line.split())
        starts.append(offsets)
    # Interleave: line j of a sample with n lines sits at (j + 0.5) / n of every pass.
    order = sorted(((j + 0.5) / len(lines), s, j) for s, lines in enumerate(samples) for j in range(len(lines)))
    for shift in itertools.count():
        for _, s, j in order:
            if shift == 0:
                yield samples[s][j]
                continue
            stream, length = words[s], len(samples[s][j].split())
            start = (starts[s][j] + shift) % len(stream)
            window = stream[start:start + length]
            if len(window) < length:  # wrap around the end of the sample
                window += stream[: length - len(window)]
            yield " ".join(window)


def build_text(mb: float) -> Path:
    """One ``.txt`` file of about ``mb`` MB (10**6 bytes; never more), one verse/paragraph per line.

    Pass 0 is the 24 shipped samples verbatim, their lines interleaved in proportion (so that any
    prefix has the same language mix). Pass k >= 1 repeats them with every line's word window shifted
    k words further along its sample's whitespace-split word stream: the same lengths and the same
    words in the same order, but lines start and end at other words (crossing verse boundaries), so
    they are not byte-identical to earlier passes. Lines of text written without spaces (Chinese,
    Japanese, Thai paragraphs are single "words") shift by whole paragraphs and do repeat; they are
    about 0.6% of the samples. The word *types* are those of the samples (about 8.3 MB of unique
    text): the repetition grows word counts, not the vocabulary a trainer sees.
    """
    path = CACHE / f"text-v{TEXT_VERSION}-{mb:g}mb.txt"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    target, written = int(mb * 1_000_000), 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for line in _shifted_lines([_sample_lines(name) for name in SAMPLE_NAMES]):
            size = len(line.encode("utf-8")) + 1
            if written + size > target:
                break
            fh.write(line + "\n")
            written += size
    tmp.rename(path)
    return path


def _text_facts(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    lines = data.split(b"\n")[:-1]
    return {"path": str(path.relative_to(ROOT)), "bytes": len(data), "lines": len(lines),
            "unique_lines": len(set(lines))}


# --------------------------------------------------------------------------------------------------
# Sources, and the settings vocabshift passes to the trainers (mirrored, derived before any timing)


def prepare_source(case: str) -> Path:
    """The source tokenizer folder of a case, built once into the cache."""
    from transformers import AutoTokenizer

    from vocabshift.resources import minilm_dir, smollm2_gguf

    if case == "wordpiece":
        return minilm_dir()
    out = CACHE / "sources" / case
    if (out / "tokenizer.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    if case == "byte_level_bpe":
        # Converted once so that the ~9 s GGUF load is counted in neither implementation.
        gguf = smollm2_gguf()
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(out)
    else:
        # As tests/conftest.py's xlmr_source: a small unigram .model trained on UDHR text, loaded by
        # XLMRobertaTokenizer, saved so that tokenizer.json exists beside the native .model.
        import sentencepiece as spm

        english = CACHE / "sources" / "udhr.eng-fra-deu.txt"
        english.write_text("\n".join(_sample_lines("udhr.eng.txt") + _sample_lines("udhr.fra.txt")
                                     + _sample_lines("udhr.deu.txt")) + "\n", encoding="utf-8")
        writer = io.BytesIO()
        spm.SentencePieceTrainer.train(input=str(english), model_writer=writer, minloglevel=2,
                                       vocab_size=900, model_type="unigram")
        (out / "sentencepiece.bpe.model").write_bytes(writer.getvalue())
        (out / "tokenizer_config.json").write_text(
            json.dumps({"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512}))
        AutoTokenizer.from_pretrained(str(out)).save_pretrained(out)
    return out


def _config_defaults() -> dict[str, Any]:
    """The defaults of TokenizerTrainConfig, which the benchmark leaves unchanged for vocabshift."""
    import dataclasses

    from vocabshift.config import TokenizerTrainConfig

    return {f.name: f.default for f in dataclasses.fields(TokenizerTrainConfig)}


def raw_settings(case: str, source: Path, vocab_size: int, threads: int | None) -> dict[str, Any]:
    """What vocabshift hands the trainer for this source (see vocabshift/tokenization/train.py).

    The source is read as vocabshift reads it, through ``AutoTokenizer``'s backend tokenizer.json.
    """
    from transformers import AutoTokenizer

    defaults = _config_defaults()
    max_piece = defaults["max_piece_length"]

    hf = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    backend = json.loads(hf.backend_tokenizer.to_str())
    model = backend["model"]
    specials = [t["content"] for t in sorted(backend.get("added_tokens", []), key=lambda t: t["id"])]
    if case == "sentencepiece_unigram":
        return {"trainer": "sentencepiece", "kwargs": _spm_kwargs(source, len(hf), vocab_size, threads, defaults)}
    # _training_pipeline: the source pipeline around an empty model of the same type, no post-processor.
    if model["type"] == "BPE":
        empty = {k: v for k, v in model.items() if k not in ("vocab", "merges")}
        empty.update(vocab={}, merges=[], dropout=None)
    else:
        empty = {k: v for k, v in model.items() if k != "vocab"}
        empty["vocab"] = {}
    pipeline = {"version": backend.get("version", "1.0"), "truncation": None, "padding": None,
                "added_tokens": [], "normalizer": backend.get("normalizer"),
                "pre_tokenizer": backend.get("pre_tokenizer"), "post_processor": None,
                "decoder": backend.get("decoder"), "model": empty}
    # _train_with_tokenizers: the unk token joins the specials; no byte pieces for these families.
    unk = model.get("unk_token")
    if unk is not None and unk not in specials:
        specials.append(unk)
    kwargs: dict[str, Any] = {"vocab_size": vocab_size, "min_frequency": defaults["min_frequency"],
                              "special_tokens": specials, "show_progress": False}
    if case == "byte_level_bpe":
        kwargs["max_token_length"] = max_piece if max_piece > 0 else None
        kwargs.update({k: model[k] for k in ("continuing_subword_prefix", "end_of_word_suffix") if model.get(k)})
        trainer = "BpeTrainer"  # + initial_alphabet=ByteLevel.alphabet(), added in the child
    else:
        kwargs["continuing_subword_prefix"] = model.get("continuing_subword_prefix") or "##"
        trainer = "WordPieceTrainer"
    return {"trainer": "tokenizers", "trainer_class": trainer, "pipeline": pipeline, "kwargs": kwargs,
            "byte_level_alphabet": case == "byte_level_bpe"}


def _spm_kwargs(source: Path, hf_len: int, vocab_size: int, threads: int | None,
                defaults: dict[str, Any]) -> dict[str, Any]:
    """_train_with_sentencepiece's arguments (the library's own builder), minus the text input and writer."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    from vocabshift.tokenization.train import sentencepiece_trainer_args

    proto = pb.ModelProto()
    proto.ParseFromString((source / "sentencepiece.bpe.model").read_bytes())
    if proto.normalizer_spec.name not in {"nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf", "identity"}:
        raise SystemExit(f"{source}: custom normalization rule {proto.normalizer_spec.name!r}; "
                         "the raw baseline mirrors built-in rules only")
    # XLM-R's <pad> and <mask> live outside the .model
    return sentencepiece_trainer_args(proto, vocab_size - (hf_len - len(proto.pieces)),
                                      character_coverage=defaults["character_coverage"],
                                      max_piece_length=defaults["max_piece_length"], threads=threads)


# --------------------------------------------------------------------------------------------------
# The child: one timed run of one implementation


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


def child(spec_path: str) -> None:
    t0 = _clock()
    spec = json.loads(Path(spec_path).read_text())
    phases: list[dict[str, Any]] = []

    def mark(name: str, since: tuple[float, float], inner: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
        now = _clock()
        phases.append({"phase": name, "seconds": now[0] - since[0] - inner[0],
                       "cpu_seconds": now[1] - since[1] - inner[1], "rss_mb": _status_mb("VmRSS"),
                       "peak_rss_mb": _status_mb("VmHWM")})
        return now

    out = Path(spec.get("out", "."))
    if spec["impl"] == "vocabshift":
        import vocabshift.tokenization.train as vt
        from vocabshift.config import TokenizerTrainConfig
        from vocabshift.corpus import corpus_from_paths

        mark("import vocabshift", t0)
        # Time vocabshift's own steps by wrapping them where train_tokenizer looks them up. Steps can
        # nest (_train_with_sentencepiece calls _convert_sentencepiece): each reports its own time only.
        steps = {"load_source_tokenizer": "load source (transformers)", "plain_text_files": "check corpus files",
                 "_train_with_tokenizers": "train", "_train_with_sentencepiece": "train",
                 "_convert_sentencepiece": "convert .model (transformers)", "_mirror_source": "mirror source",
                 "_write_output": "write output", "_verify_reload": "reload + check"}
        nested: list[list[float]] = []  # [wall, cpu] spent in timed steps below each running step

        for attr, label in steps.items():
            if not hasattr(vt, attr):  # a step the library no longer has
                continue

            def timed(*args: Any, _fn: Any = getattr(vt, attr), _label: str = label, **kwargs: Any) -> Any:
                nested.append([0.0, 0.0])
                start = _clock()
                result = _fn(*args, **kwargs)
                inner = nested.pop()
                end = mark(_label, start, (inner[0], inner[1]))
                if nested:
                    nested[-1][0] += end[0] - start[0]
                    nested[-1][1] += end[1] - start[1]
                return result

            setattr(vt, attr, timed)
        config = TokenizerTrainConfig(source=spec["source"], corpus=corpus_from_paths(spec["text"]),
                                      vocab_size=spec["vocab_size"], out=str(out), threads=spec["threads"],
                                      show_progress=False)
        vt.train_tokenizer(config)
    elif spec["impl"] == "transformers":  # for scale: what importing AutoTokenizer costs by itself
        from transformers import AutoTokenizer  # noqa: F401

        mark("import transformers.AutoTokenizer", t0)
    elif spec["settings"]["trainer"] == "tokenizers":
        from tokenizers import Tokenizer, pre_tokenizers, trainers

        start = mark("import tokenizers", t0)
        settings = spec["settings"]
        kwargs = dict(settings["kwargs"])
        if settings["byte_level_alphabet"]:
            kwargs["initial_alphabet"] = pre_tokenizers.ByteLevel.alphabet()
        trainer = getattr(trainers, settings["trainer_class"])(**kwargs)
        tok = Tokenizer.from_str(json.dumps(settings["pipeline"]))
        tok.train([spec["text"]], trainer)
        start = mark("train", start)
        out.mkdir(parents=True)
        tok.save(str(out / "tokenizer.json"))
        mark("save", start)
    else:
        import sentencepiece as spm

        start = mark("import sentencepiece", t0)
        writer = io.BytesIO()
        spm.SentencePieceTrainer.train(input=spec["text"], model_writer=writer, **spec["settings"]["kwargs"])
        start = mark("train", start)
        out.mkdir(parents=True)
        (out / "sentencepiece.bpe.model").write_bytes(writer.getvalue())
        mark("save", start)
    end = _clock()
    # VmHWM, not ru_maxrss: the kernel carries the parent's peak into a child's ru_maxrss across
    # fork + exec, and the parent has imported transformers. VmHWM belongs to this exec'd image only.
    result = {"seconds": end[0] - t0[0], "cpu_seconds": end[1] - t0[1], "peak_rss_mb": _status_mb("VmHWM"),
              "phases": phases}
    Path(spec["result"]).write_text(json.dumps(result))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown, the same for both implementations


def run_child(spec: dict[str, Any], log: Path, threads: int | None) -> dict[str, Any]:
    """Run one child; return its timings and its peak RSS, as it measured them."""
    spec_path = log.with_suffix(".spec.json")
    spec_path.write_text(json.dumps(spec))
    Path(spec["result"]).unlink(missing_ok=True)
    env = {**os.environ, **CHILD_ENV}
    if threads:
        env["RAYON_NUM_THREADS"] = str(threads)  # the tokenizers trainers' thread pool
    before = _machine_busy()
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        proc.wait()
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{spec['case']} / {spec['impl']} failed with exit status {proc.returncode}:\n{tail}")
    result = json.loads(Path(spec["result"]).read_text())
    result["foreign_cpu"] = _foreign_share(before, _machine_busy())
    return result


# --------------------------------------------------------------------------------------------------
# Comparing the outputs, machine facts, the report


def _vocab(out: Path) -> set[str]:
    model = out / "sentencepiece.bpe.model"
    if model.exists():
        from sentencepiece import sentencepiece_model_pb2 as pb

        proto = pb.ModelProto()
        proto.ParseFromString(model.read_bytes())
        return {p.piece for p in proto.pieces}
    data = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    pieces = {p for p, _ in vocab} if isinstance(vocab, list) else set(vocab)
    return pieces | {t["content"] for t in data.get("added_tokens", [])}


PACKAGES = ("vocabshift", "tokenizers", "sentencepiece", "transformers", "torch")


def _machine_busy() -> tuple[float, float, float]:
    """(wall seconds, CPU seconds all processes used, CPU seconds this process and its children used)."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    busy = sum(fields[i] for i in (0, 1, 2, 5, 6))  # user, nice, system, irq, softirq (guest is in user)
    own = os.times()
    return time.perf_counter(), busy / ticks, own.user + own.system + own.children_user + own.children_system


def _foreign_share(start: tuple[float, float, float], end: tuple[float, float, float]) -> float:
    """Share of the machine's CPU that other processes used between two ``_machine_busy`` readings."""
    wall, busy, own = (b - a for a, b in zip(start, end, strict=True))
    return max(busy - own, 0.0) / (wall * (os.cpu_count() or 1)) if wall > 0 else 0.0


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def summarize(results: dict[str, dict[str, list[dict[str, Any]]]], agreement: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for case, by_impl in results.items():
        best = {impl: min(runs, key=lambda r: r["seconds"]) for impl, runs in by_impl.items()}
        raw_s, vs_s = (min(r["seconds"] for r in by_impl[i]) for i in IMPLS)
        raw_m, vs_m = (min(r["peak_rss_mb"] for r in by_impl[i]) for i in IMPLS)
        raw_c, vs_c = (min(r["cpu_seconds"] for r in by_impl[i]) for i in IMPLS)
        spread = max(max(r["seconds"] for r in runs) / min(r["seconds"] for r in runs) for runs in by_impl.values())
        time_ratio, mem_ratio = _ratio(vs_s, raw_s), _ratio(vs_m, raw_m)
        missed = [name for name, r in (("time", time_ratio), ("memory", mem_ratio)) if not r <= 1.1]
        rows.append({"case": case, "trainer": "sentencepiece" if case == "sentencepiece_unigram" else "tokenizers",
                     "raw_s": raw_s, "vs_s": vs_s, "time_ratio": time_ratio, "cpu_ratio": _ratio(vs_c, raw_c),
                     "spread": spread, "foreign_best": max(best[i]["foreign_cpu"] for i in IMPLS),
                     "raw_mb": raw_m, "vs_mb": vs_m, "mem_ratio": mem_ratio,
                     "goal": "yes" if not missed else "no (" + ", ".join(missed) + ")",
                     "agreement": agreement.get(case, float("nan")), "phases": {i: best[i]["phases"] for i in IMPLS}})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = ["case", "trainer", "raw time (s)", "vocabshift time (s)", "time ratio", "CPU time ratio", "raw peak RSS (MiB)",
            "vocabshift peak RSS (MiB)", "memory ratio", "<= 1.1x", "same vocab"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|"]
    for r in rows:
        cells = [r["case"], r["trainer"], f"{r['raw_s']:.1f}", f"{r['vs_s']:.1f}", f"{r['time_ratio']:.2f}x",
                 f"{r['cpu_ratio']:.2f}x",
                 f"{r['raw_mb']:.0f}", f"{r['vs_mb']:.0f}", f"{r['mem_ratio']:.2f}x", r["goal"],
                 f"{r['agreement']:.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def phase_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| case | implementation | step | seconds | CPU seconds | RSS after (MiB) | peak RSS so far (MiB) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        for impl in IMPLS:
            for p in r["phases"][impl]:
                lines.append(f"| {r['case']} | {impl} | {p['phase']} | {p['seconds']:.2f} | {p['cpu_seconds']:.2f} "
                             f"| {p['rss_mb']:.0f} | {p['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def _phase(phases: list[dict[str, Any]], name: str, key: str = "seconds") -> float:
    return sum(p[key] for p in phases if p["phase"] == name)


def overhead_table(rows: list[dict[str, Any]]) -> str:
    """vocabshift minus raw, split into the steps that explain it (fastest run of each)."""
    lines = ["| case | extra time (s) | load source (transformers) | check corpus files | train minus raw train "
             "| other vocabshift steps | extra peak RSS (MiB) | RSS added by loading the source (MiB) "
             "| peak RSS added while checking the corpus (MiB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        vs, raw = r["phases"]["vocabshift"], r["phases"]["raw"]
        extra = r["vs_s"] - r["raw_s"]
        load = _phase(vs, "load source (transformers)")
        check = _phase(vs, "check corpus files")
        train = _phase(vs, "train") - _phase(raw, "train")
        loaded_rss = next((p["rss_mb"] for p in vs if p["phase"] == "load source (transformers)"), float("nan"))
        # The check's transient: its peak above the memory resident when it started.
        at = next((i for i, p in enumerate(vs) if p["phase"] == "check corpus files"), None)
        check_peak = float("nan") if not at else vs[at]["peak_rss_mb"] - vs[at - 1]["rss_mb"]
        lines.append(f"| {r['case']} | {extra:+.1f} | {load:.1f} | {check:.1f} | {train:+.1f} "
                     f"| {extra - load - check - train:+.1f} | {r['vs_mb'] - r['raw_mb']:+.0f} "
                     f"| {loaded_rss - raw[0]['rss_mb']:+.0f} | {check_peak:+.0f} |")
    return "\n".join(lines)


def doc_section(rows: list[dict[str, Any]], args: argparse.Namespace, text: dict[str, Any],
                facts: dict[str, Any], reference: dict[str, Any], foreign: float) -> str:
    command = "python benchmarks/tokenizer_train.py" + "".join(
        f" {flag} {value}" for flag, value, default in (
            ("--mb", f"{args.mb:g}", "100"), ("--vocab-size", args.vocab_size, 32000),
            ("--cases", ",".join(args.cases), ",".join(CASES)), ("--repeats", args.repeats, 1),
            ("--threads", args.threads, None)) if value != default)
    sources = "\n".join(f"  - `{case}`: {CASES[case]}" for case in args.cases)
    wordpiece_note = "" if "wordpiece" not in args.cases else (
        "\n  tokenizers' WordPiece trainer is not deterministic from one process to the next (it breaks ties "
        "between equally frequent pairs in hash-map order), so two raw WordPiece runs also differ by about 1%.")
    spread = "" if args.repeats < 2 else (
        f"\n  Wall time varied by up to {max(r['spread'] for r in rows):.2f}x (slowest / fastest run of one case and "
        "implementation) on this shared virtual machine; the minimum filters most of that out.")
    met = [r["case"] for r in rows if r["goal"] == "yes"]
    verdict = ("met for every case" if len(met) == len(rows)
               else f"met for {', '.join(met) or 'no case'}; missed for "
                    + ", ".join(f"{r['case']} ({r['goal'][4:-1]})" for r in rows if r["goal"] != "yes"))
    return f"""## Tokenizer training: vocabshift versus the raw trainers

Train a {args.vocab_size:,}-token tokenizer on {text['bytes'] / 1e6:.0f} MB of text with
`vocabshift.tokenization.train.train_tokenizer` and with the raw trainer it drives, given the same settings.
Goal: vocabshift at most 1.1x the raw trainer in time and in peak memory: **{verdict}**.
Measured on {datetime.date.today().isoformat()} with

    {command}

{table(rows)}

- Each run is a fresh subprocess.
  Time is measured inside it from its first statement (imports included, interpreter start-up not); peak memory is its peak resident set (`VmHWM` in `/proc/self/status`).
  Both are the minimum of {args.repeats} run(s); ratios are vocabshift / raw; the goal is judged on wall time and peak memory.
  "CPU time" is user + system time of all the child's threads, which the machine's load disturbs less than wall time.{spread}
  Other processes used {100 * foreign:.0f}% of the machine's CPU while the benchmark ran, and at most {100 * max(r['foreign_best'] for r in rows):.0f}% during the fastest runs reported here.
  "same vocab" is the share of tokens the two outputs have in common (intersection over union).{wordpiece_note}
- raw: `Tokenizer.train([file], trainer)` on the source's pipeline around an empty model (`tokenizers`), or `SentencePieceTrainer.train(input=file, ...)` (`sentencepiece`), with the arguments vocabshift passes, mirrored from `vocabshift/tokenization/train.py`.
  It saves the trained `tokenizer.json` or `.model` and nothing else.
- vocabshift: all that `train_tokenizer` does: load the source (its `tokenizer.json` with `tokenizers`; transformers only for GGUF or `.model`-only sources, and to convert a trained sentencepiece `.model`), read the corpus with `vocabshift.corpus`, train, mirror the source's pipeline and special tokens, write the output folder and check it (re-read without transformers; a full `AutoTokenizer` reload for vocabularies up to 65,536 tokens when transformers is already loaded).
  A corpus of plain UTF-8 text files, like this one, is checked in Python ("check corpus files") and then handed to the trainer as files, as in raw; other corpora are streamed to the trainer through Python during "train".
  Progress bars and trainer logs are off in both.
- Sources:
{sources}
- Text: `{text['path']}`, {text['bytes']:,} bytes, {text['lines']:,} lines ({text['unique_lines']:,} distinct), one verse or paragraph per line.
  It is the 24 samples shipped in `vocabshift/data` (two Bibles and 22 UDHR translations, about 8.3 MB of unique text) repeated:
  pass 0 is the samples verbatim with their lines interleaved, and each further pass shifts every line's word window one more word along its sample's word stream, so repeated lines are not byte-identical copies
  (except in Chinese, Japanese and Thai, which are written without spaces: about 0.6% of the text).
  The word types stay those of the samples; a real corpus of this size has many more, which costs both implementations more memory and makes the fixed costs below a smaller share.
- Machine: {facts['cpu']}, {facts['cores']} cores, {facts['ram']} RAM, {facts['os']}; trainer threads: {facts['threads']}.
  Python {facts['python']}, vocabshift {facts['vocabshift']}, tokenizers {facts['tokenizers']}, sentencepiece {facts['sentencepiece']}, transformers {facts['transformers']}, torch {facts['torch']}.

Where the overhead comes from (the fastest run of each).
"load source" is `load_source_tokenizer`, which goes through `AutoTokenizer`; importing it imports torch.
For scale, a child that only runs `from transformers import AutoTokenizer` takes {reference['seconds']:.1f} s and {reference['peak_rss_mb']:.0f} MiB peak RSS here.
"check corpus files" is `vocabshift.corpus.plain_text_files`, which decodes the files in Python to validate them before the trainer reads them.
"other vocabshift steps" are importing vocabshift, converting the trained `.model` (sentencepiece), mirroring the source, writing the output and the reload check.

{overhead_table(rows)}

Each step, in the order they ended ("RSS after" is the resident memory when the step ended, "peak RSS so far" the process's peak until then):

{phase_table(rows)}
"""


def write_doc(section: str) -> None:
    """Replace this script's section of the doc."""
    write_section(DOC, MARK_START, MARK_END, section, DOC_HEADER)


# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=100, help="size of the training text in MB (10**6 bytes)")
    parser.add_argument("--vocab-size", type=int, default=32000, help="size of the trained tokenizer")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--repeats", type=int, default=1, help="runs per case and implementation (min reported)")
    parser.add_argument("--threads", type=int, default=None, help="trainer threads (default: all cores)")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DOC.relative_to(ROOT)}")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is None:
        args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = [c for c in args.cases if c not in CASES]
        if unknown or not args.cases:
            parser.error(f"unknown case(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(CASES)}")
        if args.repeats < 1 or args.mb <= 0 or args.vocab_size <= 0 or (args.threads is not None and args.threads < 1):
            parser.error("--repeats, --mb, --vocab-size and --threads must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args.child)
        return
    os.environ.update(CHILD_ENV)
    busy_start = _machine_busy()
    load = os.getloadavg()[0]
    if load > 0.25 * (os.cpu_count() or 1):
        print(f"warning: load average {load:.1f} on {os.cpu_count()} cores: other processes will disturb the timings",
              flush=True)
    print(f"building {args.mb:g} MB of text in {CACHE.relative_to(ROOT)}/ ...", flush=True)
    text_path = build_text(args.mb)
    text = _text_facts(text_path)
    print(f"text: {text['bytes']:,} bytes, {text['lines']:,} lines ({text['unique_lines']:,} distinct)", flush=True)
    runs = CACHE / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    agreement: dict[str, float] = {}
    for case in args.cases:
        source = prepare_source(case)
        settings = raw_settings(case, source, args.vocab_size, args.threads)
        results[case] = {impl: [] for impl in IMPLS}
        outs = {}
        for rep in range(args.repeats):
            for impl in IMPLS:  # alternate, so that drift in the machine hits both alike
                out = CACHE / "out" / case / impl
                shutil.rmtree(out, ignore_errors=True)
                outs[impl] = out
                log = runs / f"{case}.{impl}.{rep}.log"
                spec = {"case": case, "impl": impl, "text": str(text_path), "source": str(source), "out": str(out),
                        "vocab_size": args.vocab_size, "threads": args.threads, "settings": settings,
                        "result": str(log.with_suffix(".result.json"))}
                result = run_child(spec, log, args.threads)
                results[case][impl].append(result)
                print(f"{case:>22} {impl:>10} run {rep + 1}/{args.repeats}: {result['seconds']:8.1f} s "
                      f"{result['peak_rss_mb']:8.0f} MiB peak RSS   (other processes: {100 * result['foreign_cpu']:3.0f}% CPU)",
                      flush=True)
        a, b = _vocab(outs["raw"]), _vocab(outs["vocabshift"])
        agreement[case] = 100 * len(a & b) / len(a | b)
    log = runs / "transformers_import.log"
    reference = run_child({"case": "reference", "impl": "transformers", "result": str(log.with_suffix(".result.json"))},
                          log, args.threads)
    rows = summarize(results, agreement)
    foreign = _foreign_share(busy_start, _machine_busy())
    print()
    print(table(rows))
    print()
    print(phase_table(rows))
    print(f"\nfor scale: `from transformers import AutoTokenizer` alone: {reference['seconds']:.1f} s, "
          f"{reference['peak_rss_mb']:.0f} MiB peak RSS")
    print(f"other processes used {100 * foreign:.0f}% of the machine's CPU during the run")
    if not args.no_write:
        write_doc(doc_section(rows, args, text, machine_facts(PACKAGES, threads=args.threads or os.cpu_count()), reference, foreign))
        print(f"\nwrote the tokenizer_train section of {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
