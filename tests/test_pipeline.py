"""`vocabshift adapt`: recipe validation, stage caching by key, failure isolation, and end-to-end runs."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.conftest import udhr_lines
from vocabshift.data import sample_path
from vocabshift.errors import ConfigError
from vocabshift.pipeline import adapt, apply_overrides, load_recipe


def _bible(lang: str, n: int) -> list[str]:
    with gzip.open(sample_path(f"bible.{lang}.txt.gz"), "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in itertools.islice(f, n)]


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("texts")
    spa, eng = d / "spa.txt", d / "eng.txt"
    spa.write_text("\n".join(udhr_lines("spa") + _bible("spa", 1500)) + "\n", encoding="utf-8")
    eng.write_text("\n".join(udhr_lines("eng") + _bible("eng", 1500)) + "\n", encoding="utf-8")
    return {"spa": spa, "eng": eng}


@pytest.fixture(scope="module")
def pico_source(tmp_path_factory, roberta_source) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(roberta_source)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         max_position_embeddings=256)
    directory = tmp_path_factory.mktemp("pico") / "model"
    LlamaForCausalLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def _recipe(source: Path, texts: dict[str, Path], **changes) -> dict:
    recipe = {
        "name": "pico",
        "source": str(source),
        "source_language": {"code": "eng", "corpus": [str(texts["eng"])]},
        "languages": [{"code": "spa", "corpus": [str(texts["spa"])], "scripts": ["Latin"]}],
        "eval_documents": 40,
        "tokenizer": {"vocab_size": 500},
        "vocabulary": {"mode": "replace"},
        "vectors": {"source": {"dim": 16, "epochs": 1, "min_count": 2},
                    "target": {"dim": 16, "epochs": 1, "min_count": 2}},
        "init": {"method": "wechsel"},
        "training": {"max_steps": 3, "batch_size": 2, "data": {"seq_len": 32, "num_workers": 0},
                     "eval_every": 3, "save_every": 3, "log_every": 1, "progress": False},
        "eval": {"max_sequences": 4, "batch_size": 2, "seq_len": 32, "speed_words": 50, "speed_repeats": 1,
                 "neighbours": 5},
    }
    recipe.update(changes)
    return recipe


def test_invalid_recipe_names_every_problem_at_once(tmp_path, texts):
    recipe = {
        "source": str(tmp_path / "missing-model"),
        "languages": [{"code": "spa", "corpus": [str(tmp_path / "nope.txt")]}],
        "tokenizr": {"vocab_size": 100},
        "init": {"method": "wechzel"},
        "training": {"max_steps": 2, "lora": {"r": "eight"}},
        "vocabulary": {"mode": "shrink"},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    message = str(err.value)
    for expected in ("'tokenizr' (did you mean 'tokenizer'?)", "vocabulary: vocabulary.mode must be one of"):
        assert expected in message
    # the type problems of a valid structure come in a second pass, also all at once
    recipe.pop("tokenizr")
    recipe["vocabulary"] = {"mode": "replace"}
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    message = str(err.value)
    for expected in ("training.lora.r: expected int", "wechsel", "missing-model does not exist", "nope.txt"):
        assert expected in message, expected
    recipe["init"] = {"method": "wechsel"}
    recipe["training"] = {"max_steps": 2}
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match="needs source-language vectors"):
        load_recipe(path)
    assert not (tmp_path / "runs").exists()


def test_overrides_set_nested_keys_and_list_items():
    data = {"training": {"lora": {"r": 16}}, "languages": [{"code": "spa", "weight": 1.0}]}
    apply_overrides(data, ["training.lora.r=8", "languages.0.weight=0.5", "init.method=ofa", "training.max_steps=10"])
    assert data == {"training": {"lora": {"r": 8}, "max_steps": 10}, "languages": [{"code": "spa", "weight": 0.5}],
                    "init": {"method": "ofa"}}
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides({}, ["training.lora.r"])


@pytest.mark.slow
def test_adapt_end_to_end_caches_stages_and_reruns_only_what_changed(pico_source, texts, tmp_path):
    run = tmp_path / "run"
    first = adapt(_recipe(pico_source, texts), run)
    assert first.ran == ["tokenizer", "vectors-source", "vectors-target", "align", "init", "train", "export", "eval"]
    model = AutoModelForCausalLM.from_pretrained(run / "model")
    tok = AutoTokenizer.from_pretrained(run / "model")
    assert model.config.vocab_size == len(tok) == 500
    report = (run / "report" / "report.md").read_text()
    assert "bits per byte" in report.lower()
    recorded = json.loads((run / "run.json").read_text())
    assert recorded["recipe"]["init"]["method"] == "wechsel" and "torch" in recorded["versions"]
    metrics = [json.loads(line) for line in (first.stages["train"] / "metrics.jsonl").read_text().splitlines()]
    assert metrics and all("loss" in m or "eval_loss" in m for m in metrics)

    again = adapt(_recipe(pico_source, texts), run)
    assert again.ran == [] and len(again.cached) == 8

    changed = adapt(_recipe(pico_source, texts, init={"method": "fvt"}), run)
    # fvt needs no vectors: those stages drop out; tokenizer is reused, init and everything after re-run
    assert changed.cached == ["tokenizer"] and changed.ran == ["init", "train", "export", "eval"]
    init_report = json.loads((changed.stages["init"] / "init_report.json").read_text())
    assert init_report["method"] == "fvt"


@pytest.mark.slow
def test_failed_stage_leaves_earlier_stages_reusable(pico_source, texts, tmp_path):
    from vocabshift.errors import VocabshiftError

    run = tmp_path / "run"
    bad = _recipe(pico_source, texts, init={"method": "fvt"}, eval=None)
    bad["training"] = {**bad["training"], "data": {"seq_len": 100000, "num_workers": 0}}  # longer than the corpus
    with pytest.raises(VocabshiftError, match="seq_len|one sequence"):
        adapt(bad, run)
    finished = sorted(p.parent.name.split("-")[1] for p in (run / "stages").glob("*/stage.json"))
    assert finished == ["init", "tokenizer"]
    good = _recipe(pico_source, texts, init={"method": "fvt"}, eval=None)
    result = adapt(good, run)
    assert result.cached == ["tokenizer", "init"] and result.ran == ["train", "export"]


def test_dry_run_plans_without_running(pico_source, texts, tmp_path, capsys):
    from tests.test_cli import run_cli

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(pico_source, texts)))
    code, out, err = run_cli(capsys, "adapt", recipe, "--dry-run", "--out", tmp_path / "run",
                             "--set", "training.lora.r=4")
    assert code == 0, err
    for stage in ("tokenizer", "vectors-source", "align", "init", "train", "export", "eval"):
        assert stage in out
    assert "to run" in out and "trainable_parameters_estimate" in out and "parameters_before" in out
    assert not (tmp_path / "run").exists()
    code, _, err = run_cli(capsys, "adapt", recipe, "--dry-run", "--set", "init.method=wechzel")
    assert code == 1 and "did you mean 'wechsel'" in err and len(err.strip().splitlines()) == 1


def test_recipe_reference_in_docs_is_generated_from_the_schema():
    from vocabshift.pipeline import recipe_reference

    docs = Path(__file__).resolve().parent.parent / "docs" / "recipe.md"
    assert docs.read_text(encoding="utf-8") == recipe_reference(), \
        "docs/recipe.md is stale: run `python -m vocabshift.pipeline` to regenerate it"
    for key in ("`training.lora.r`", "`vocabulary.mode`", "`init.method`", "`eval.seq_len`", "`languages.corpus`"):
        assert key in docs.read_text(encoding="utf-8")


def test_shipped_recipes_validate():
    """Every recipe in recipes/ is valid; the embedded default also has all its inputs (the others name
    local paths a user fills in, so only their structure and options are checked)."""
    recipes = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.yaml"))
    assert len(recipes) >= 5
    for recipe in recipes:
        first_line = recipe.read_text(encoding="utf-8").splitlines()[0]
        assert first_line == f"# vocabshift adapt recipes/{recipe.name}", f"{recipe.name}: first line gives the command"
        demo = recipe.name.startswith("demo-")
        try:
            load_recipe(recipe, check_files=demo)
        except ConfigError as err:
            if demo and "is not installed" in str(err) and not __import__("os").environ.get("CI"):
                continue
            raise


@pytest.mark.slow
def test_embedded_default_recipe_reduced_end_to_end(tmp_path):
    """The README's first command, shrunk: same recipe, real SmolLM2 and Bible text, a few steps."""
    from vocabshift.resources import smollm2_gguf

    try:
        smollm2_gguf()
    except Exception as err:
        if __import__("os").environ.get("CI"):
            raise
        pytest.skip(str(err))
    recipe = Path(__file__).resolve().parent.parent / "recipes" / "demo-smollm2-spanish.yaml"
    smaller = ["tokenizer.vocab_size=1000", "tokenizer.max_bytes=400000", "eval_documents=50",
               "vectors.source={dim: 16, epochs: 1, min_count: 3, max_bytes: 400000}",
               "vectors.target={dim: 16, epochs: 1, min_count: 3, max_bytes: 400000}", "vectors.refine=1",
               "training.max_steps=2", "training.eval_every=2", "training.save_every=2", "training.data.seq_len=32",
               "training.data.eval_max_sequences=2", "eval.max_sequences=2", "eval.seq_len=32", "eval.speed_words=40",
               "eval.speed_repeats=1", "eval.speed_warmup=0", "eval.speed_max_seconds=1", "eval.speed_new_tokens=4",
               "eval.bootstrap=200", "eval.neighbours=3"]
    result = adapt(recipe, tmp_path / "demo", overrides=smaller)
    assert result.ran == ["source", "tokenizer", "vectors-source", "vectors-target", "align", "init", "train",
                          "export", "eval"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "demo" / "model")
    tok = AutoTokenizer.from_pretrained(tmp_path / "demo" / "model")
    assert model.config.vocab_size == len(tok) == 1000 and model.config.tie_word_embeddings
    evaluation = json.loads((tmp_path / "demo" / "report" / "eval.json").read_text())
    tokenization = evaluation["tokenization"]
    assert tokenization["new"]["total"]["fertility"] < tokenization["old"]["total"]["fertility"]  # Spanish tokenizer
    assert evaluation["lm"]["new"]["bits_per_byte"] > 0 and (tmp_path / "demo" / "report" / "report.md").exists()
    # Held-out Bible verses, the shipped Spanish UDHR, and English verses for forgetting: each on the same bytes
    # for both models, with a verdict; the scored documents also as an lm-eval task.
    corpora = evaluation["corpora"]
    assert [c["name"] for c in corpora] == ["heldout", "udhr", "source language (forgetting)"]
    assert corpora[0]["documents"] == corpora[2]["documents"] == 50 and corpora[1]["documents"] > 0
    for c in corpora:
        assert c["lm"]["old"]["bytes"] == c["lm"]["new"]["bytes"] and c["comparison"]["verdict"]
    report = (tmp_path / "demo" / "report" / "report.md").read_text(encoding="utf-8")
    assert "| udhr | new (model) |" in report and "| source language (forgetting) | new − old (paired) |" in report
    task = tmp_path / "demo" / "report" / "lm-eval-task"
    assert len((task / "udhr.jsonl").read_text(encoding="utf-8").splitlines()) == corpora[1]["documents"]


def test_distill_in_a_recipe_reads_the_target_text_but_not_the_held_out_documents(pico_source, texts, tmp_path):
    recipe = _recipe(pico_source, texts, init={"method": "distill", "options": {"max_contexts": 8,
                                                                                 "context_length": 16}},
                     training=None, eval=None)
    result = adapt(recipe, tmp_path / "run")
    assert "vectors" not in " ".join(result.ran)  # distill needs no static vectors
    report = json.loads((result.stages["init"] / "init_report.json").read_text())
    assert report["method"] == "distill" and report["config"]["skip_documents"] == 40
    teacher = report["teacher"]
    assert teacher["documents_skipped"] == 40 and teacher["windows"] == 8 and teacher["causal"]
