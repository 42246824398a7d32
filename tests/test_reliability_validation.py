"""Validation holes (issue 12, classes 7 and 9): every bad input is one clear error, and nothing is written.

Typos inside optional sections, out-of-range sizes and lengths, YAML alias bombs and huge values in
error messages, a lean prune of a checkpoint whose config disagrees with its weights, a WordLevel
tokenizer, manifest files outside their entry's folder, and the manifests shipped in the wheel.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from tests.test_cli import run_cli
from vocabshift.config import MAX_VOCAB_SIZE, TokenizerTrainConfig, from_dict, load_yaml, validate_dict
from vocabshift.errors import ConfigError, ModelError, TokenizerError
from vocabshift.manifests import ManifestError, load_manifests, sha256_file
from vocabshift.pipeline import load_recipe
from vocabshift.train.config import TrainConfig
from vocabshift.vocabulary import ExtendConfig, PruneConfig, prune

REPO = Path(__file__).resolve().parent.parent
CORPUS = {"sources": [{"paths": ["a.txt"]}]}
TRAIN = {"model": "m", "out": "o", "corpus": CORPUS}
MAX_LINE = 1000  # every error message here must be shorter than this


def _listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.fixture()
def recipe_dir(tmp_path) -> Path:
    """A directory with a valid recipe's inputs: a model folder and a text file."""
    (tmp_path / "model").mkdir()
    (tmp_path / "spa.txt").write_text("hola mundo\n", encoding="utf-8")
    (tmp_path / "eng.txt").write_text("hello world\n", encoding="utf-8")
    return tmp_path


def _recipe(**changes) -> dict:
    recipe = {"source": "model", "languages": [{"code": "spa", "corpus": ["spa.txt"], "scripts": ["Latin"]}],
              "source_language": {"code": "eng", "corpus": ["eng.txt"]}, "init": {"method": "mean"},
              "training": None, "eval": None}
    recipe.update(changes)
    return recipe


def _write_recipe(directory: Path, recipe: dict | str) -> Path:
    path = directory / "recipe.yaml"
    path.write_text(recipe if isinstance(recipe, str) else yaml.safe_dump(recipe), encoding="utf-8")
    return path


def _adapt_fails(capsys, recipe: Path, *extra: str, max_line: int = MAX_LINE) -> str:
    """Run `vocabshift adapt` (for real, not a dry run): it must fail in one line and write nothing."""
    before = _listing(recipe.parent)
    code, out, err = run_cli(capsys, "adapt", recipe, "--out", recipe.parent / "run", *extra)
    assert code != 0 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) < max_line, err[:2000]
    assert _listing(recipe.parent) == before  # no run directory, nothing else
    return lines[0]


# ------------------------------------------------------------------------------------------------
# Typos inside optional (X | None) sections are reported, not dropped


def test_typo_in_optional_recipe_section_is_reported(recipe_dir, capsys):
    recipe = _recipe(source_language={"code": "eng", "corpuss": ["eng.txt"]})
    line = _adapt_fails(capsys, _write_recipe(recipe_dir, recipe))
    assert "unknown key 'source_language.corpuss' (did you mean 'corpus'?)" in line
    with pytest.raises(ConfigError, match=r"unknown key 'source_language.corpuss' \(did you mean 'corpus'\?\)"):
        load_recipe(_write_recipe(recipe_dir, recipe))


def test_typo_in_training_replay_is_reported(recipe_dir, capsys):
    recipe = _recipe(training={"max_steps": 4, "data": {"replay": {"sourcs": [{"paths": ["eng.txt"]}]}}})
    line = _adapt_fails(capsys, _write_recipe(recipe_dir, recipe))
    assert "unknown key 'training.data.replay.sourcs' (did you mean 'sources'?)" in line


@pytest.mark.parametrize("cls, key, extra", [
    (TrainConfig, "data.replay", {**TRAIN, "max_steps": 4, "data": {"replay": {"sourcs": []}}}),
    (PruneConfig, "keep_corpus", {"model": "m", "out": "o", "keep_corpus": {"sourcs": []}}),
    (ExtendConfig, "protect_corpus", {"model": "m", "tokenizer": "t", "out": "o", "protect_corpus": {"sourcs": []}}),
])
def test_typo_in_optional_corpus_is_reported(cls, key, extra):
    message = rf"unknown key '{key}.sourcs' \(did you mean 'sources'\?\)"
    with pytest.raises(ConfigError, match=message):  # from_dict: the first problem, not "(reported above)"
        from_dict(cls, extra)
    config, problems = validate_dict(cls, extra)
    assert config is None and any(f"unknown key '{key}.sourcs'" in p for p in problems)


def test_typo_in_init_corpus_is_reported():
    from vocabshift.init.apply import InitConfig

    with pytest.raises(ConfigError, match=r"unknown key 'corpus.sourcs' \(did you mean 'sources'\?\)"):
        InitConfig.from_dict({"method": "mean", "model": "m", "out": "o", "corpus": {"sourcs": []}})


# ------------------------------------------------------------------------------------------------
# Sizes and lengths out of range


@pytest.mark.parametrize("value, message", [
    (0, "tokenizer.vocab_size must be positive, got 0"),
    (-5, "tokenizer.vocab_size must be positive, got -5"),
    (99999999999, f"tokenizer.vocab_size 99,999,999,999 is above the maximum {MAX_VOCAB_SIZE:,}"),
])
def test_recipe_vocab_size_out_of_range(recipe_dir, capsys, value, message):
    recipe = _write_recipe(recipe_dir, _recipe(tokenizer={"vocab_size": value}))
    assert message in _adapt_fails(capsys, recipe)
    code, out, err = run_cli(capsys, "adapt", recipe, "--dry-run", "--out", recipe_dir / "run")
    assert code != 0 and message in err and not (recipe_dir / "run").exists()


def test_cli_vocab_size_too_large_is_one_line_before_rust(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("hello world\n")
    out = tmp_path / "tok"
    code, _, err = run_cli(capsys, "tokenizer", "train", "--source", tmp_path / "no-model", "--corpus", text,
                           "--vocab-size", "99999999999", "--out", out)
    assert code != 0 and err.strip().startswith("error: vocab_size 99,999,999,999 is above the maximum")
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    with pytest.raises(ConfigError, match="above the maximum 16,777,216"):
        TokenizerTrainConfig(source="s", corpus=from_dict(TrainConfig, {**TRAIN, "max_steps": 1}).corpus,
                             vocab_size=2**24 + 1, out="o")


@pytest.mark.parametrize("yaml_value, message", [
    ("1e30", "training.max_steps: expected int, got str '1e30' — write a whole number in digits"),
    ("1.0e+30", "training.max_steps: expected int, got float 1e+30 — write a whole number in digits"),
    ("2.5", "training.max_steps: expected int, got float 2.5"),
    ("1" + "0" * 30, "training.max_steps: 1000000000000000000000000000000 is out of range"),
    ("1000000000000", "training.max_steps must be between 1 and 1,000,000,000, got 1,000,000,000,000"),
    ("0", "training.max_steps must be between 1 and 1,000,000,000, got 0"),
    (".nan", None),
])
def test_recipe_max_steps_must_be_a_whole_number_in_range(recipe_dir, capsys, yaml_value, message):
    text = yaml.safe_dump(_recipe()).replace("training: null", f"training: {{max_steps: {yaml_value}}}")
    line = _adapt_fails(capsys, _write_recipe(recipe_dir, text))
    assert (message or "training.max_steps: expected int, got float nan") in line


def test_float_length_from_python_is_refused():
    corpus = from_dict(TrainConfig, {**TRAIN, "max_steps": 1}).corpus
    with pytest.raises(ConfigError, match="max_steps must be a whole number, got float 1e"):
        TrainConfig(model="m", out="o", corpus=corpus, max_steps=1e30)
    with pytest.raises(ConfigError, match="max_tokens must be between 1 and 1,000,000,000,000,000"):
        TrainConfig(model="m", out="o", corpus=corpus, max_tokens=10**18)
    with pytest.raises(ConfigError, match="embedding_lr: NaN is not a value"):
        from_dict(TrainConfig, {**TRAIN, "max_steps": 1, "embedding_lr": float("nan")})


@pytest.mark.parametrize("section, message", [
    ({"pad_to_multiple_of": 10**12}, "vocabulary.pad_to_multiple_of must be between 1 and 65,536"),
    ({"max_new": -1}, "vocabulary.max_new must be between 0 and 16,777,216, got -1"),
    ({"min_count": 0}, "vocabulary.min_count must be between 1"),
])
def test_recipe_vocabulary_numbers_out_of_range(recipe_dir, capsys, section, message):
    assert message in _adapt_fails(capsys, _write_recipe(recipe_dir, _recipe(vocabulary=section)))


def test_prune_and_extend_configs_bound_their_numbers():
    with pytest.raises(ConfigError, match="pad_to_multiple_of must be between 1 and 65,536, got 1,000,000"):
        PruneConfig(model="m", out="o", keep_scripts=["Latin"], pad_to_multiple_of=1_000_000)
    with pytest.raises(ConfigError, match="max_new must be a whole number, got float 5.0"):
        ExtendConfig(model="m", tokenizer="t", out="o", max_new=5.0)


# ------------------------------------------------------------------------------------------------
# YAML aliases and huge values: bounded work, bounded messages

BOMB = """\
source: model
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
languages: [{code: spa, corpus: *g}]
"""


def test_yaml_alias_bomb_is_refused_quickly(recipe_dir, capsys):
    recipe = _write_recipe(recipe_dir, BOMB)
    start = time.perf_counter()
    line = _adapt_fails(capsys, recipe)
    assert time.perf_counter() - start < 10
    assert "recipe.yaml: YAML aliases expand the document by" in line and "(at most 10,000)" in line


def test_recursive_alias_and_alias_in_set_are_refused(recipe_dir, capsys):
    with pytest.raises(ConfigError, match="recursive document"):
        load_yaml(_write_recipe(recipe_dir, "source: &x [*x]\n"))
    recipe = _write_recipe(recipe_dir, _recipe())
    bomb = "training.max_steps=[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], " \
           "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]]"
    assert "--set training.max_steps: YAML aliases expand" in _adapt_fails(capsys, recipe, "--set", bomb)


def test_small_aliases_still_work(recipe_dir):
    text = yaml.safe_dump(_recipe(init={"method": "wechsel"})) + "vectors: {source: &v {dim: 8, epochs: 1}, target: *v}\n"
    config, _ = load_recipe(_write_recipe(recipe_dir, text))
    assert config.vectors.source == config.vectors.target and config.vectors.target.dim == 8


def test_huge_values_are_cut_in_messages(recipe_dir, capsys):
    recipe = _recipe(tokenizer={"vocab_size": "x" * 100_000}, languages=[{"code": "spa", "corpus": "y" * 100_000}])
    line = _adapt_fails(capsys, _write_recipe(recipe_dir, recipe))
    assert "tokenizer.vocab_size: expected int, got str 'xxxx" in line and "languages[0].corpus" in line


def test_many_problems_are_counted_not_all_listed(recipe_dir, capsys):
    recipe = _recipe(languages=[{"code": "spa", "corpus": ["spa.txt"], f"bad{i}": 1} for i in range(200)])
    line = _adapt_fails(capsys, _write_recipe(recipe_dir, recipe), max_line=20 * 400 + 200)
    assert "200 problem(s) in the recipe" in line and "... and 180 more" in line


# ------------------------------------------------------------------------------------------------
# The vocabulary stage: config vs weights on the lean path, unsupported tokenizer types


def _tiny_bert(directory: Path, *, word_level: bool = False, config_vocab: int | None = None,
               extra_special: str | None = None) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + ["hello", "world", "hola", "mundo", "привет", "мир"])}
    model = models.WordLevel(vocab, unk_token="[UNK]") if word_level else models.WordPiece(vocab, unk_token="[UNK]")
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(directory)
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                               num_attention_heads=2, pad_token_id=0)).save_pretrained(directory)
    if config_vocab is not None:
        config = json.loads((directory / "config.json").read_text())
        config["vocab_size"] = config_vocab
        (directory / "config.json").write_text(json.dumps(config))
    if extra_special is not None:  # named by the config, absent from tokenizer.json: the transformers fallback
        config = json.loads((directory / "tokenizer_config.json").read_text())
        config["extra_special_tokens"] = [extra_special]
        (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


def test_lean_prune_refuses_config_vocab_size_that_disagrees_with_the_weights(tmp_path):
    source = _tiny_bert(tmp_path / "bert", config_vocab=19)
    out = tmp_path / "pruned"
    with pytest.raises(ModelError, match=r"bert.embeddings.word_embeddings.weight has 11 rows but config.json "
                                         r"\(vocab_size\) makes it 19 — set vocab_size in config.json"):
        prune(PruneConfig(model=str(source), out=str(out), keep_scripts=["Latin"]))
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bert"]


def test_lean_prune_of_a_consistent_checkpoint_still_works(tmp_path):
    source = _tiny_bert(tmp_path / "bert")
    result = prune(PruneConfig(model=str(source), out=str(tmp_path / "pruned"), keep_scripts=["Latin"]))
    assert result.report["vocab_size"] == 9 and result.report["model"]["vocab_size"] == 9


@pytest.mark.parametrize("extra_special", [None, "[NEW]"])
def test_prune_of_a_word_level_tokenizer_is_unsupported_not_an_import_error(tmp_path, capsys, extra_special):
    source = _tiny_bert(tmp_path / "wl", word_level=True, extra_special=extra_special)
    out = tmp_path / "pruned"
    with pytest.raises(TokenizerError, match="unsupported tokenizer type: WordLevel model — supported: byte-level"):
        prune(PruneConfig(model=str(source), out=str(out), keep_scripts=["Latin"]))
    code, _, err = run_cli(capsys, "prune", "--model", source, "--out", out, "--keep-scripts", "Latin")
    assert code != 0 and "unsupported tokenizer type: WordLevel model" in err and "ImportError" not in err
    assert not out.exists()


# ------------------------------------------------------------------------------------------------
# Manifests: files stay inside their entry's folder; shipped in the wheel


def _manifest_entry(folder: Path, files: list[dict]) -> dict:
    return {"name": "two-files", "kind": "corpus", "languages": ["eng"], "scripts": ["Latn"], "license": "MIT",
            "source": "a test", "path": f"{folder}/", "install": "cp somewhere", "files": files}


@pytest.mark.parametrize("bad_path, message", [
    ("/etc/hostname", "files[1].path '/etc/hostname' is absolute: give it relative to the entry's folder"),
    ("~/secret.txt", "files[1].path '~/secret.txt' is absolute"),
    ("../outside.txt", "files[1].path '../outside.txt' goes up with '..'"),
    ("sub/../../outside.txt", "files[1].path 'sub/../../outside.txt' goes up with '..'"),
    ("..\\outside.txt", "goes up with '..'"),
    ("C:\\outside.txt", "is absolute"),
])
def test_manifest_file_paths_outside_the_entry_are_refused(tmp_path, capsys, bad_path, message):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.txt").write_text("a\n")
    (tmp_path / "outside.txt").write_text("secret\n")
    files = [{"path": "a.txt", "sha256": sha256_file(folder / "a.txt"), "size": 2},
             {"path": bad_path, "sha256": "0" * 64, "size": 7}]
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "m.yaml").write_text(yaml.safe_dump([_manifest_entry(folder, files)]))
    with pytest.raises(ManifestError, match=r"m\.yaml: entry 1 \(two-files\): .*" + re.escape(message)):
        load_manifests(manifests)
    code, out, err = run_cli(capsys, "data", "verify", "two-files", "--manifests", manifests)
    assert code != 0 and "two-files" in err and "ok " not in out and "FAILED" not in out  # nothing hashed


def test_manifest_file_symlinked_out_of_the_entry_is_refused(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (tmp_path / "outside.txt").write_text("secret\n")
    (folder / "link.txt").symlink_to(tmp_path / "outside.txt")
    files = [{"path": "link.txt", "sha256": sha256_file(tmp_path / "outside.txt"), "size": 7}]
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "m.yaml").write_text(yaml.safe_dump([_manifest_entry(folder, files)]))
    with pytest.raises(ManifestError, match=r"m\.yaml: entry 1 \(two-files\): files\[0\]\.path 'link.txt' "
                                            r"resolves to .*outside.txt', outside the entry's folder"):
        load_manifests(manifests)
    # a symlinked folder is fine: only files that leave the folder's real path are refused
    (tmp_path / "alias").symlink_to(folder)
    (folder / "link.txt").unlink()
    (folder / "a.txt").write_text("a\n")
    files = [{"path": "a.txt", "sha256": sha256_file(folder / "a.txt"), "size": 2}]
    (manifests / "m.yaml").write_text(yaml.safe_dump([_manifest_entry(tmp_path / "alias", files)]))
    assert load_manifests(manifests)[0].name == "two-files"


def test_manifest_alias_bomb_is_refused(tmp_path):
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    lines = ["- &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"- &{b} [{', '.join(['*' + a] * 9)}]" for a, b in zip("abcdef", "bcdefg", strict=True)]
    (manifests / "m.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=r"m\.yaml: YAML aliases expand the document by") as err:
        load_manifests(manifests)
    assert len(str(err.value)) < MAX_LINE


def test_shipped_manifests_are_package_data():
    link = REPO / "vocabshift" / "data" / "manifests"
    assert link.is_dir() and link.resolve() == (REPO / "data_manifests").resolve()
    assert sorted(p.name for p in link.glob("*.yaml")) == sorted(p.name for p in (REPO / "data_manifests").glob("*.yaml"))
    assert '"data/manifests/*.yaml"' in (REPO / "pyproject.toml").read_text()


@pytest.mark.slow
def test_wheel_ships_the_manifests_and_data_list_works_installed(tmp_path):
    """`pip install .` (a wheel, not editable): `vocabshift data list` finds the manifests in the package."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("vocabshift", "cli", "data_manifests"):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=ignore)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(src)], check=True, capture_output=True, cwd=tmp_path)
    wheel = next(wheels.glob("vocabshift-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for manifest in (REPO / "data_manifests").glob("*.yaml"):
        assert f"vocabshift/data/manifests/{manifest.name}" in names
    target = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, cwd=tmp_path)
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    code = ("import sys, vocabshift; from vocabshift_cli.main import main; print(vocabshift.__file__); "
            "main(['data', 'list', '--json'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    first, rest = done.stdout.split("\n", 1)
    assert first.startswith(str(target))
    entries = json.loads(rest)
    assert {"udhr-eng-sample", "freedict-eng-spa"} <= {e["name"] for e in entries}
    assert all(e["manifest"].startswith(str(target / "vocabshift" / "data" / "manifests")) for e in entries)
