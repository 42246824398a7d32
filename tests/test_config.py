"""Config dataclasses: YAML/dict round trip and errors that name the key path."""

from __future__ import annotations

import pytest

from vocabshift.config import TokenizerTrainConfig, from_dict
from vocabshift.errors import ConfigError

VALID = {
    "source": "models/xlmr",
    "corpus": {"sources": [{"paths": ["am.txt"], "lang": "amh"}, {"paths": ["sw/*.jsonl.gz"], "lang": "swh"}],
               "temperature": 3.33, "max_bytes": 1000000},
    "vocab_size": 32000,
    "out": "out/tok",
}


def test_round_trip_through_yaml(tmp_path):
    cfg = TokenizerTrainConfig.from_dict(VALID)
    assert cfg.corpus.sources[1].lang == "swh" and cfg.corpus.temperature == 3.33
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert TokenizerTrainConfig.from_yaml(path) == cfg


def test_unknown_key_names_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'vocab_sise' \(did you mean 'vocab_size'\?\)"):
        from_dict(TokenizerTrainConfig, {**VALID, "vocab_sise": 3})
    bad = {**VALID, "corpus": {**VALID["corpus"], "temprature": 2.0}}
    with pytest.raises(ConfigError, match=r"unknown key 'corpus.temprature' \(did you mean 'temperature'\?\)"):
        from_dict(TokenizerTrainConfig, bad)


def test_wrong_type_names_path():
    with pytest.raises(ConfigError, match=r"vocab_size: expected int, got str"):
        from_dict(TokenizerTrainConfig, {**VALID, "vocab_size": "big"})
    bad = {**VALID, "corpus": {"sources": [{"paths": ["a.txt"], "weight": "heavy"}]}}
    with pytest.raises(ConfigError, match=r"corpus.sources\[0\].weight: expected float, got str"):
        from_dict(TokenizerTrainConfig, bad)
    bad = {**VALID, "corpus": {"sources": [{"paths": "a.txt"}]}}
    with pytest.raises(ConfigError, match=r"corpus.sources\[0\].paths: expected a list"):
        from_dict(TokenizerTrainConfig, bad)


def test_missing_and_invalid_values(tmp_path):
    with pytest.raises(ConfigError, match="missing required key"):
        from_dict(TokenizerTrainConfig, {"source": "x"})
    with pytest.raises(ConfigError, match="vocab_size must be positive"):
        from_dict(TokenizerTrainConfig, {**VALID, "vocab_size": 0})
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        TokenizerTrainConfig.from_yaml(tmp_path / "bad.yaml")
