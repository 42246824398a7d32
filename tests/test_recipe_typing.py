"""The recipe's sections are typed with the stages' own configs: every problem at once, with its dotted path,
and the stage keys of existing recipes unchanged (they hash each section as the recipe gave it)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from vocabshift.config import ConfigProblems, from_dict, to_dict, to_dict_as_given
from vocabshift.errors import ConfigError
from vocabshift.pipeline import AdaptConfig, EvalSection, TrainingSection, load_recipe
from vocabshift.stages import plan_stages
from vocabshift.stages.base import fingerprint, stage_key
from vocabshift.train.config import LoraSettings, TrainConfig


@pytest.fixture
def recipe(tmp_path: Path) -> dict:
    """A valid recipe whose inputs exist (a model folder, target and source text)."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for lang in ("spa", "eng"):
        (tmp_path / f"{lang}.txt").write_text("hola mundo\n" * 5, encoding="utf-8")
    return {"source": str(model), "source_language": {"code": "eng", "corpus": [str(tmp_path / "eng.txt")]},
            "languages": [{"code": "spa", "corpus": [str(tmp_path / "spa.txt")]}],
            "init": {"method": "wechsel", "options": {"neighbours": 5}},
            "training": {"max_steps": 4, "embedding_lr": 1, "lora": {"r": 8, "alpha": 16},
                         "data": {"seq_len": 64, "num_workers": 0}},
            "eval": {"protocol": "packed", "max_sequences": 4}}


def _problems(recipe: dict) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_recipe(recipe)
    message = str(err.value)
    count = int(re.match(r"(\d+) problem\(s\) in the recipe: ", message).group(1))
    problems = message.split(": ", 1)[1].split("; ")
    assert len(problems) == count, message
    return problems


def test_mistakes_in_every_section_are_named_at_once_with_their_paths(recipe):
    recipe["tokenizer"] = {"vocab_size": 0}
    recipe["vocabulary"] = {"mode": "shrink"}
    recipe["init"] = {"method": "wechsel", "options": {"neighbors": 5}}
    recipe["training"] = {"max_steps": 4, "schedule": "zigzag", "embeding_lr": 1e-3, "lora": {"r": 0}}
    recipe["eval"] = {"protocol": "foo", "batch_size": 0}
    problems = _problems(recipe)
    expected = [
        "tokenizer.vocab_size must be positive, got 0",
        "vocabulary: vocabulary.mode must be one of replace, extend, prune, got 'shrink'",
        "unknown key 'init.options.neighbors' (did you mean 'neighbours'?)",
        "unknown key 'training.embeding_lr' (did you mean 'embedding_lr'?)",
        "training.lora.r must be at least 1, got 0",
        "training.schedule must be one of cosine, linear, constant, got 'zigzag'",
        "eval.protocol must be one of document, packed, got 'foo'",
        "eval.batch_size must be an integer >= 1, got 0",
    ]
    for line in expected:
        assert any(p.startswith(line) for p in problems), (line, problems)
    assert len(problems) == len(expected)


def test_schema_problems_and_missing_files_come_in_the_same_error(recipe, tmp_path):
    recipe["languages"][0]["corpus"] = [str(tmp_path / "nope.txt")]
    recipe["tokenizr"] = {"vocab_size": 100}
    recipe["training"]["lora"] = {"r": "eight"}
    problems = _problems(recipe)
    assert any("unknown key 'tokenizr' (did you mean 'tokenizer'?)" in p for p in problems)
    assert any(p.startswith("training.lora.r: expected int, got str 'eight'") for p in problems)
    assert any(p.startswith("languages[0].corpus: ") and "nope.txt does not exist" in p for p in problems)


def test_wrong_types_in_nested_sections_are_named_by_their_paths(recipe):
    recipe["training"] = {"max_steps": "many", "lora": {"r": 8.5, "target_modules": "q_proj"},
                          "data": {"seq_len": "long", "objective": "mask",
                                   "replay": {"sources": [{"paths": "eng.txt"}]}, "replay_weight": 0.1}}
    problems = _problems(recipe)
    for start in ("training.max_steps: expected int, got str 'many'",
                  "training.lora.r: expected int, got float 8.5",
                  "training.lora.target_modules: expected a list, got str 'q_proj'",
                  "training.data.seq_len: expected int, got str 'long'",
                  "training.data.objective must be one of auto, mlm, clm, got 'mask'",  # found beside the type errors
                  "training.data.replay.sources[0].paths: expected a list, got str 'eng.txt'"):
        assert any(p.startswith(start) for p in problems), (start, problems)


@pytest.mark.parametrize("section, key, close", [
    ("training", "embeding_lr", "embedding_lr"),
    ("training", "lr_typo", None),  # no close spelling: a key sharing a word ("lr")
    ("training.lora", "alhpa", "alpha"),
    ("training.data", "seq_length", "seq_len"),
    ("eval", "protocl", "protocol"),
    ("eval", "speed_word", "speed_words"),
])
def test_unknown_keys_suggest_the_close_field(recipe, section, key, close):
    node = recipe
    for part in section.split("."):
        node = node.setdefault(part, {})
    node[key] = 1
    (problem,) = _problems(recipe)
    suggested = re.fullmatch(rf"unknown key '{re.escape(section)}\.{key}' \(did you mean '(\w+)'\?\)", problem)
    assert suggested, problem
    if close is None:
        assert "lr" in suggested.group(1).split("_")
    else:
        assert suggested.group(1) == close


@pytest.mark.parametrize("section, key", [("training", "model"), ("training", "out"), ("training", "force"),
                                          ("eval", "corpus"), ("eval", "baseline"), ("eval", "corpus_name")])
def test_keys_the_pipeline_sets_are_refused_with_the_reason(recipe, section, key):
    recipe[section][key] = "x"
    (problem,) = _problems(recipe)
    assert problem.startswith(f"{section}.{key}: set by the pipeline (") and problem.endswith("not by the recipe")


def test_a_valid_recipe_is_typed_and_round_trips(recipe, tmp_path):
    config, _ = load_recipe(recipe)
    assert isinstance(config.training, TrainingSection) and isinstance(config.training.lora, LoraSettings)
    assert isinstance(config.eval, EvalSection) and config.eval.protocol == "packed"
    assert config.training.embedding_lr == 1.0 and isinstance(config.training.embedding_lr, float)
    assert (config.training.lora.r, config.training.lora.alpha, config.training.data.seq_len) == (8, 16.0, 64)
    again, _ = load_recipe(to_dict(config))
    assert again == config
    path = tmp_path / "again.yaml"
    path.write_text(config.to_yaml())
    assert load_recipe(path)[0] == config
    # the train stage is given TrainConfig's own defaults for what the recipe leaves out
    train = TrainConfig.from_dict({**to_dict(config.training), "model": "m", "out": "o",
                                   "corpus": {"sources": [{"paths": ["x"]}]}})
    assert train.lora == config.training.lora and train.schedule == "cosine"


def test_stage_keys_hash_sections_as_the_recipe_gave_them(recipe, tmp_path):
    config, _ = load_recipe(recipe)
    plans = {p.name: p for p in plan_stages(config, tmp_path / "run")}
    # `embedding_lr: 1` and `alpha: 16` hash as written (not 1.0, 16.0), without the defaults typing adds
    assert to_dict_as_given(config.training) == recipe["training"]
    assert to_dict_as_given(config.eval) == recipe["eval"]
    options = {"training": recipe["training"], "languages": to_dict(config.languages), "eval_documents": 200}
    assert plans["train"].key == stage_key({"stage": "train", "options": options,
                                            "inputs": fingerprint(recipe["languages"][0]["corpus"]),
                                            "upstream": [plans["init"].key]})
    # the same recipe built in Python (sections as mappings, or as dataclasses) plans the same keys
    data = {k: v for k, v in recipe.items() if k not in ("training", "eval")}
    typed = from_dict(AdaptConfig, data)
    typed.training = from_dict(TrainingSection, recipe["training"])
    typed.eval = EvalSection(protocol="packed", max_sequences=4)
    fields = {f.name: getattr(typed, f.name) for f in dataclasses.fields(AdaptConfig)}
    python = AdaptConfig(**{**fields, "training": recipe["training"], "eval": recipe["eval"]})
    for built in (typed, python):
        assert {p.name: p.key for p in plan_stages(built, tmp_path / "run")} == {n: p.key for n, p in plans.items()}


def test_a_changed_field_changes_the_key_even_after_loading(recipe, tmp_path):
    config, _ = load_recipe(recipe)
    before = {p.name: p.key for p in plan_stages(config, tmp_path / "run")}
    config.training.lora.r = 4
    config.eval.seed = 3
    after = {p.name: p.key for p in plan_stages(config, tmp_path / "run")}
    assert after["train"] != before["train"] and after["eval"] != before["eval"]
    assert after["init"] == before["init"]


def test_a_config_names_all_its_own_problems():
    corpus = {"sources": [{"paths": ["x"]}]}
    with pytest.raises(ConfigProblems) as err:
        from_dict(TrainConfig, {"model": "m", "out": "o", "corpus": corpus, "max_steps": 0, "schedule": "zigzag",
                                "weight_decay": -1.0})
    assert [str(e) for e in err.value.errors] == [
        "max_steps must be between 1 and 1,000,000,000, got 0",
        "schedule must be one of cosine, linear, constant, got 'zigzag'",
        "weight_decay must be >= 0, got -1.0"]
    with pytest.raises(ConfigError, match="^lora.r must be at least 1, got 0$"):  # one problem: raised as it is
        LoraSettings(r=0)


def test_recipe_yaml_with_a_null_section_has_no_stage(recipe, tmp_path):
    recipe.update(training=None, eval=None)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    config, _ = load_recipe(path)
    assert config.training is None and config.eval is None
    assert [p.name for p in plan_stages(config, tmp_path / "run")][-1] == "init"


def test_export_dtype_is_checked_when_the_recipe_loads(recipe):
    recipe["export"] = {"dtype": "fp8"}
    assert _problems(recipe) == ["export.dtype must be one of auto, float32, bfloat16, float16, got 'fp8'"]
