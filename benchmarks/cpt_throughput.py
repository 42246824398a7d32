"""Benchmark: continued-pretraining throughput of ``vocabshift train`` versus HF ``Trainer`` + PEFT.

    python benchmarks/cpt_throughput.py                       # CPU: SmolLM2-135M, seq 128, batch 4
    python benchmarks/cpt_throughput.py --device cuda --seq-len 1024 --batch-size 16 --compile
    python benchmarks/cpt_throughput.py --model pico --no-write        # quick check (a pico Llama)

Both sides train the same model on the same packed sequences (Spanish Bible verses, packed by
``vocabshift.train.data.PackedStream`` with the model's own tokenizer), with the same batch size,
sequence length, LoRA (r 16, alpha 32, dropout 0.05 on every attention and MLP projection), the input
embeddings trainable (SmolLM2's head is tied to them), AdamW, cosine schedule, gradient clipping at
1.0, bf16 autocast on CUDA and fp32 on CPU:

* ``vocabshift``: ``vocabshift.train.loop.train`` as ``vocabshift train`` runs it (streamed data with
  one tokenizer worker, accelerate, fused AdamW on CUDA, metrics every step, no checkpoint or
  evaluation inside the timed window); ``--compile`` adds a row with ``compile: true``.
* ``baseline``: ``transformers.Trainer`` on a ``PeftModel`` from ``get_peft_model`` with the same
  ``LoraConfig``; the embeddings train through ``requires_grad`` (``--baseline-embeddings
  modules_to_save`` uses PEFT's ``modules_to_save=["embed_tokens"]`` instead, which copies the
  matrix); pre-packed sequences in memory; ``bf16=True`` on CUDA, Trainer's default optimizer.

Every run is a fresh subprocess. Throughput is tokens / wall time over the steps after
``--warmup`` steps (timestamps taken at each optimizer step's end); peak memory is
``torch.cuda.max_memory_allocated`` on CUDA and the process's peak RSS (``VmHWM``) on CPU. Goal on a
GPU: vocabshift at least 1.3x the baseline's tokens/s. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _docsection import write_section  # noqa: E402  (a sibling module of this script)

CACHE = ROOT / "benchmarks" / ".cache" / "cpt"
DOC = ROOT / "docs" / "benchmarks.md"
MARK_START = "<!-- cpt_throughput:start -->"
MARK_END = "<!-- cpt_throughput:end -->"
GOAL = 1.3
LORA = {"r": 16, "alpha": 32.0, "dropout": 0.05}
LR = {"embedding": 5e-4, "lora": 2e-4}


def log(msg: str) -> None:
    print(f"[cpt_throughput] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Inputs


def model_dir(name: str) -> Path:
    """SmolLM2-135M as an HF folder (shared with the init benchmarks), or a pico Llama with its tokenizer."""
    sys.path.insert(0, str(ROOT))
    if name == "smollm2":
        from benchmarks._inputs import smollm2_dir

        return smollm2_dir()
    out = CACHE / "pico-llama"
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from benchmarks._inputs import smollm2_dir

    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                                         eos_token_id=tok.eos_token_id))
    tmp = Path(tempfile.mkdtemp(dir=CACHE))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out


def text_file() -> Path:
    """Spanish Bible verses, one per line (the shipped sample)."""
    import gzip

    from vocabshift.data import sample_path

    out = CACHE / "bible.spa.txt"
    if not out.exists():
        out.write_bytes(gzip.decompress(sample_path("bible.spa.txt.gz").read_bytes()))
    return out


# --------------------------------------------------------------------------------------------------
# Children (each run is one subprocess: python cpt_throughput.py --child '<json>')


def _peak(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child_vocabshift(spec: dict[str, Any]) -> dict[str, Any]:
    from vocabshift.corpus import corpus_from_paths
    from vocabshift.train.config import LoraSettings, TrainConfig
    from vocabshift.train.data import DataConfig
    from vocabshift.train.loop import train

    stamps: list[tuple[float, float, int]] = []

    def stamp(info: Any) -> None:
        stamps.append((time.perf_counter(), info.loss, info.tokens))

    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        config = TrainConfig(
            model=spec["model"], corpus=corpus_from_paths([spec["text"]]), out=str(Path(tmp) / "run"),
            data=DataConfig(seq_len=spec["seq_len"], eval_documents=0, num_workers=1),
            lora=LoraSettings(**LORA), max_steps=spec["steps"], batch_size=spec["batch_size"],
            embedding_lr=LR["embedding"], lora_lr=LR["lora"], device="cpu" if spec["device"] == "cpu" else "auto",
            compile=spec["compile"], save_every=10**9, log_every=1, progress=False, warmup_steps=0)
        train(config, callbacks=[stamp])
    return _summary(stamps, spec)


def _child_baseline(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    from vocabshift.corpus import corpus_from_paths
    from vocabshift.train.data import DataConfig, PackedStream
    from vocabshift.train.peft_setup import find_target_modules

    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32, attn_implementation="sdpa")
    leaves = sorted({p.rsplit(".", 1)[-1] for p in find_target_modules(model)[0]})
    modules_to_save = ["embed_tokens"] if spec["baseline_embeddings"] == "modules_to_save" else None
    model = get_peft_model(model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                             target_modules=leaves, modules_to_save=modules_to_save))
    if modules_to_save is None:
        model.get_input_embeddings().weight.requires_grad_(True)

    # The same packed sequences vocabshift trains on, in memory.
    stream = PackedStream(tokenizer, corpus_from_paths([spec["text"]]),
                          DataConfig(seq_len=spec["seq_len"], eval_documents=0, num_workers=0), "clm")
    rows = []
    for batch in stream.batches(spec["batch_size"]):
        rows += [{k: v[i] for k, v in batch.items()} for i in range(len(batch["input_ids"]))]
        if len(rows) >= spec["steps"] * spec["batch_size"]:
            break

    stamps: list[tuple[float, float, int]] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003
            stamps.append((time.perf_counter(), float("nan"), state.global_step * spec["batch_size"] * spec["seq_len"]))

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN003
            if logs and "loss" in logs and stamps:
                stamps[-1] = (stamps[-1][0], float(logs["loss"]), stamps[-1][2])

    groups = [{"params": [p for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n],
               "lr": LR["embedding"]},
              {"params": [p for n, p in model.named_parameters() if "lora_" in n and p.requires_grad],
               "lr": LR["lora"]}]
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=spec["batch_size"], max_steps=spec["steps"],
            learning_rate=LR["lora"], lr_scheduler_type="cosine", warmup_steps=0, max_grad_norm=1.0,
            logging_steps=1, save_strategy="no", report_to=[], bf16=spec["device"] == "cuda",
            use_cpu=spec["device"] == "cpu", dataloader_num_workers=0, remove_unused_columns=False,
            disable_tqdm=True, seed=0)
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
        optimizer = optimizer_cls(groups, **{k: v for k, v in optimizer_kwargs.items() if k != "lr"})
        trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[Stamp()],
                          optimizers=(optimizer, None))
        trainer.train()
    return _summary(stamps, spec)


def _summary(stamps: list[tuple[float, float, int]], spec: dict[str, Any]) -> dict[str, Any]:
    warm = spec["warmup"]
    if len(stamps) <= warm:
        raise RuntimeError(f"only {len(stamps)} steps recorded, need more than --warmup {warm}")
    t0, _, tok0 = stamps[warm - 1] if warm else (stamps[0][0], None, 0)
    t1, _, tok1 = stamps[-1]
    tokens = (len(stamps) - warm) * spec["batch_size"] * spec["seq_len"]
    return {"tokens_per_second": tokens / (t1 - t0), "measured_steps": len(stamps) - warm,
            "seconds_per_step": (t1 - t0) / (len(stamps) - warm), "peak_mib": _peak(spec["device"]),
            "first_loss": stamps[0][1], "last_loss": stamps[-1][1]}


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    if spec["device"] == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['impl']} run failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------
# Report


def machine(device: str) -> str:
    import peft
    import torch
    import transformers

    if device == "cuda":
        where = torch.cuda.get_device_name(0)
    else:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.processor())
        where = f"{cpu}, {os.cpu_count()} cores"
    return (f"{where}; Python {platform.python_version()}, torch {torch.__version__}, transformers "
            f"{transformers.__version__}, peft {peft.__version__}")


def render(args: argparse.Namespace, rows: list[dict[str, Any]], where: str) -> str:
    base = next(r for r in rows if r["impl"] == "baseline")
    best = max((r for r in rows if r["impl"] != "baseline"), key=lambda r: r["tokens_per_second"])
    ratio = best["tokens_per_second"] / base["tokens_per_second"]
    goal = "met" if ratio >= GOAL else "not met"
    model = "SmolLM2-135M" if args.model == "smollm2" else "a pico Llama (hidden 64, 2 layers, SmolLM2's 49,152-token vocabulary)"
    lines = [
        f"## Continued pretraining throughput: vocabshift train versus HF Trainer + PEFT ({args.device})", "",
        f"{model}, LoRA r {LORA['r']} on every projection + trainable (tied) embeddings, batch {args.batch_size} x "
        f"{args.seq_len} tokens, {args.steps} steps of which the first {args.warmup} "
        f"{'is' if args.warmup == 1 else 'are'} warm-up (not timed), "
        f"{'bf16 autocast' if args.device == 'cuda' else 'fp32'}. Goal on a GPU: at least {GOAL}x the baseline's "
        f"tokens/s; here {ratio:.2f}x ({best['impl']}): **{goal}**"
        + (" (a CPU run: the goal is judged on the GPU run)" if args.device == "cpu" else "") + ".",
        f"Measured on {datetime.date.today().isoformat()} on {where} with", "",
        f"    python benchmarks/cpt_throughput.py {' '.join(args.argv)}".rstrip(), "",
        "| implementation | tokens/s | s/step | vs baseline | peak memory (MiB) | loss first -> last step |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['impl']} | {r['tokens_per_second']:,.0f} | {r['seconds_per_step']:.3f} | "
                     f"{r['tokens_per_second'] / base['tokens_per_second']:.2f}x | {r['peak_mib']:,.0f} | "
                     f"{r['first_loss']:.3f} -> {r['last_loss']:.3f} |")
    lines += ["",
              f"- Peak memory is {'torch.cuda.max_memory_allocated' if args.device == 'cuda' else 'the child process peak RSS (VmHWM), model and libraries included'}.",
              f"- Baseline embeddings: `{args.baseline_embeddings}`"
              + (" (PEFT copies the embedding into a trainable module; on a tied model that unties the head)."
                 if args.baseline_embeddings == "modules_to_save" else
                 " (the same trainable parameters as vocabshift)."),
              "- Both sides see the same packed sequences; vocabshift tokenizes them while it trains (one worker "
              "process), the baseline gets them pre-packed in memory (and its Trainer shuffles them, so the "
              "first losses differ).",
              f"- Each row is the best (highest tokens/s) of {args.repeats} fresh subprocess run(s), the two "
              "implementations alternating; fastest / slowest run of one implementation: "
              + ", ".join(f"{r['impl']} {r['spread']:.2f}x" for r in rows)
              + f". The 1-minute load average before the runs was {args.load[0]:.1f} to {args.load[1]:.1f}"
              f" on {os.cpu_count()} cores" + (" (a shared machine: CPU figures are noisy)." if args.device == "cpu"
                                                else ".")]
    return "\n".join(lines) + "\n"


def write_doc(section: str) -> None:
    """Replace this script's section of the doc."""
    write_section(DOC, MARK_START, MARK_END, section)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", choices=["smollm2", "pico"], default="smollm2")
    parser.add_argument("--seq-len", type=int, default=None, help="default: 128 on CPU, 1024 on CUDA")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 4 on CPU, 16 on CUDA")
    parser.add_argument("--steps", type=int, default=None, help="default: 6 on CPU, 60 on CUDA")
    parser.add_argument("--warmup", type=int, default=None, help="default: 2 on CPU, 10 on CUDA")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="also run vocabshift with compile: true")
    parser.add_argument("--baseline-embeddings", choices=["requires_grad", "modules_to_save"], default="requires_grad")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/benchmarks.md alone")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows, the ratio and the table to "
                        "this JSON file (benchmarks/gpu_suite.sh reads it)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    args.seq_len = args.seq_len or (1024 if cuda else 128)
    args.batch_size = args.batch_size or (16 if cuda else 4)
    args.steps = args.steps or (60 if cuda else 6)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        result = _child_vocabshift(spec) if spec["impl"].startswith("vocabshift") else _child_baseline(spec)
        print(json.dumps(result))
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    base = {"model": str(model_dir(args.model)), "text": str(text_file()), "seq_len": args.seq_len,
            "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup, "device": args.device,
            "baseline_embeddings": args.baseline_embeddings, "compile": False}
    impls = [("baseline", {}), ("vocabshift", {})] + ([("vocabshift + compile", {"compile": True})]
                                                     if args.compile else [])
    runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl, _ in impls}
    loads = []
    for i in range(args.repeats):
        # Alternate the order, so that a change in the machine's load does not favour one side.
        for impl, extra in impls if i % 2 == 0 else impls[::-1]:
            log(f"{impl}: run {i + 1}/{args.repeats}")
            loads.append(os.getloadavg()[0])
            result = run_child({**base, **extra, "impl": impl})
            log(f"{impl}: {result['tokens_per_second']:,.0f} tokens/s, peak {result['peak_mib']:,.0f} MiB")
            runs[impl].append(result)
    rows = []
    for impl, results in runs.items():
        best = max(results, key=lambda r: r["tokens_per_second"])
        spread = best["tokens_per_second"] / min(r["tokens_per_second"] for r in results)
        rows.append({"impl": impl, **best, "spread": spread})
    args.load = (min(loads), max(loads))
    where = machine(args.device)
    section = render(args, rows, where)
    print(section)
    if args.json:
        base = next(r for r in rows if r["impl"] == "baseline")
        ratio = max(r["tokens_per_second"] for r in rows if r["impl"] != "baseline") / base["tokens_per_second"]
        settings = {k: getattr(args, k) for k in ("device", "model", "seq_len", "batch_size", "steps", "warmup",
                                                  "repeats", "compile", "baseline_embeddings")}
        args.json.write_text(json.dumps({"settings": settings, "machine": where, "goal": GOAL, "ratio": ratio,
                                         "rows": rows, "markdown": section}, indent=1) + "\n")
    if not args.no_write:
        write_doc(section)
        log(f"wrote {DOC}")


if __name__ == "__main__":
    main()
