"""Outputs users can trust (issue 12): never over an input, one writer at a time, signals, a full disk.

Every command that writes is tried with ``--out`` equal to, inside, and holding one of its inputs (with
``--force``): each is refused with one line and the input is byte-for-byte what it was. Locks are held by
a second process; SIGTERM and SIGKILL are sent to real CLI processes; ENOSPC is simulated by making the
writer raise it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import udhr_lines
from tests.test_cli import run_cli
from tests.test_train import pico_model

REPO = Path(__file__).resolve().parent.parent


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (or ``root`` itself) -> sha256, to prove nothing was touched."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def leftovers(parent: Path) -> list[str]:
    """Temporary siblings and lock files that a finished or failed run must not leave behind."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and
                  (".tmp-" in p.name or ".old-" in p.name or p.name.endswith(".lock")))


@pytest.fixture(scope="module")
def world(tmp_path_factory, roberta_source) -> dict[str, Path]:
    """A pico Llama with a real byte-level BPE tokenizer, Spanish text, and a short training run of it."""
    root = tmp_path_factory.mktemp("world")
    model = pico_model("llama_tied", roberta_source, root / "model")
    text = root / "spa.txt"
    text.write_text("\n".join(udhr_lines("spa")) + "\n", encoding="utf-8")
    run = root / "run"
    code = subprocess.run([sys.executable, "-m", "cli.main", "train", "--model", model, "--corpus", text,
                           "--out", run, "--max-steps", "2", "--batch-size", "2", "--seq-len", "32",
                           "--num-workers", "0", "--eval-documents", "2", "--save-every", "2"],
                          cwd=REPO, capture_output=True, text=True)
    assert code.returncode == 0, code.stderr
    return {"root": root, "model": model, "text": text, "run": run}


def write_recipe(folder: Path, source: Path, text: Path) -> Path:
    """The smallest valid adapt recipe: ``source`` adapted to Spanish ``text``, mean init."""
    recipe = folder / "r.yaml"
    recipe.write_text(json.dumps({"name": "x", "source": str(source),
                                  "languages": [{"code": "spa", "corpus": [str(text)]}],
                                  "init": {"method": "mean"}}))
    return recipe


@pytest.fixture()
def victim(world, tmp_path) -> Path:
    """A private copy of the model: the input that must survive."""
    import shutil

    return Path(shutil.copytree(world["model"], tmp_path / "victim"))


# -- 1. an output that is, holds or lies inside an input -----------------------------------------------


def _commands(world: dict[str, Path], victim: Path) -> dict[str, tuple[list, Path]]:
    """command -> (arguments without --out, the input that --out will collide with)."""
    return {
        "prune": (["prune", "--model", victim, "--keep-scripts", "Latin"], victim),
        "extend": (["extend", "--model", world["model"], "--tokenizer", victim], victim),
        "tokenizer train": (["tokenizer", "train", "--source", victim, "--corpus", world["text"],
                             "--vocab-size", 400, "--no-progress"], victim),
        "init": (["init", "--method", "mean", "--model", victim, "--tokenizer", world["model"]], victim),
        "train": (["train", "--model", victim, "--corpus", world["text"], "--max-steps", 1, "--seq-len", 32,
                   "--num-workers", 0], victim),
        "eval": (["eval", "--model", victim, "--corpus", world["text"], "--max-sequences", 2, "--seq-len", 32,
                  "--speed-words", 10, "--speed-repeats", 1], victim),
    }


@pytest.mark.parametrize("command", ["prune", "extend", "tokenizer train", "init", "train", "eval"])
@pytest.mark.parametrize("where", ["same", "inside", "holding"])
def test_output_overlapping_an_input_is_refused_even_with_force(capsys, world, victim, command, where):
    args, target = _commands(world, victim)[command]
    out = {"same": target, "inside": target / "sub", "holding": target.parent}[where]
    before = snapshot(target)
    code, _, err = run_cli(capsys, *args, "--out", out, "--force")
    assert code == 1
    assert err.count("\n") == 1 and "refusing to write there, even with --force" in err, err
    assert {"same": "the output is the input", "inside": "the output lies inside the input",
            "holding": "the output contains the input"}[where] in err
    assert snapshot(target) == before
    assert not (target / "sub").exists()
    assert leftovers(target.parent) == []


def test_symlinked_output_to_the_input_is_refused(capsys, world, victim, tmp_path):
    alias = tmp_path / "alias"
    alias.symlink_to(victim)
    before = snapshot(victim)
    code, _, err = run_cli(capsys, "prune", "--model", victim, "--keep-scripts", "Latin", "--out", alias, "--force")
    assert code == 1 and "the output is the input given as --model" in err
    assert snapshot(victim) == before and alias.is_symlink()


def test_corpus_inside_the_output_is_refused(capsys, world, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    corpus = folder / "spa.txt"
    corpus.write_text(world["text"].read_text(encoding="utf-8"), encoding="utf-8")
    code, _, err = run_cli(capsys, "vectors", "train", "--corpus", corpus, "--out", folder, "--force")
    assert code == 1 and "the output contains the input given as --corpus" in err
    assert corpus.read_text(encoding="utf-8") == world["text"].read_text(encoding="utf-8")
    code, _, err = run_cli(capsys, "vectors", "train", "--corpus", corpus, "--out", corpus, "--force")
    assert code == 1 and "the output is the input given as --corpus" in err


def test_eval_report_into_the_folder_of_a_named_corpus_is_refused(capsys, world, tmp_path):
    folder = tmp_path / "udhr"
    folder.mkdir()
    corpus = folder / "udhr.txt"
    corpus.write_text(world["text"].read_text(encoding="utf-8"), encoding="utf-8")
    before = snapshot(folder)
    code, _, err = run_cli(capsys, "eval", "--model", world["model"], "--corpus", world["text"], "--corpus",
                           f"udhr={corpus}", "--out", folder, "--force")
    assert code == 1 and "the output contains the input given as --extra-corpora" in err, err
    assert snapshot(folder) == before


def test_vectors_align_into_the_folder_of_its_vectors_is_refused(capsys, tmp_path):
    folder = tmp_path / "vecs"
    folder.mkdir()
    for name in ("en.vec", "es.vec"):
        (folder / name).write_text("2 3\nhola 0.1 0.2 0.3\nmundo 0.3 0.2 0.1\n", encoding="utf-8")
    before = snapshot(folder)
    code, _, err = run_cli(capsys, "vectors", "align", "--source", folder / "en.vec", "--target", folder / "es.vec",
                           "--out", folder, "--force")
    assert code == 1 and "the output contains the input given as --source" in err
    assert snapshot(folder) == before


def test_export_over_the_run_or_its_model_is_refused(capsys, world, tmp_path):
    for out in (world["run"], world["model"], world["run"] / "model"):
        before = snapshot(world["model"]), snapshot(world["run"])
        code, _, err = run_cli(capsys, "export", "--run", world["run"], "--out", out, "--force")
        assert code == 1 and "refusing to write there, even with --force" in err, err
        assert (snapshot(world["model"]), snapshot(world["run"])) == before


def test_adapt_into_a_folder_holding_its_source_model_is_refused(capsys, world, victim, tmp_path):
    recipe = write_recipe(tmp_path, victim, world["text"])
    before = snapshot(victim)
    for out in (victim.parent, victim):
        code, _, err = run_cli(capsys, "adapt", recipe, "--out", out)
        assert code == 1 and "refusing to write there" in err and "--source" in err, err
    assert snapshot(victim) == before


# -- 4. one writer per output; adapt over a foreign folder -------------------------------------------


HOLD = textwrap.dedent("""
    import sys, time
    from vocabshift.outputs import output_lock
    with output_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
""")


@pytest.fixture()
def holder():
    """Start a process that holds the lock of a path; yields a function taking the path, returning the pid."""
    procs: list[subprocess.Popen] = []

    def hold(path: Path) -> int:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc.pid

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


def test_second_writer_of_an_output_is_refused_naming_the_holder(capsys, world, tmp_path, holder):
    out = tmp_path / "pruned"
    pid = holder(out)
    code, _, err = run_cli(capsys, "prune", "--model", world["model"], "--keep-scripts", "Latin", "--out", out,
                           "--force")
    assert code == 1 and f"another vocabshift process (pid {pid}) is writing this output" in err
    assert not out.exists()


def test_second_run_into_a_training_run_directory_is_refused(capsys, world, tmp_path, holder):
    pid = holder(world["run"])
    before = snapshot(world["run"])
    code, _, err = run_cli(capsys, "train", "--model", world["model"], "--corpus", world["text"], "--out",
                           world["run"], "--resume", "--max-steps", 3, "--seq-len", 32, "--num-workers", 0)
    assert code == 1 and f"(pid {pid})" in err
    assert snapshot(world["run"]) == before


def test_adapt_run_directory_is_locked_and_a_foreign_folder_refused(capsys, world, tmp_path, holder):
    recipe = write_recipe(tmp_path, world["model"], world["text"])
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "run.json").write_text('{"my": "notes"}')
    (foreign / "model").write_text("precious")
    before = snapshot(foreign)
    code, _, err = run_cli(capsys, "adapt", recipe, "--out", foreign)
    assert code == 1 and "is not a vocabshift run" in err and "--force" in err
    assert snapshot(foreign) == before

    run_dir = tmp_path / "run"
    pid = holder(run_dir)
    code, _, err = run_cli(capsys, "adapt", recipe, "--out", run_dir)
    assert code == 1 and f"(pid {pid})" in err


def test_two_concurrent_prunes_one_wins_and_the_other_names_it(world, tmp_path):
    """Real races: the second prune into one --out either finds the lock or finds the finished output."""
    out = tmp_path / "pruned"
    cmd = [sys.executable, "-m", "cli.main", "prune", "--model", str(world["model"]), "--keep-scripts", "Latin",
           "--out", str(out)]
    procs = [subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, err in results if code == 1)
    assert "is writing this output" in loser or "output already exists" in loser
    assert (out / "id_map.json").is_file() and leftovers(tmp_path) == []


def test_lock_recovers_what_a_killed_swap_left(tmp_path):
    from vocabshift.outputs import output_lock

    out = tmp_path / "model"
    aside = tmp_path / ".model.old-abcd1234"
    (aside / "old").mkdir(parents=True)
    (aside / "old" / "weights").write_text("the only copy")
    (tmp_path / ".model.tmp-zyxw9876").mkdir()
    (tmp_path / ".model.tmp-zyxw9876" / "half").write_text("partial")
    (tmp_path / ".other.tmp-abcd1234").mkdir()  # another output's: not ours to touch
    with output_lock(out):
        assert (out / "weights").read_text() == "the only copy"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-abcd1234", "model"]


# -- 6. signals --------------------------------------------------------------------------------------


def _wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _train_cmd(world, out: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "cli.main", "train", "--model", str(world["model"]), "--corpus",
            str(world["text"]), "--out", str(out), "--batch-size", "2", "--seq-len", "32", "--num-workers", "0",
            "--eval-documents", "2", "--save-every", "1000", "--log-every", "1", *map(str, extra)]


def test_sigterm_during_train_saves_a_checkpoint_and_resume_finishes(world, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(world, out, "--max-steps", 100000), cwd=REPO, stderr=subprocess.PIPE,
                            text=True)
    metrics = out / "metrics.jsonl"
    _wait_for(lambda: metrics.is_file() and metrics.read_text().count("\n") >= 2 or proc.poll() is not None)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    err = proc.stderr.read()
    assert code == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err
    checkpoints = sorted((out / "checkpoints").iterdir())
    assert len(checkpoints) == 1 and checkpoints[0].name.startswith("step-")
    step = int(checkpoints[0].name.split("-")[1])
    assert step >= 2
    done = subprocess.run(_train_cmd(world, out, "--max-steps", step + 1, "--resume"), cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "checkpoints" / f"step-{step + 1:06d}").is_dir()
    assert leftovers(tmp_path) == []


SLOW_PRUNE = textwrap.dedent("""
    import sys, time
    import vocabshift.vocabulary as v
    real = v._write_id_map
    def slow(*args, **kwargs):
        real(*args, **kwargs)
        print("writing", flush=True)
        time.sleep(120)
    v._write_id_map = slow
    from cli.main import main
    main(sys.argv[1:])
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_signal_mid_write_leaves_no_output_and_the_rerun_succeeds(capsys, world, tmp_path, sig):
    out = tmp_path / "pruned"
    args = ["prune", "--model", str(world["model"]), "--keep-scripts", "Latin", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_PRUNE, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # (log lines come first)
        if line.strip() == "writing":
            break
    assert any(".pruned.tmp-" in p.name for p in tmp_path.iterdir())  # caught mid-write
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    assert code == (128 + sig if sig == signal.SIGTERM else -sig)
    assert not out.exists()
    if sig == signal.SIGTERM:  # unwound: the temporary directory and the lock are gone
        assert leftovers(tmp_path) == []
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    assert (out / "id_map.json").is_file() and leftovers(tmp_path) == []


def test_refused_resume_leaves_run_json_untouched(capsys, world, tmp_path):
    import shutil

    run = Path(shutil.copytree(world["run"], tmp_path / "run"))
    before = (run / "run.json").read_bytes()
    code, _, err = run_cli(capsys, "train", "--model", world["model"], "--corpus", world["text"], "--out", run,
                           "--resume", "--max-steps", 3, "--batch-size", 2, "--seq-len", 48, "--num-workers", 0,
                           "--eval-documents", 2)
    assert code == 1 and "seq_len=32" in err and "seq_len=48" in err, err
    assert (run / "run.json").read_bytes() == before


# -- 8. a full disk ----------------------------------------------------------------------------------


def _enospc(path: str):
    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    return fail


def test_disk_full_while_writing_is_one_line_and_nothing_is_left(capsys, world, tmp_path, monkeypatch):
    import vocabshift.vocabulary as vocabulary

    out = tmp_path / "pruned"
    monkeypatch.setattr(vocabulary, "_write_id_map", _enospc(str(out / "id_map.json")))
    code, _, err = run_cli(capsys, "prune", "--model", world["model"], "--keep-scripts", "Latin", "--out", out)
    assert code == 1
    assert err.startswith("error: no space left on device while writing") and "id_map.json" in err
    assert err.count("\n") == 1 and not out.exists() and leftovers(tmp_path) == []


def test_disk_full_in_the_fasttext_child_is_one_line(capsys, world, tmp_path, monkeypatch):
    import vocabshift.vectors.train as vtrain

    # The child fails to write its result as a full disk makes it fail (exit status 100 + ENOSPC).
    monkeypatch.setattr(vtrain, "_CHILD", f"import sys; sys.exit({100 + errno.ENOSPC})")
    out = tmp_path / "vec.bin"
    code, stdout, err = run_cli(capsys, "vectors", "train", "--corpus", world["text"], "--out", out)
    assert code == 1 and err.startswith("error: no space left on device while writing"), err
    assert "Traceback" not in err + stdout and "JSONDecodeError" not in err
    assert not out.exists() and leftovers(tmp_path) == []
    # a child that died without a result (and no full disk) is named as such, not as a JSON error
    monkeypatch.setattr(vtrain, "_CHILD", "import sys; open(sys.argv[1].split('\"result\": \"')[1].split('\"')[0],"
                                          " 'w').write('{\"wor'); sys.exit(1)")
    code, _, err = run_cli(capsys, "vectors", "train", "--corpus", world["text"], "--out", out)
    assert code == 1 and "the fastText training process died" in err and "JSONDecodeError" not in err


def test_disk_full_in_adapt_is_one_line(capsys, world, tmp_path, monkeypatch):
    import vocabshift.pipeline as pipeline

    recipe = write_recipe(tmp_path, world["model"], world["text"])
    run_dir = tmp_path / "run"
    monkeypatch.setattr(pipeline, "write_text_atomic", _enospc(str(run_dir / "run.json")))
    code, _, err = run_cli(capsys, "adapt", recipe, "--out", run_dir)
    assert code == 1 and err == f"error: no space left on device while writing {run_dir / 'run.json'} — free " \
                                "some space and run again; nothing was replaced\n"


def test_output_written_by_another_run_after_this_one_started_is_not_replaced(world, tmp_path, monkeypatch):
    """Two runs started together where the first finishes before the second takes the lock: the second
    must not silently replace the first's fresh output, --force or not (the CLI records its start)."""
    import time as _time

    import vocabshift.outputs as outputs
    from vocabshift.errors import OutputLockedError
    from vocabshift.vocabulary import PruneConfig, prune

    out = tmp_path / "pruned"
    config = PruneConfig(model=str(world["model"]), out=str(out), keep_scripts=["Latin"], force=True)
    monkeypatch.setattr(outputs, "COMMAND_STARTED", _time.time() - 2)  # this command started 2 s ago
    prune(config)  # "the other run", finishing after this command started
    with pytest.raises(OutputLockedError, match="after this one started: not replacing it"):
        prune(config)
    monkeypatch.setattr(outputs, "COMMAND_STARTED", _time.time())  # a later command replaces it
    prune(config)
    assert (out / "id_map.json").is_file() and leftovers(tmp_path) == []


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_get_the_permissions_mkdir_would_give(tmp_path, umask):
    """An output directory is created private by mkdtemp, then renamed into place: it must end with the
    permissions of the user's umask (group-readable on a shared cluster), as a plain mkdir would."""
    import os
    import stat

    from vocabshift.outputs import atomic_output_dir, atomic_output_file

    old = os.umask(umask)
    try:
        with atomic_output_dir(tmp_path / "out") as tmp:
            (tmp / "a.txt").write_text("x")
        with atomic_output_file(tmp_path / "file.gguf") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((tmp_path / "file.gguf").stat().st_mode) == 0o666 & ~umask
