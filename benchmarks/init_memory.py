"""Peak memory and time of ``vocabshift init`` on a 1.1B-parameter bf16 checkpoint: lean path vs ``--in-memory``.

The lean path (the default for safetensors directories) reads only the vocabulary-sized tensors and
streams the rest; ``--in-memory`` loads the whole model in fp32. The model is TinyLlama-shaped
(hidden 2048, 22 layers, MLP 5632, 32 heads / 4 KV heads, untied head) with SmolLM2's 49,152-token
tokenizer and random bf16 weights (built once into ``benchmarks/.cache/init_memory``; memory and time do
not depend on the values). The target is the 32,000-token Spanish tokenizer of ``init_speed`` and the
method ``fvt`` (no vectors needed), so the numbers are the surgery's, not a method's.

Each run is ``vocabshift init`` in a child process; its peak RSS comes from ``getrusage`` of that child.

    python benchmarks/init_memory.py            # writes its section of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache" / "init_memory"
DOC = ROOT / "docs" / "benchmarks.md"
MARK_START = "<!-- init_memory:start -->"
MARK_END = "<!-- init_memory:end -->"
SHAPE = {"hidden_size": 2048, "num_hidden_layers": 22, "intermediate_size": 5632, "num_attention_heads": 32,
         "num_key_value_heads": 4}

# Runs the command given after it and prints its peak RSS in KiB (Linux ru_maxrss) and wall seconds.
_MEASURE = ("import resource, subprocess, sys, time\n"
            "t = time.perf_counter(); rc = subprocess.run(sys.argv[1:]).returncode\n"
            "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t)\n")


def build_model(tokenizer_dir: Path) -> Path:
    """A TinyLlama-shaped bf16 checkpoint with random weights and ``tokenizer_dir``'s tokenizer (cached)."""
    out = CACHE / "llama-1.1b-bf16"
    if (out / "model.safetensors").exists() or (out / "model.safetensors.index.json").exists():
        return out
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(vocab_size=len(tok), tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, **SHAPE)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(torch.float32)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(str(tmp), max_shard_size="1GB")
    tok.save_pretrained(str(tmp))
    tmp.rename(out)
    return out


def run_init(model: Path, tokenizer: Path, out: Path, in_memory: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-c", "from cli.main import main; main()", "init", "--method", "fvt", "--model", str(model), "--tokenizer",
           str(tokenizer), "--out", str(out), "--force"] + (["--in-memory"] if in_memory else [])
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    last = proc.stdout.strip().splitlines()[-1].split()
    rc, maxrss_kib, seconds = int(last[0]), int(last[1]), float(last[2])
    if rc != 0:
        raise SystemExit(f"vocabshift init failed ({rc}):\n{proc.stderr[-3000:]}")
    weights = sum(p.stat().st_size for p in out.glob("*.safetensors") if p.name.startswith("model"))
    report = json.loads((out / "init_report.json").read_text())
    return {"path": "lean (default)" if not in_memory else "--in-memory", "peak_mib": maxrss_kib / 1024,
            "seconds": seconds, "output_bytes": weights, "report_path": report["path"]}


def section(rows: list[dict[str, Any]], facts: dict[str, Any]) -> str:
    lines = [
        "## Init memory: lean path against `--in-memory` on a 1.1B bf16 checkpoint",
        "",
        f"`vocabshift init --method fvt` on a TinyLlama-shaped model ({facts['parameters'] / 1e9:.2f}B parameters, "
        f"bf16, untied head, {facts['source_vocab']:,} tokens, {facts['input_bytes'] / 2**30:.2f} GiB of weights) "
        f"moved to the 32,000-token Spanish tokenizer of `init_speed`. Measured on {facts['date']} with",
        "",
        "    python benchmarks/init_memory.py",
        "",
        "| path | peak RSS (MiB) | peak / input weights | time (s) | output weights (GiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['path']} | {r['peak_mib']:,.0f} | {r['peak_mib'] * 2**20 / facts['input_bytes']:.2f}x | "
                     f"{r['seconds']:.1f} | {r['output_bytes'] / 2**30:.2f} |")
    lean, full = rows[0], rows[1]
    lines += [
        "",
        f"The lean path peaks at {lean['peak_mib'] / full['peak_mib']:.0%} of the in-memory path's memory and "
        f"keeps the checkpoint in bf16 ({lean['output_bytes'] / 2**30:.2f} GiB written against "
        f"{full['output_bytes'] / 2**30:.2f} GiB of fp32). What it holds: Python, torch and transformers "
        "(about 0.6 GiB here), the two vocabulary-sized matrices in bf16 and a float32 copy of one at a "
        "time, the new rows; every other tensor is copied from file to file in 64 MiB pieces.",
        "",
        f"- Machine: {facts['cpu']}, {facts['cores']} cores, {facts['ram']} RAM, {facts['os']}. Python "
        f"{facts['python']}, vocabshift {facts['vocabshift']}, torch {facts['torch']}, transformers "
        f"{facts['transformers']}, safetensors {facts['safetensors']}. Load average at the start: {facts['load']}.",
        "- Peak RSS: `getrusage(RUSAGE_CHILDREN).ru_maxrss` of a wrapper whose only child is the "
        "`vocabshift init` process; time: that child's wall time, interpreter start and imports included.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DOC.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _inputs

    os.environ.update({k: v for k, v in _inputs.OFFLINE_ENV.items() if k not in ("XDG_CACHE_HOME", "HF_HOME")})
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    built = _inputs.build_all(32_000, peers=False)
    CACHE.mkdir(parents=True, exist_ok=True)
    model = build_model(Path(built["model"]))
    config = json.loads((model / "config.json").read_text())
    input_bytes = sum(p.stat().st_size for p in model.glob("model*.safetensors"))
    rows = [run_init(model, Path(built["tokenizer"]), CACHE / f"out-{name}", name == "in-memory")
            for name in ("lean", "in-memory")]
    for r in rows:
        print(f"{r['path']:>16}: peak {r['peak_mib']:,.0f} MiB, {r['seconds']:.1f} s, "
              f"output {r['output_bytes'] / 2**30:.2f} GiB ({r['report_path']})", flush=True)
    from _harness import machine_facts

    h, i, n_layers, v = (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"],
                         config["vocab_size"])
    kv = h // config["num_attention_heads"] * config["num_key_value_heads"]
    parameters = 2 * v * h + n_layers * (2 * h * h + 2 * h * kv + 3 * h * i + 2 * h) + h
    facts = machine_facts(("vocabshift", "torch", "transformers", "safetensors"), parameters=parameters,
                          source_vocab=v, input_bytes=input_bytes, date=time.strftime("%Y-%m-%d"), load=load)
    text = section(rows, facts)
    print(text)
    if not args.no_write:
        from _docsection import write_section

        write_section(DOC, MARK_START, MARK_END, text)
    for name in ("lean", "in-memory"):  # 2-5 GiB each: not worth keeping
        shutil.rmtree(CACHE / f"out-{name}", ignore_errors=True)


if __name__ == "__main__":
    main()
