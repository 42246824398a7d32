"""Fault injection: every subcommand against bad input, kills mid-write, concurrent runs, out = input.

Each case runs the real CLI in fresh processes on a pico Llama (built here from a config, with a
byte-level BPE trained on the shipped UDHR text) and checks a promise of docs/reliability.md: the
expected exit status and message, the inputs byte-for-byte unchanged, no partial output, no temporary
siblings or lock files left, and for kills that the re-run succeeds. It prints the table
case -> expected -> observed and rewrites its section of docs/reliability.md (``--no-write`` leaves
the doc alone). About 10 minutes on 2 cores:

    python benchmarks/faults.py                 # all cases
    python benchmarks/faults.py --only prune    # cases of commands whose name contains "prune"

A kill "mid-write" is made exact: a wrapper process holds the command just before it renames its
finished output into place (or a training checkpoint into ``checkpoints/``), the worst moment to die,
and the signal is sent there.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _docsection import write_section  # noqa: E402

DOC = REPO / "docs" / "reliability.md"
CACHE = REPO / "benchmarks" / ".cache" / "faults"
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false",
           OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))

# Runs the CLI, but stops just before a rename whose destination is named sys.argv[1], says so on
# stdout, and waits there to be killed.
PAUSE = textwrap.dedent("""
    import os, sys, time
    name, args = sys.argv[1], sys.argv[2:]
    def pausing(fn):
        def wrapped(src, dst, *a, **k):
            if os.path.basename(os.fspath(dst).rstrip("/")) == name:
                print("FAULTS-PAUSED", flush=True)
                time.sleep(600)
            return fn(src, dst, *a, **k)
        return wrapped
    os.rename, os.replace = pausing(os.rename), pausing(os.replace)
    from cli.main import main
    main(args)
""")

MARKER_CODE = textwrap.dedent("""
    import pathlib
    pathlib.Path(__file__).with_name("FOREIGN-CODE-RAN").write_text("ran")
""")


@dataclass
class Case:
    command: str
    kind: str
    what: str
    expected: str
    check: Callable[[Path], str]  # runs the case in a scratch directory; returns what was observed or raises


class Failed(Exception):
    """The observed behaviour broke the promise."""


def cli(*args: object, stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-m", "cli.main", *map(str, args)], cwd=REPO, env=ENV, text=True,
                              input=stdin, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise Failed(f"no answer within {timeout:.0f} s (hang)") from err


def last_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith(("/", " "))
             and "Warning" not in line]
    return lines[-1] if lines else ""


def snapshot(root: Path) -> dict[str, str]:
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and
                  (".tmp-" in p.name or ".old-" in p.name or p.name.endswith(".lock")))


def expect_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    line = last_line(proc)
    if proc.returncode != 1:
        raise Failed(f"exit {proc.returncode}: {line[:160]}")
    if "Traceback" in proc.stderr or "unexpected " in line:
        raise Failed(f"traceback or unexpected error: {line[:160]}")
    for needle in needles:
        if needle not in line:
            raise Failed(f"message lacks {needle!r}: {line[:160]}")
    return f"exit 1: {line.removeprefix('error: ')[:110]}"


def short(text: str, n: int = 110) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# -- the world the cases run on ----------------------------------------------------------------------


def build_world() -> dict[str, Path]:
    """Pico models, tokenizers, text, vectors and a training run, cached in benchmarks/.cache/faults."""
    world = CACHE / "world"
    names = {"model": "model", "text": "spa.txt", "eng": "eng.txt", "target": "target-tok", "run": "run",
             "vec_src": "eng.vec", "vec_tgt": "spa.vec", "exported": "exported", "recipe": "recipe.yaml"}
    paths = {k: world / v for k, v in names.items()}
    if (world / "done").is_file():
        return paths
    shutil.rmtree(world, ignore_errors=True)
    world.mkdir(parents=True)
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from vocabshift.data import sample_path

    def udhr(code: str) -> str:
        return sample_path(f"udhr.{code}.txt").read_text(encoding="utf-8")

    paths["eng"].write_text(udhr("eng") + udhr("fra") + udhr("deu"), encoding="utf-8")
    paths["text"].write_text(udhr("spa"), encoding="utf-8")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train([str(paths["eng"])], trainers.BpeTrainer(vocab_size=700, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                 pad_token="<pad>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(hf), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                         tie_word_embeddings=True, bos_token_id=0, eos_token_id=2, pad_token_id=1))
    model.save_pretrained(paths["model"])
    hf.save_pretrained(paths["model"])
    steps = [
        ("tokenizer", "train", "--source", paths["model"], "--corpus", paths["text"], "--vocab-size", 500,
         "--out", paths["target"], "--no-progress"),
        ("train", "--model", paths["model"], "--corpus", paths["text"], "--out", paths["run"], "--max-steps", 2,
         "--batch-size", 2, "--seq-len", 32, "--num-workers", 0, "--eval-documents", 2, "--save-every", 2),
        ("export", "--run", paths["run"], "--out", paths["exported"]),
    ]
    for args in steps:
        proc = cli(*args)
        if proc.returncode != 0:
            raise SystemExit(f"building the world failed: vocabshift {' '.join(map(str, args))}\n{proc.stderr}")
    for side, text in (("vec_src", "eng"), ("vec_tgt", "text")):
        words = sorted(set(paths[text].read_text(encoding="utf-8").lower().split()))[:300]
        import numpy as np

        rng = np.random.default_rng(len(side))
        rows = [f"{w} " + " ".join(f"{x:.4f}" for x in rng.standard_normal(8)) for w in words]
        paths[side].write_text(f"{len(rows)} 8\n" + "\n".join(rows) + "\n", encoding="utf-8")
    paths["recipe"].write_text(json.dumps({
        "name": "faults", "source": str(paths["model"]),
        "languages": [{"code": "spa", "corpus": [str(paths["text"])], "scripts": ["Latin"]}],
        "eval_documents": 8, "tokenizer": {"vocab_size": 400}, "vocabulary": {"mode": "replace"},
        "init": {"method": "mean"},
        "training": {"max_steps": 4, "batch_size": 2, "save_every": 2, "log_every": 1, "progress": False,
                     "data": {"seq_len": 32, "num_workers": 0}},
        "eval": {"max_sequences": 2, "batch_size": 2, "seq_len": 32, "speed_words": 20, "speed_repeats": 1,
                 "neighbours": 0},
    }, indent=1), encoding="utf-8")
    (world / "done").write_text("ok")
    return paths


# -- the cases -----------------------------------------------------------------------------------------


def writers(w: dict[str, Path]) -> dict[str, dict]:
    """For every command that writes: its arguments (``OUT`` marks the output), the input that out = input
    collides with, the file that proves a finished output, and the name of the rename to pause before."""
    return {
        "prune": {"args": ["prune", "--model", "MODEL", "--keep-scripts", "Latin", "--out", "OUT"],
                  "done": "id_map.json"},
        "extend": {"args": ["extend", "--model", "MODEL", "--tokenizer", w["target"], "--out", "OUT"],
                   "done": "id_map.json"},
        "tokenizer train": {"args": ["tokenizer", "train", "--source", "MODEL", "--corpus", w["text"],
                                     "--vocab-size", 400, "--out", "OUT", "--no-progress"], "done": "tokenizer.json"},
        "init": {"args": ["init", "--method", "mean", "--model", "MODEL", "--tokenizer", w["target"], "--out", "OUT"],
                 "done": "model.safetensors"},
        "train": {"args": ["train", "--model", "MODEL", "--corpus", w["text"], "--out", "OUT", "--max-steps", 2,
                           "--batch-size", 2, "--seq-len", 32, "--num-workers", 0, "--eval-documents", 2,
                           "--save-every", 2], "done": "checkpoints/step-000002", "pause": "step-000002",
                  "rerun": ["--resume"]},
        "export": {"args": ["export", "--run", "RUN", "--out", "OUT"], "done": "model.safetensors"},
        "eval": {"args": ["eval", "--model", w["exported"], "--baseline", "MODEL", "--corpus", w["text"],
                          "--max-sequences", 2, "--seq-len", 32, "--speed-words", 20, "--speed-repeats", 1,
                          "--out", "OUT"], "done": "eval.json"},
        "vectors train": {"args": ["vectors", "train", "--corpus", "TEXT", "--out", "OUT", "--dim", 8,
                                   "--epochs", 1, "--min-count", 1], "done": "", "file": True},
        "vectors align": {"args": ["vectors", "align", "--source", "VECSRC", "--target", w["vec_tgt"],
                                   "--out", "OUT"], "done": "W.npy"},
        "adapt": {"args": ["adapt", "RECIPE", "--out", "OUT"], "done": "model", "pause": "step-000002",
                  "rerun": ["--resume"]},
    }


def private_inputs(w: dict[str, Path], scratch: Path) -> dict[str, Path]:
    """Copies of the inputs a case may try to destroy (so a failure cannot spoil the other cases)."""
    model = Path(shutil.copytree(w["model"], scratch / "in" / "model"))
    run = scratch / "in" / "run"
    shutil.copytree(w["run"], run)
    record = json.loads((run / "run.json").read_text())
    record["model"]["path"] = str(model.resolve())
    (run / "run.json").write_text(json.dumps(record))
    text = scratch / "in" / "spa.txt"
    shutil.copy(w["text"], text)
    vec = scratch / "in" / "eng.vec"
    shutil.copy(w["vec_src"], vec)
    recipe = scratch / "in" / "recipe.yaml"
    data = json.loads(w["recipe"].read_text())
    data["source"] = str(model)
    recipe.write_text(json.dumps(data))
    return {"MODEL": model, "RUN": run, "TEXT": text, "VECSRC": vec, "RECIPE": recipe}


def fill(args: list, inputs: dict[str, Path], out: Path) -> list[str]:
    return [str(out) if a == "OUT" else str(inputs[a]) if isinstance(a, str) and a in inputs else str(a)
            for a in args]


def overlap_target(name: str, inputs: dict[str, Path]) -> Path:
    return {"export": inputs["RUN"], "vectors train": inputs["TEXT"], "vectors align": inputs["VECSRC"].parent,
            "adapt": inputs["MODEL"].parent}.get(name, inputs["MODEL"])


def case_out_is_input(w: dict[str, Path], name: str, spec: dict) -> Callable[[Path], str]:
    def run(scratch: Path) -> str:
        inputs = private_inputs(w, scratch)
        target = overlap_target(name, inputs)
        before = snapshot(inputs["MODEL"].parent)
        extra = [] if name == "adapt" else ["--force"]
        proc = cli(*fill(spec["args"], inputs, target), *extra)
        observed = expect_error(proc, "refusing to write there")
        if snapshot(inputs["MODEL"].parent) != before:
            raise Failed("an input changed")
        return observed + "; inputs unchanged"
    return run


def _paused(args: list[str], pause: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PAUSE, pause, *args], cwd=REPO, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_paused(proc: subprocess.Popen, timeout: float = 300) -> None:
    paused = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            if "FAULTS-PAUSED" in line:
                paused.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not paused.wait(0.05):
        if proc.poll() is not None:
            raise Failed(f"finished (exit {proc.returncode}) before the write: {proc.stderr.read()[-200:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise Failed("never reached the write")


def case_sigterm_training(w: dict[str, Path], name: str, spec: dict) -> Callable[[Path], str]:
    """SIGTERM while training steps run: a checkpoint of the last finished step, exit 143, nothing else."""
    def run(scratch: Path) -> str:
        inputs = private_inputs(w, scratch)
        out = scratch / "out"
        longer = ["--max-steps", 100000] if name == "train" else ["--set", "training.max_steps=100000"]
        args = [a for a in fill(spec["args"], inputs, out)]
        if name == "train":
            i = args.index("--max-steps")
            del args[i:i + 2]
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args, *map(str, longer)], cwd=REPO, env=ENV,
                                text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while not any(m.read_text().count("\n") >= 3 for m in out.rglob("metrics.jsonl")):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise Failed(f"training never started: {proc.stderr.read()[-200:]}")
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
        if code != 128 + signal.SIGTERM:
            raise Failed(f"exit {code}: {proc.stderr.read()[-200:]}")
        saved = sorted(p.name for p in out.rglob("step-*"))
        stray = [p.name for p in out.rglob(".tmp-*")] + leftovers(scratch)
        if not saved or stray:
            raise Failed(f"checkpoints {saved}, left behind {stray}")
        return f"exit {code}; checkpoint {saved[-1]} of the last finished step; nothing left behind"
    return run


def case_kill(w: dict[str, Path], name: str, spec: dict, sig: int) -> Callable[[Path], str]:
    def run(scratch: Path) -> str:
        inputs = private_inputs(w, scratch)
        out = scratch / ("out.bin" if spec.get("file") else "out")
        args = fill(spec["args"], inputs, out)
        proc = _paused(args, spec.get("pause", out.name))
        _wait_paused(proc)
        proc.send_signal(sig)
        code = proc.wait(timeout=120)
        expected = 128 + sig if sig == signal.SIGTERM else -sig
        if code != expected:
            raise Failed(f"exit {code}, expected {expected}: {proc.stderr.read()[-200:]}")
        final = out / spec["done"] if spec["done"] else out
        if final.exists() and "pause" not in spec:
            raise Failed("a final output exists after the kill")
        if sig == signal.SIGTERM:
            left = leftovers(scratch) + (leftovers(out) if out.is_dir() else [])
            if left:
                raise Failed(f"left behind: {left}")
            return f"exit {code}; no output, nothing left behind"
        rerun = cli(*args, *spec.get("rerun", []))
        if rerun.returncode != 0:
            raise Failed(f"re-run failed: {last_line(rerun)[:160]}")
        if not final.exists() or leftovers(scratch):
            raise Failed(f"re-run: output {final.exists()}, left behind {leftovers(scratch)}")
        return f"killed at the rename; re-run exit 0, {spec['done'] or out.name} complete, nothing left"
    return run


def case_concurrent(w: dict[str, Path], name: str, spec: dict) -> Callable[[Path], str]:
    def run(scratch: Path) -> str:
        inputs = private_inputs(w, scratch)
        out = scratch / ("out.bin" if spec.get("file") else "out")
        args = [sys.executable, "-m", "cli.main", *fill(spec["args"], inputs, out)]
        if name != "adapt":
            args.append("--force")
        procs = [subprocess.Popen(args, cwd=REPO, env=ENV, text=True, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE) for _ in range(2)]
        results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
        codes = sorted(c for c, _ in results)
        lines = [last_line(subprocess.CompletedProcess([], c, "", e)) for c, e in results]
        if codes != [0, 1]:
            raise Failed(f"exits {codes}: {[short(x, 80) for x in lines]}")
        loser = next(line for (c, _), line in zip(results, lines, strict=True) if c == 1)
        if "is writing this output" not in loser and "after this one started" not in loser:
            raise Failed(f"loser said: {loser[:160]}")
        final = out / spec["done"] if spec["done"] else out
        if not final.exists() or leftovers(scratch):
            raise Failed("no complete output, or leftovers")
        return "one exit 0; the other exit 1: " + short(loser.split(": ", 1)[-1].split(" — ")[0], 70)
    return run


def case_bad_input(make: Callable[[Path], list], *needles: str, stdin: str | None = None,
                   untouched: Callable[[Path], Path] | None = None) -> Callable[[Path], str]:
    def run(scratch: Path) -> str:
        args = make(scratch)  # (makes the files the case needs)
        before = snapshot(untouched(scratch)) if untouched else None
        t0 = time.monotonic()
        proc = cli(*args, stdin=stdin, timeout=120)
        observed = expect_error(proc, *needles)
        if untouched and snapshot(untouched(scratch)) != before:
            raise Failed("the input changed")
        if (scratch / "FOREIGN-CODE-RAN").exists() or any(scratch.rglob("FOREIGN-CODE-RAN")):
            raise Failed("the folder's code ran")
        return f"{observed} ({time.monotonic() - t0:.0f} s)"
    return run


def _cut(path: Path, n: int = 1) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:-n])
    return path


def bad_input_cases(w: dict[str, Path]) -> list[Case]:
    def model_copy(scratch: Path, name: str = "model") -> Path:
        return Path(shutil.copytree(w["model"], scratch / name))

    def truncated(scratch: Path) -> Path:
        m = model_copy(scratch)
        _cut(m / "model.safetensors")
        return m

    def random_weights(scratch: Path) -> Path:
        m = model_copy(scratch)
        (m / "model.safetensors").write_bytes(os.urandom(4096))
        return m

    def foreign(scratch: Path, where: str = "config.json") -> Path:
        m = model_copy(scratch, "foreign")
        (m / "custom_code.py").write_text(MARKER_CODE)
        data = json.loads((m / where).read_text())
        data["auto_map"] = {"AutoConfig": "custom_code.CustomConfig", "AutoModelForCausalLM": "custom_code.Custom",
                            "AutoTokenizer": ["custom_code.CustomTokenizer", None]}
        (m / where).write_text(json.dumps(data))
        return m

    def run_with_seq_len(scratch: Path) -> list:
        run = Path(shutil.copytree(w["run"], scratch / "run"))
        return ["train", "--model", w["model"], "--corpus", w["text"], "--out", run, "--resume", "--max-steps", 3,
                "--batch-size", 2, "--seq-len", 48, "--num-workers", 0, "--eval-documents", 2]

    def cut_checkpoint(scratch: Path) -> list:
        run = Path(shutil.copytree(w["run"], scratch / "run"))
        _cut(next((run / "checkpoints").iterdir()) / "trainable.safetensors", 7)
        return ["export", "--run", run, "--out", scratch / "out"]

    def latin1_corpus(scratch: Path) -> Path:
        path = scratch / "latin1.txt"
        path.write_bytes("Artículo 1. Todos los seres humanos nacen libres e iguales.\n".encode("latin-1") * 50)
        return path

    def typo_recipe(scratch: Path) -> Path:
        data = json.loads(w["recipe"].read_text())
        data["source_language"] = {"code": "eng", "corpuss": [str(w["eng"])]}
        path = scratch / "typo.yaml"
        path.write_text(json.dumps(data))
        return path

    def dotdot_manifest(scratch: Path) -> Path:
        d = scratch / "manifests"
        d.mkdir()
        (d / "evil.yaml").write_text(textwrap.dedent(f"""\
            - name: evil
              kind: corpus
              languages: [spa]
              scripts: [Latn]
              license: CC0-1.0
              source: made up
              path: {scratch}
              install: nothing
              files:
                - path: ../../../../etc/passwd
                  sha256: "{"0" * 64}"
                  size: 1
            """))
        return d

    one = "does not exist"
    m = w["model"]
    cases = [
        ("prune", "model.safetensors one byte short", "exit 1 naming the file, truncated; no hang",
         lambda s: ["prune", "--model", truncated(s), "--keep-scripts", "Latin", "--out", s / "out"], ("truncated",)),
        ("extend", "model.safetensors of random bytes", "exit 1 naming the file; no hang",
         lambda s: ["extend", "--model", random_weights(s), "--tokenizer", w["target"], "--out", s / "out"],
         ("model.safetensors",)),
        ("init", "model.safetensors one byte short", "exit 1: truncated",
         lambda s: ["init", "--method", "mean", "--model", truncated(s), "--tokenizer", w["target"], "--out",
                    s / "out"], ("truncated",)),
        ("train", "--resume with another --seq-len", "exit 1 naming both values; run.json untouched",
         run_with_seq_len, ("seq_len=32", "seq_len=48")),
        ("export", "checkpoint's trainable tensors cut short", "exit 1 naming the file",
         cut_checkpoint, ("trainable.safetensors",)),
        ("eval", "a corpus that is Latin-1, not UTF-8", "exit 1 naming the corpus",
         lambda s: ["eval", "--model", w["exported"], "--corpus", latin1_corpus(s), "--max-sequences", 2],
         ("latin1.txt",)),
        ("tokenizer train", "--vocab-size 99999999999", "exit 1: vocab_size named, no Rust abort",
         lambda s: ["tokenizer", "train", "--source", m, "--corpus", w["text"], "--vocab-size", 99999999999,
                    "--out", s / "out"], ("vocab_size",)),
        ("tokenizer stats", "a tokenizer folder that does not exist", "exit 1 naming it",
         lambda s: ["tokenizer", "stats", "--tokenizer", s / "nope", "--corpus", w["text"]], (one,)),
        ("vectors train", "an empty corpus", "exit 1 naming the corpus",
         lambda s: ["vectors", "train", "--corpus", (s / "empty.txt", (s / "empty.txt").write_text(""))[0],
                    "--out", s / "v.bin"], ("empty.txt",)),
        ("vectors align", "vectors of different dimensions", "exit 1: dimension mismatch",
         lambda s: ["vectors", "align", "--source", w["vec_src"], "--target",
                    (s / "d4.vec", (s / "d4.vec").write_text("1 4\nhola 1 2 3 4\n"))[0], "--out", s / "out"],
         ("dim",)),
        ("adapt", "a typo inside an optional section", "exit 1 naming source_language.corpuss",
         lambda s: ["adapt", typo_recipe(s), "--out", s / "run"], ("source_language.corpuss",)),
        ("data verify", "a manifest file path with '..'", "exit 1: refused, nothing outside hashed",
         lambda s: ["data", "verify", "--manifests", dotdot_manifest(s)], ("..",)),
    ]
    def alias_bomb(scratch: Path) -> Path:
        lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
        for i, name in enumerate("bcdefgh"):
            prev = "abcdefgh"[i]
            lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
        path = scratch / "bomb.yaml"
        path.write_text("\n".join(lines) + "\nsource: x\n")
        return path

    def big_steps(scratch: Path) -> Path:
        path = scratch / "train.yaml"
        path.write_text("max_steps: 1e30\n")
        return path

    def word_level(scratch: Path) -> Path:
        from tokenizers import Tokenizer, models, pre_tokenizers

        tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hola": 1, "mundo": 2}, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        d = scratch / "wordlevel"
        d.mkdir()
        tok.save(str(d / "tokenizer.json"))
        return d

    cases += [
        ("adapt", "a 400-byte recipe of nested YAML aliases (10^8 nodes)", "exit 1 at once, a short line",
         lambda s: ["adapt", alias_bomb(s), "--out", s / "run"], ("aliases",)),
        ("train", "max_steps: 1e30 in --config", "exit 1: a whole number is asked for",
         lambda s: ["train", "--config", big_steps(s), "--model", m, "--corpus", w["text"], "--out", s / "run"],
         ("max_steps",)),
        ("prune", "a WordLevel tokenizer", "exit 1: unsupported tokenizer type",
         lambda s: ["prune", "--model", word_level(s), "--keep-scripts", "Latin", "--out", s / "out"],
         ("unsupported tokenizer type",)),
        ("prune", "--keep-corpus /dev/zero (no --max-bytes)", "exit 1: a device may never end",
         lambda s: ["prune", "--model", m, "--keep-corpus", "/dev/zero", "--out", s / "out"], ("/dev/zero",)),
        ("tokenizer train", "--corpus /dev/zero --max-bytes 1000", "exit 1 within seconds, no MemoryError",
         lambda s: ["tokenizer", "train", "--source", m, "--corpus", "/dev/zero", "--max-bytes", 1000,
                    "--vocab-size", 400, "--out", s / "out"], ("max_bytes",)),
        ("export", "a run directory with no run.json", "exit 1: not a training run",
         lambda s: ["export", "--run", (s / "plain", (s / "plain").mkdir())[0], "--out", s / "out"],
         ("not a vocabshift training run",)),
    ]
    untouched = {"--resume with another --seq-len": lambda s: s / "run" / "run.json"}
    out = [Case(c, "bad input", what, exp, case_bad_input(make, *needles, untouched=untouched.get(what)))
           for c, what, exp, make, needles in cases]
    yes = "y\n" * 50
    remote = [
        ("prune", lambda s: ["prune", "--model", foreign(s), "--keep-scripts", "Latin", "--out", s / "out"]),
        ("extend", lambda s: ["extend", "--model", m, "--tokenizer", foreign(s, "tokenizer_config.json"),
                              "--out", s / "out"]),
        ("init", lambda s: ["init", "--method", "mean", "--model", foreign(s), "--tokenizer", w["target"],
                            "--out", s / "out"]),
        ("train", lambda s: ["train", "--model", foreign(s), "--corpus", w["text"], "--out", s / "run",
                             "--max-steps", 1]),
        ("eval", lambda s: ["eval", "--model", foreign(s), "--corpus", w["text"], "--max-sequences", 2]),
        ("tokenizer train", lambda s: ["tokenizer", "train", "--source", foreign(s, "tokenizer_config.json"),
                                       "--corpus", w["text"], "--vocab-size", 400, "--out", s / "out"]),
        ("tokenizer stats", lambda s: ["tokenizer", "stats", "--tokenizer", foreign(s, "tokenizer_config.json"),
                                       "--corpus", w["text"]]),
    ]
    out += [Case(c, "foreign code", "auto_map folder, stdin answers y", "exit 1: refused; its .py never runs",
                 case_bad_input(make, "code", stdin=yes)) for c, make in remote]
    return out


def all_cases(w: dict[str, Path]) -> list[Case]:
    cases = bad_input_cases(w)
    for name, spec in writers(w).items():
        flag = "" if name == "adapt" else " --force"
        cases.append(Case(name, "out = input", f"--out is/holds an input{flag}",
                          "exit 1, refused; inputs byte-identical", case_out_is_input(w, name, spec)))
        cases.append(Case(name, "kill mid-write, re-run", "SIGKILL at the final rename, then the same command",
                          "no partial output; re-run exit 0", case_kill(w, name, spec, signal.SIGKILL)))
        if name in ("train", "adapt"):
            cases.append(Case(name, "SIGTERM mid-run", "SIGTERM between training steps",
                              f"exit {128 + signal.SIGTERM}; a checkpoint; nothing half-written",
                              case_sigterm_training(w, name, spec)))
        else:
            cases.append(Case(name, "SIGTERM mid-write", "SIGTERM at the final rename",
                              f"exit {128 + signal.SIGTERM}; no output, no temporary or lock left",
                              case_kill(w, name, spec, signal.SIGTERM)))
        cases.append(Case(name, "concurrent run", f"two at once into one --out{flag}",
                          "one exit 0, the other exit 1 naming the holder's pid", case_concurrent(w, name, spec)))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=None, help="Only cases whose command contains this text.")
    parser.add_argument("--jobs", type=int, default=2, help="Cases run at once.")
    parser.add_argument("--no-write", action="store_true", help="Do not rewrite docs/reliability.md.")
    args = parser.parse_args()
    world = build_world()
    cases = [c for c in all_cases(world) if args.only is None or args.only in c.command]
    root = CACHE / "cases"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)

    def run(index_case: tuple[int, Case]) -> tuple[Case, bool, str, float]:
        index, case = index_case
        scratch = root / f"{index:03d}"
        scratch.mkdir()
        t0 = time.monotonic()
        def tidy(text: str) -> str:
            return text.replace(str(scratch), "CASE").replace(str(CACHE / "world"), "WORLD")

        try:
            return case, True, tidy(case.check(scratch)), time.monotonic() - t0
        except Failed as err:
            return case, False, tidy(str(err)), time.monotonic() - t0
        except Exception as err:  # the harness itself
            return case, False, f"harness: {type(err).__name__}: {err}", time.monotonic() - t0

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, enumerate(cases)))
    rows = ["| command | case | expected | observed | held |", "|---|---|---|---|---|"]
    for case, held, observed, seconds in results:
        rows.append(f"| `{case.command}` | {case.kind}: {case.what} | {case.expected} | "
                    f"{short(observed, 140).replace('|', '/')} | {'yes' if held else '**NO**'} |")
        print(f"{'ok ' if held else 'FAIL'} {case.command:16s} {case.kind:24s} {seconds:5.1f}s  {short(observed, 100)}")
    n_held = sum(held for _, held, _, _ in results)
    summary = f"{n_held} of {len(results)} cases held"
    print(summary)
    if not args.no_write and args.only is None:
        section = (f"Measured by `python benchmarks/faults.py` on {time.strftime('%Y-%m-%d')}: **{summary}**.\n\n"
                   + "\n".join(rows))
        write_section(DOC, "<!-- faults:start -->", "<!-- faults:end -->", section, header="# Reliability\n")
    sys.exit(0 if n_held == len(results) else 1)


if __name__ == "__main__":
    main()
