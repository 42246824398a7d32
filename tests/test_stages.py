"""The stage table of `vocabshift adapt`: its order, the modules' declarations, keys, and adding a stage."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import vocabshift.stages as stages_pkg
from vocabshift.config import to_dict
from vocabshift.pipeline import adapt, load_recipe
from vocabshift.stages import registry
from vocabshift.stages.base import Stage, fingerprint, stage_key

ORDER = ["source", "tokenizer", "vocabulary", "vectors-source", "vectors-target", "align", "init", "train",
         "export", "eval"]


@pytest.fixture
def recipe(tmp_path: Path) -> dict:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # an HF folder: no source stage; planning reads no weights
    for lang in ("spa", "eng"):
        (tmp_path / f"{lang}.txt").write_text("hola mundo\n" * 5, encoding="utf-8")
    return {"source": str(model), "source_language": {"code": "eng", "corpus": [str(tmp_path / "eng.txt")]},
            "languages": [{"code": "spa", "corpus": [str(tmp_path / "spa.txt")]}],
            "init": {"method": "wechsel"}, "training": {"max_steps": 2}, "eval": {}}


def _plan(recipe: dict, run_dir: Path) -> dict[str, tuple[str, str]]:
    config, _ = load_recipe(recipe)
    return {s.name: (s.key, s.directory.name) for s in registry.plan_stages(config, run_dir)}


def test_the_table_lists_every_stage_once_in_run_order():
    assert [s.name for s in registry.STAGES] == ORDER
    assert list(registry.REGISTERED_STAGES) == ORDER
    with pytest.raises(ValueError, match="listed twice"):
        registry._table([registry.STAGES[0], registry.STAGES[0]])
    with pytest.raises(ValueError, match="lowercase"):
        registry._table([Stage("Bad_Name", *[lambda ctx: None] * 5)])


def test_every_stage_module_declares_its_stage():
    names = {m.name for m in pkgutil.iter_modules(stages_pkg.__path__)} - {"base", "registry"}
    declared: list[Stage] = []
    for name in sorted(names):
        module = importlib.import_module(f"vocabshift.stages.{name}")
        found = getattr(module, "STAGES", None) or (module.STAGE,)
        for stage in found:
            assert isinstance(stage, Stage) and stage.name, name
            for attr in ("applies", "options", "inputs", "upstream", "run"):
                assert callable(getattr(stage, attr)), f"{name}: {attr}"
        declared += found
    assert sorted(s.name for s in declared) == sorted(ORDER)  # no module left out of the table


def test_plan_names_directories_and_keys(recipe, tmp_path):
    run_dir = tmp_path / "run"
    plan = _plan(recipe, run_dir)
    assert list(plan) == ["tokenizer", "vectors-source", "vectors-target", "align", "init", "train", "export", "eval"]
    for i, (name, (key, directory)) in enumerate(plan.items()):
        assert directory == f"{i:02d}-{name}-{key}" and len(key) == 12
    # The key hashes exactly the stage name, its options, its input files and the upstream keys.
    config, _ = load_recipe(recipe)
    assert plan["tokenizer"][0] == stage_key({
        "stage": "tokenizer", "options": to_dict({"tokenizer": config.tokenizer, "temperature": 1.0,
                                                  "languages": config.languages}),
        "inputs": fingerprint([recipe["languages"][0]["corpus"][0]]), "upstream": []})
    assert plan["init"][0] == stage_key({
        "stage": "init", "options": to_dict({"init": config.init, "mode": "replace"}), "inputs": [],
        "upstream": [plan[n][0] for n in ("tokenizer", "vectors-source", "vectors-target", "align")]})
    assert _plan(recipe, run_dir) == plan  # planning is deterministic

    # A changed option changes the key of its stage and of everything downstream, nothing upstream.
    fvt = _plan({**recipe, "init": {"method": "fvt"}}, run_dir)
    assert list(fvt) == ["tokenizer", "init", "train", "export", "eval"]
    assert fvt["tokenizer"] == plan["tokenizer"]
    assert all(fvt[n][0] != plan[n][0] for n in ("init", "train", "export", "eval"))
    lora = _plan({**recipe, "training": {"max_steps": 3}}, run_dir)
    assert [n for n in plan if lora[n][0] != plan[n][0]] == ["train", "export", "eval"]


def test_plans_of_each_vocabulary_mode(recipe, tmp_path):
    prune = _plan({**recipe, "vocabulary": {"mode": "prune", "keep_scripts": ["Latin"]}}, tmp_path / "r")
    assert list(prune) == ["vocabulary", "train", "export", "eval"]
    extend = _plan({**recipe, "vocabulary": {"mode": "extend"}, "training": None, "eval": None,
                    "init": {"method": "mean"}}, tmp_path / "r")
    assert list(extend) == ["tokenizer", "vocabulary", "init"]


def test_a_stage_added_to_the_table_is_planned_and_run(recipe, tmp_path, monkeypatch):
    ran: list[Path] = []

    def run(ctx, out: Path) -> dict:
        ran.append(out)
        return {}

    dummy = Stage(name="dummy", applies=lambda ctx: True, options=lambda ctx: {"x": 1}, inputs=lambda ctx: [],
                  upstream=lambda ctx: ["init"], run=run)
    skipped = Stage(name="never", applies=lambda ctx: False, options=lambda ctx: {}, inputs=lambda ctx: [],
                    upstream=lambda ctx: [], run=run)
    at = [s.name for s in registry.STAGES].index("train")
    monkeypatch.setattr(registry, "STAGES", (*registry.STAGES[:at], dummy, skipped, *registry.STAGES[at:]))
    plan = _plan(recipe, tmp_path / "run")
    assert list(plan) == ["tokenizer", "vectors-source", "vectors-target", "align", "init", "dummy", "train",
                          "export", "eval"]
    assert plan["dummy"][1].startswith("05-dummy-")
    result = adapt(recipe, tmp_path / "run", dry_run=True)
    assert "dummy" in result.ran and "never" not in result.ran and ran == []
