"""The command line: subcommands, one-line errors with exit code 1, nothing left behind on failure."""

from __future__ import annotations

import bz2
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import main
from tests.conftest import udhr_lines


def _console_script() -> str:
    """The ``vocabshift`` script of this interpreter's environment (another one may come first on PATH)."""
    beside = Path(sys.executable).parent / "vocabshift"
    return str(beside) if beside.exists() else (shutil.which("vocabshift") or str(beside))


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_console_script_version_and_help():
    exe = _console_script()
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("vocabshift ")
    helptext = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for sub in ("tokenizer", "prune", "extend", "vectors", "init", "train", "export", "eval", "adapt"):
        assert sub in helptext
    tok_help = subprocess.run([exe, "tokenizer", "--help"], capture_output=True, text=True, check=True).stdout
    assert "train" in tok_help and "stats" in tok_help


@pytest.fixture()
def spanish(tmp_path) -> Path:
    path = tmp_path / "es.txt"
    path.write_text("\n".join(udhr_lines("spa")) + "\n", encoding="utf-8")
    return path


def test_train_then_stats_json(capsys, tmp_path, spanish, roberta_source):
    extra = tmp_path / "more.txt"
    extra.write_text("\n".join(udhr_lines("vie")) + "\n", encoding="utf-8")
    out = tmp_path / "tok"
    # several paths after one --corpus, as the CLI contract says
    code, stdout, stderr = run_cli(capsys, "tokenizer", "train", "--source", roberta_source, "--corpus", spanish,
                                   extra, "--vocab-size", 800, "--out", out, "--no-progress")
    assert code == 0, stderr
    assert "800 tokens" in stdout
    info = json.loads((out / "vocabshift_tokenizer.json").read_text())
    assert info["documents"] == len(udhr_lines("spa")) + len(udhr_lines("vie"))

    code, stdout, stderr = run_cli(capsys, "tokenizer", "stats", "--tokenizer", roberta_source, "--tokenizer", out,
                                   "--corpus", spanish, "--json")
    assert code == 0, stderr
    stats = json.loads(stdout)
    assert [s["vocab_size"] for s in stats] == [len(json.loads((roberta_source / "tokenizer.json").read_text())
                                                     ["model"]["vocab"]), 800]
    src, tgt = (s["scripts"]["Latn"] for s in stats)
    assert src["words"] == tgt["words"] == sum(len(line.split()) for line in udhr_lines("spa"))
    assert tgt["fertility"] < src["fertility"]  # trained on Spanish, the source on English/French/German

    code, stdout, _ = run_cli(capsys, "tokenizer", "stats", "--tokenizer", out, "--corpus", spanish)
    assert code == 0 and "fertility" in stdout and "Latin (Latn)" in stdout


def test_existing_output_refused_without_force(capsys, tmp_path, spanish, roberta_source):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    args = ["tokenizer", "train", "--source", roberta_source, "--corpus", spanish, "--vocab-size", 600,
            "--out", out, "--no-progress"]
    code, _, err = run_cli(capsys, *args)
    assert code == 1
    assert err.strip().splitlines() == [f"error: {out}: output already exists — pass --force to replace it"]
    assert (out / "keep.txt").read_text() == "user data"
    code, _, err = run_cli(capsys, *args, "--force")
    assert code == 0, err
    assert not (out / "keep.txt").exists() and (out / "tokenizer.json").exists()


def _bad_corpora(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (extra CLI args, expected fragment of the one-line error)."""
    missing = tmp / "missing.txt"
    empty = tmp / "empty.txt"
    empty.write_text("\n\n  \n")
    undecodable = tmp / "latin1.txt"
    undecodable.write_bytes(b"hola\n" + "señor\n".encode("latin-1"))
    jsonl = tmp / "docs.jsonl"
    jsonl.write_text(json.dumps({"content": "hola"}) + "\n")
    fake_gz = tmp / "notgzip.txt.gz"
    fake_gz.write_bytes(b"this is plain text, not gzip\n")
    return {
        "missing": (["--corpus", str(missing)], f"{missing}"),
        "empty": (["--corpus", str(empty)], "empty"),
        "undecodable": (["--corpus", str(undecodable)], "byte offset 7"),
        "jsonl_field": (["--corpus", str(jsonl)], "'text'"),
        "compression": (["--corpus", str(fake_gz)], str(fake_gz)),
    }


@pytest.mark.parametrize("case", ["missing", "empty", "undecodable", "jsonl_field", "compression"])
def test_bad_corpus_one_line_error_and_nothing_written(capsys, tmp_path, roberta_source, case):
    args, fragment = _bad_corpora(tmp_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "tok"
    code, _, err = run_cli(capsys, "tokenizer", "train", "--source", roberta_source, *args, "--vocab-size", 600,
                           "--out", out, "--no-progress")
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0]
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temporary sibling


def test_undecodable_error_names_file_and_offset_and_replace_option_works(capsys, tmp_path, roberta_source):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(("hola mundo\n" * 50).encode() + "señor\n".encode("latin-1"))
    code, _, err = run_cli(capsys, "tokenizer", "train", "--source", roberta_source, "--corpus", bad,
                           "--vocab-size", 300, "--out", tmp_path / "o", "--no-progress")
    assert code == 1 and str(bad) in err and f"byte offset {11 * 50 + 2}" in err and "--encoding-errors replace" in err
    code, _, err = run_cli(capsys, "tokenizer", "train", "--source", roberta_source, "--corpus", bad,
                           "--vocab-size", 262, "--out", tmp_path / "o", "--no-progress", "--encoding-errors", "replace",
                           "--min-frequency", 1)
    assert code == 0, err


def test_unsupported_tokenizer_cli(capsys, tmp_path, spanish):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")),
                            unk_token="[UNK]").save_pretrained(tmp_path / "wordlevel")
    code, _, err = run_cli(capsys, "tokenizer", "train", "--source", tmp_path / "wordlevel", "--corpus", spanish,
                           "--vocab-size", 600, "--out", tmp_path / "o")
    assert code == 1 and "unsupported tokenizer type: WordLevel" in err and str(tmp_path / "wordlevel") in err
    assert not (tmp_path / "o").exists()


def test_debug_shows_traceback(tmp_path, spanish):
    exe = _console_script()
    proc = subprocess.run([exe, "--debug", "tokenizer", "train", "--source", str(tmp_path / "nope"), "--corpus",
                           str(spanish), "--vocab-size", "600", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "TokenizerError" in proc.stderr


def test_compressed_and_jsonl_corpora_train(capsys, tmp_path, roberta_source):
    lines = udhr_lines("spa")
    gz = tmp_path / "a.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        for line in lines[:30]:
            f.write(json.dumps({"content": line}) + "\n")
    bz = tmp_path / "b.jsonl.bz2"
    bz.write_bytes(bz2.compress("".join(json.dumps({"content": x}) + "\n" for x in lines[30:]).encode()))
    code, _, err = run_cli(capsys, "tokenizer", "train", "--source", roberta_source, "--corpus", gz, bz,
                           "--text-field", "content", "--vocab-size", 700, "--out", tmp_path / "o", "--no-progress")
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "vocabshift_tokenizer.json").read_text())["documents"] == len(lines)


def test_usage_error_exits_2_with_clicks_message(capsys, spanish):
    code, _, err = run_cli(capsys, "tokenizer", "train", "--corpus", spanish, "--vocab-size", 600)
    assert code == 2 and "Missing option '--source'" in err
