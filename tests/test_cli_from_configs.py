"""The stage commands' flags come from the stage configs (``cli/options.py``), and stay in step with them.

Every field of a command's config has a flag, unless the command excludes it with a reason; every flag's
default (the click default, and what ``--help`` shows) is the field's default; flags not typed on the
command line are "not given", so that a ``--config`` recipe is overridden only by the flags typed.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import typer
import yaml

from cli.main import load_command
from cli.options import ConfigOptions, config_options, field_default
from vocabshift.config import TokenizerTrainConfig
from vocabshift.eval.config import EvalConfig
from vocabshift.export import ExportConfig
from vocabshift.init.config import InitConfig
from vocabshift.train.config import LoraSettings, TrainConfig
from vocabshift.vectors.config import VectorsAlignConfig, VectorsTrainConfig
from vocabshift.vocabulary_config import ExtendConfig, PruneConfig

REPO = Path(__file__).resolve().parents[1]

# command -> the stage config its flags come from
STAGE_COMMANDS: dict[str, type] = {
    "train": TrainConfig, "eval": EvalConfig, "init": InitConfig, "prune": PruneConfig, "extend": ExtendConfig,
    "export": ExportConfig, "tokenizer train": TokenizerTrainConfig, "vectors train": VectorsTrainConfig,
    "vectors align": VectorsAlignConfig,
}


def _command(path: str) -> typer.core.TyperCommand:
    name, *sub = path.split()
    command = load_command(name)
    return command.commands[sub[0]] if sub else command  # type: ignore[attr-defined]


def _groups(command) -> tuple[ConfigOptions, ...]:
    groups = getattr(command.callback, "config_options", None)
    assert groups, "the command's options are not generated from a config (cli.options.config_options)"
    return groups


def _strip_none(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, type(int | None)) and len(args) == 1 else hint


def _missing_flags(config: type, key: str, groups: dict[str, ConfigOptions], params: set[str]) -> list[str]:
    """Fields of ``config`` (at dotted ``key``) with neither a flag nor a declared exclusion."""
    group = groups.get(key)
    assert group is not None and group.config is config, f"no ConfigOptions for {config.__name__} at {key!r}"
    hints = typing.get_type_hints(config)
    missing = []
    for f in dataclasses.fields(config):
        dotted = f"{key}.{f.name}" if key else f.name
        if f.name in group.excluded:
            continue
        if dataclasses.is_dataclass(_strip_none(hints[f.name])):
            missing += _missing_flags(_strip_none(hints[f.name]), dotted, groups, params)
        elif dotted.replace(".", "_") not in params:
            missing.append(dotted)
    return missing


@pytest.mark.parametrize("path", STAGE_COMMANDS)
def test_every_config_field_has_a_flag_or_a_reason(path: str) -> None:
    command = _command(path)
    groups = {g.key: g for g in _groups(command)}
    params = {p.name for p in command.params}
    assert _missing_flags(STAGE_COMMANDS[path], "", groups, params) == []
    for group in groups.values():
        assert all(reason.strip() for reason in group.excluded.values())


def _shown(group: ConfigOptions, f: dataclasses.Field, param) -> str | None:
    """What ``--help`` must show as the default of ``f``'s flag (None: nothing)."""
    default = field_default(f)
    if default is dataclasses.MISSING or default is None or default == [] or (default is False and not
                                                                                param.secondary_opts):
        return None
    if isinstance(default, bool):
        return (param.opts if default else param.secondary_opts)[0].lstrip("-")
    if f.name in group.comma_separated:
        return ",".join(default)
    return str(default)


@pytest.mark.parametrize("path", [*STAGE_COMMANDS, "tokenizer stats"])
def test_every_flag_default_is_its_fields_default(path: str) -> None:
    command = _command(path)
    params = {p.name: p for p in command.params}
    ctx = typer.Context(command)
    checked = 0
    for group in _groups(command):
        for f in group.exposed():
            if dataclasses.is_dataclass(_strip_none(typing.get_type_hints(group.config)[f.name])):
                continue  # a section: its own group's flags
            param = params[group.dotted(f.name).replace(".", "_")]
            default = field_default(f)
            where = f"{path} {param.opts[0]} ({group.config.__name__}.{f.name})"
            if default is dataclasses.MISSING:
                assert param.required or (not group.required and param.default is None), where
            elif f.name in group.comma_separated:
                assert param.default == (",".join(default) if default else None), where
            elif isinstance(default, list):
                assert list(param.default or []) == default, where
            else:
                assert param.default == default and type(param.default) is type(default), where
            shown = _shown(group, f, param)
            help_text = " ".join(param.get_help_record(ctx)[1].split())
            if shown is None:
                assert "[default:" not in help_text, where
            else:
                assert help_text.endswith(f"[default: {shown}]"), f"{where}: {help_text!r}"
            checked += 1
    assert checked


def test_flags_not_typed_leave_the_recipe_alone(tmp_path, capsys, monkeypatch) -> None:
    import vocabshift.train.loop
    from tests.test_cli import run_cli

    seen: list[TrainConfig] = []

    def fake_train(cfg: TrainConfig):
        seen.append(cfg)
        return type("Result", (), {"step": 1, "tokens": 2, "metrics": {}, "run_dir": cfg.out, "status": "completed"})

    monkeypatch.setattr(vocabshift.train.loop, "train", fake_train)
    recipe = tmp_path / "train.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": "m", "out": "o", "corpus": {"sources": [{"paths": ["a.txt"]}]}, "max_steps": 7, "batch_size": 4,
        "force": True, "progress": False, "lora": {"r": 4, "target_modules": ["q"]}, "data": {"seq_len": 64}}))
    code, _, err = run_cli(capsys, "train", "--config", recipe, "--lora-alpha", 8, "--lora-targets", "q_proj, v_proj",
                           "--seq-len", 512, "--log-with", "tensorboard", "--compile", "--grad-accum", 3, "--corpus",
                           "b.txt", "c.txt")
    assert code == 0, err
    cfg = seen[0]
    # from the recipe, although each flag has a different default
    assert (cfg.max_steps, cfg.batch_size, cfg.force, cfg.progress, cfg.lora.r) == (7, 4, True, False, 4)
    # typed: even a flag typed with its default value (--seq-len 512) overrides the recipe
    assert (cfg.lora.alpha, cfg.lora.target_modules, cfg.data.seq_len) == (8.0, ["q_proj", "v_proj"], 512)
    assert (cfg.log_with, cfg.compile, cfg.gradient_accumulation_steps) == (["tensorboard"], True, 3)
    assert cfg.corpus.sources[0].paths == ["b.txt", "c.txt"]
    # neither in the recipe nor typed: the config's defaults
    assert (cfg.lora.dropout, cfg.save_every, cfg.resume) == (LoraSettings().dropout, 500, False)


@dataclasses.dataclass
class _Inner:
    r: int = dataclasses.field(default=2, metadata={"help": "Rank."})
    on: bool = dataclasses.field(default=True, metadata={"help": "On."})


@dataclasses.dataclass
class _Outer:
    name: str = dataclasses.field(metadata={"help": "Name."})
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    verbose: bool = dataclasses.field(default=False, metadata={"help": "Talk."})
    tags: list[str] = dataclasses.field(default_factory=list, metadata={"help": "Tags."})
    cap: int | None = dataclasses.field(default=None, metadata={"help": "Cap."})
    secret: dict = dataclasses.field(default_factory=dict)


def _generated(*groups: ConfigOptions) -> typer.Typer:
    @config_options(*groups)
    def command(*, given: dict) -> None:
        typer.echo(repr(sorted(given.items())))

    app = typer.Typer(add_completion=False)
    app.command()(command)
    return app


def test_generator_rules_on_a_small_config() -> None:
    from typer.testing import CliRunner

    outer = ConfigOptions(_Outer, excluded={"secret": "internal"})
    app = _generated(outer, ConfigOptions(_Inner, key="inner"))
    flags = {p.name: (p.opts, p.secondary_opts, p.default, p.required) for p in typer.main.get_command(app).params}
    assert flags == {
        "name": (["--name"], [], None, True),
        "verbose": (["--verbose"], [], False, False),  # a bool defaulting to False is a switch
        "tags": (["--tags"], [], None, False),
        "cap": (["--cap"], [], None, False),
        "inner_r": (["--inner-r"], [], 2, False),  # a section's fields under its prefix
        "inner_on": (["--inner-on"], ["--no-inner-on"], True, False),  # any other bool is a pair
    }
    result = CliRunner().invoke(app, ["--name", "x", "--tags", "a", "--tags", "b", "--no-inner-on"])
    assert result.output.strip() == "[('inner.on', False), ('name', 'x'), ('tags', ['a', 'b'])]"


def test_generator_refuses_what_it_cannot_place() -> None:
    with pytest.raises(ValueError, match="section"):  # a nested config without its own group or a reason
        _generated(ConfigOptions(_Outer, excluded={"secret": "internal"}))
    with pytest.raises(TypeError, match="no flag type"):
        _generated(ConfigOptions(_Outer, excluded={"inner": "not here"}))
    with pytest.raises(ValueError, match="need a reason"):
        ConfigOptions(_Outer, excluded={"secret": " "})
    with pytest.raises(ValueError, match="no field"):
        ConfigOptions(_Outer, flags={"nme": "--n"})
    with pytest.raises(ValueError, match="declared twice"):
        _generated(ConfigOptions(_Outer, flags={"verbose": "--name"}, excluded={"secret": "-", "inner": "-"}))


def test_stage_configs_and_commands_import_without_torch() -> None:
    modules = ["vocabshift.config", "vocabshift.train.config", "vocabshift.train.data_config",
               "vocabshift.eval.config", "vocabshift.init.config", "vocabshift.vectors.config",
               "vocabshift.vocabulary_config", "vocabshift.export",
               # so every subcommand's --help comes without torch too
               *(f"cli.{name}" for name in ("train", "eval", "init", "vectors", "tokenizer", "vocab", "export"))]
    code = f"import sys\nfor m in {modules!r}:\n    __import__(m)\nprint(sorted(m for m in ('torch', 'transformers') " \
           "if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
