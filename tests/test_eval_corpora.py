"""Named corpora in ``vocabshift eval`` (in and out of domain), the source-language forgetting row, bad input,
and the lm-evaluation-harness task that ``--lm-eval-task`` writes (and lm-eval itself running it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import udhr_lines
from tests.test_cli import run_cli
from vocabshift.corpus import corpus_from_paths
from vocabshift.errors import ConfigError, CorpusError, OutputExistsError, UnsafeOutputError
from vocabshift.eval import EvalConfig, evaluate_model
from vocabshift.eval.corpora import FORGETTING_NAME, default_corpus_name, parse_corpus_specs
from vocabshift.eval.lm_eval_task import task_names, write_lm_eval_task

FAST = {"speed_words": 30, "speed_repeats": 1, "neighbours": 0, "device": "cpu", "bootstrap": 200}


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("texts")
    out = {}
    for name, lines in (("bible", udhr_lines("spa")[:12]), ("udhr", udhr_lines("spa")[12:21]),
                        ("eng", udhr_lines("eng")[:7])):
        out[name] = root / f"{name}.spa.txt"
        out[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


# -- names ---------------------------------------------------------------------------------------------------


def test_corpus_specs_and_default_names(tmp_path):
    assert default_corpus_name(["data/bible.spa.txt.gz"]) == "bible.spa"
    assert default_corpus_name(["a.txt", "b.txt"]) == default_corpus_name(["data/*.txt"]) == "heldout"
    assert default_corpus_name([str(tmp_path)]) == "heldout"
    bare = parse_corpus_specs(["held.txt"])
    assert (bare.name, bare.paths, bare.extra) == ("held", ["held.txt"], {})
    specs = parse_corpus_specs(["bible=b.txt", "udhr=u.txt", "more.txt"])
    assert specs.name == "bible" and specs.paths == ["b.txt"] and specs.extra == {"udhr": ["u.txt"],
                                                                                  "more": ["more.txt"]}
    assert parse_corpus_specs(["x.txt", "y.txt", "udhr=u.txt"]).paths == ["x.txt", "y.txt"]
    odd = tmp_path / "a=b.txt"  # an existing path with '=' in its name is a path
    odd.write_text("x\n")
    assert parse_corpus_specs([str(odd)]).paths == [str(odd)]
    with pytest.raises(ConfigError, match="'udhr' is given twice"):
        parse_corpus_specs(["udhr=a.txt", "udhr=b.txt"])
    with pytest.raises(ConfigError, match="'udhr' is given twice"):
        parse_corpus_specs(["data/udhr.txt", "udhr=b.txt"])


def test_config_refuses_duplicate_and_bad_names(texts):
    corpus = corpus_from_paths(texts["bible"])
    with pytest.raises(ConfigError, match="given twice"):
        EvalConfig(model="m", corpus=corpus, extra_corpora={"bible.spa": [str(texts["udhr"])]})
    with pytest.raises(ConfigError, match="not a valid corpus name"):
        EvalConfig(model="m", corpus=corpus, extra_corpora={"my corpus": [str(texts["udhr"])]})
    with pytest.raises(ConfigError, match="list of paths"):
        EvalConfig(model="m", corpus=corpus, extra_corpora={"udhr": []})
    cfg = EvalConfig(model="m", corpus=corpus, corpus_name="bible", extra_corpora={"udhr": str(texts["udhr"])},
                     source_corpus=[str(texts["eng"])])
    assert [(n, f) for n, _, f in cfg.named_corpora()] == [("bible", False), ("udhr", False), (FORGETTING_NAME, True)]


# -- several corpora and forgetting ------------------------------------------------------------------------------


def test_each_corpus_scored_on_the_same_bytes_with_its_verdict(tmp_path, llama, llama_other, texts):
    out = tmp_path / "report"
    result = evaluate_model(EvalConfig(
        model=str(llama_other), baseline=str(llama), corpus=corpus_from_paths(texts["bible"]), corpus_name="bible",
        extra_corpora={"udhr": [str(texts["udhr"])]}, source_corpus=[str(texts["eng"])], out=str(out), **FAST))
    assert [c.name for c in result.corpora] == ["bible", "udhr", FORGETTING_NAME]
    assert [c.forgetting for c in result.corpora] == [False, False, True]
    assert [c.documents for c in result.corpora] == [12, 9, 7]
    assert result.corpora[0].lm is result.lm and result.corpora[0].comparison is result.comparison
    for c, name in zip(result.corpora, ("bible", "udhr", "eng"), strict=True):
        docs = texts[name].read_text(encoding="utf-8").splitlines()
        n_bytes = sum(len(d.encode("utf-8")) for d in docs)
        old, new = c.lm["old"], c.lm["new"]
        assert old.per_document.bytes == new.per_document.bytes and old.bytes == new.bytes == n_bytes
        assert old.predicted_tokens != new.predicted_tokens  # different tokenizers, same text
        assert c.comparison is not None and c.comparison.bytes == n_bytes
        assert c.comparison.verdict in ("better", "worse", "within noise")
    data = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in data["corpora"]] == ["bible", "udhr", FORGETTING_NAME]
    assert data["corpora"][1]["lm"]["new"]["bits_per_byte"] == pytest.approx(result.corpora[1].lm["new"].bits_per_byte)
    assert data["corpora"][2]["comparison"]["verdict"] == result.corpora[2].comparison.verdict
    report = (out / "report.md").read_text(encoding="utf-8")
    table = [line for line in report.splitlines() if line.startswith("| ")]
    for name in ("bible", "udhr", FORGETTING_NAME):
        rows = [line for line in table if line.startswith(f"| {name} |")]
        assert len(rows) == 3, name  # old, new, paired
        assert "old (baseline)" in rows[0] and "new (model)" in rows[1] and "new − old (paired)" in rows[2]
    assert f"Bits per byte on {FORGETTING_NAME}" in report and "Bits per byte on udhr" in report
    assert "what the adaptation cost in the source language" in report


def test_cli_named_corpora_and_source_corpus(capsys, tmp_path, llama, texts):
    code, stdout, err = run_cli(capsys, "eval", "--model", llama, "--baseline", llama, "--json",
                                "--corpus", f"bible={texts['bible']}", "--corpus", f"udhr={texts['udhr']}",
                                "--source-corpus", texts["eng"], "--max-documents", 5, "--bootstrap", 50,
                                "--speed-words", 30, "--speed-repeats", 1, "--neighbours", 0, "--device", "cpu")
    assert code == 0, err
    data = json.loads(stdout)
    assert [c["name"] for c in data["corpora"]] == ["bible", "udhr", FORGETTING_NAME]
    assert all(c["documents"] == 5 for c in data["corpora"])  # --max-documents caps every corpus
    # The same model as its own baseline: exactly no change on every corpus.
    assert all(c["comparison"]["difference"]["estimate"] == 0 for c in data["corpora"])
    assert data["config"]["extra_corpora"] == {"udhr": [str(texts["udhr"])]}
    # A bare path keeps working, named after its file.
    code, stdout, err = run_cli(capsys, "eval", "--model", llama, "--corpus", texts["bible"], "--json",
                                "--max-documents", 3, "--speed-words", 30, "--speed-repeats", 1, "--device", "cpu")
    assert code == 0, err
    assert [c["name"] for c in json.loads(stdout)["corpora"]] == ["bible.spa"]


def test_bad_corpora_fail_in_one_line_and_write_nothing(capsys, tmp_path, llama, texts):
    out = tmp_path / "out"
    common = ["--model", llama, "--out", out, "--speed-words", 30, "--speed-repeats", 1, "--device", "cpu"]
    code, _, err = run_cli(capsys, "eval", *common, "--corpus", f"a={texts['bible']}", "--corpus",
                           f"a={texts['udhr']}")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "'a' is given twice" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    code, _, err = run_cli(capsys, "eval", *common, "--corpus", texts["bible"], "--corpus", f"empty={empty}")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "corpus 'empty': the corpus is empty" in err
    assert not out.exists()
    with pytest.raises(CorpusError, match="corpus 'udhr'.*no document"):  # nothing left after the caps
        evaluate_model(EvalConfig(model=str(llama), corpus=corpus_from_paths(texts["bible"], max_bytes=250),
                                  extra_corpora={"udhr": [str(texts["udhr"])]}, **FAST))
    capsys.readouterr()


# -- the lm-evaluation-harness task -------------------------------------------------------------------------------


def test_lm_eval_task_files(tmp_path):
    docs = {"bible": ["En el principio", "creó Dios «los cielos»\tla tierra"], FORGETTING_NAME: ["In the beginning"]}
    out = write_lm_eval_task(tmp_path / "task", docs)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "bible.jsonl", "source_language_forgetting.jsonl",
                                                    "vocabshift_bible.yaml", "vocabshift_source_language_forgetting.yaml"]
    rows = [json.loads(line) for line in (out / "bible.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows == [{"text": d} for d in docs["bible"]]
    task = yaml.safe_load((out / "vocabshift_bible.yaml").read_text(encoding="utf-8"))
    assert task == {"task": "vocabshift_bible", "dataset_path": "json",
                    "dataset_kwargs": {"data_files": {"test": str(out / "bible.jsonl")}},
                    "output_type": "loglikelihood_rolling", "test_split": "test", "doc_to_text": "",
                    "doc_to_target": "{{text}}", "metric_list": [{"metric": "word_perplexity"},
                                                                 {"metric": "byte_perplexity"},
                                                                 {"metric": "bits_per_byte"}],
                    "metadata": {"version": 1.0}}
    assert Path(task["dataset_kwargs"]["data_files"]["test"]).is_absolute()
    with pytest.raises(OutputExistsError):
        write_lm_eval_task(out, docs)
    write_lm_eval_task(out, {"bible": ["otra"]}, force=True)  # replaced whole
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "bible.jsonl", "vocabshift_bible.yaml"]
    assert task_names(["a.b", "a_b", "A-B"]) == {"a.b": "a_b", "a_b": "a_b_2", "A-B": "a_b_3"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".task")]  # no temporary left


def test_eval_writes_the_documents_it_scored(capsys, tmp_path, llama, texts):
    task = tmp_path / "task"
    code, stdout, err = run_cli(capsys, "eval", "--model", llama, "--corpus", f"bible={texts['bible']}", "--corpus",
                                f"udhr={texts['udhr']}", "--lm-eval-task", task, "--max-documents", 4, "--json",
                                "--speed-words", 30, "--speed-repeats", 1, "--device", "cpu")
    assert code == 0, err
    for name in ("bible", "udhr"):
        rows = [json.loads(line)["text"] for line in (task / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert rows == texts[name].read_text(encoding="utf-8").splitlines()[:4]
    assert json.loads(stdout)["corpora"][1]["lm"]["new"]["documents"] == 4
    # An existing task directory is refused before any work; one holding an input even with --force.
    code, _, err = run_cli(capsys, "eval", "--model", llama, "--corpus", texts["bible"], "--lm-eval-task", task)
    assert code == 1 and "already exists" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(UnsafeOutputError):
        evaluate_model(EvalConfig(model=str(llama), corpus=corpus_from_paths(texts["bible"]),
                                  lm_eval_task=str(texts["bible"].parent), force=True, **FAST))
    assert texts["bible"].exists()


@pytest.mark.slow
def test_lm_eval_runs_the_written_task_and_agrees(monkeypatch, tmp_path, llama, texts):
    """lm-eval loads the written task with TaskManager(include_path=DIR) and, on the same pico model (HFLM
    with add_bos_token=False, max_length equal to vocabshift's window), gives vocabshift's bits per byte."""
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    task = tmp_path / "task"
    result = evaluate_model(EvalConfig(model=str(llama), corpus=corpus_from_paths(texts["bible"]), corpus_name="bible",
                                       extra_corpora={"udhr": [str(texts["udhr"])]}, seq_len=64,
                                       lm_eval_task=str(task), **FAST))
    harness = HFLM(pretrained=str(llama), backend="causal", device="cpu", batch_size=4, max_length=64,
                   add_bos_token=False, dtype="float32")
    results = simple_evaluate(model=harness, tasks=["vocabshift_bible", "vocabshift_udhr"],
                              task_manager=TaskManager(include_path=str(task)), bootstrap_iters=0)["results"]
    for c in result.corpora:
        theirs = results[f"vocabshift_{c.name}"]
        ours = c.lm["new"]
        assert ours.window == 64 and ours.documents == len(texts[c.name].read_text(encoding="utf-8").splitlines())
        assert theirs["bits_per_byte,none"] == pytest.approx(ours.bits_per_byte, rel=5e-3)
        assert theirs["byte_perplexity,none"] == pytest.approx(ours.byte_perplexity, rel=5e-3)
        assert theirs["word_perplexity,none"] == pytest.approx(ours.word_perplexity, rel=5e-3)
