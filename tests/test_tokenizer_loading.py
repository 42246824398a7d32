"""``load_hf_tokenizer`` gives ``AutoTokenizer`` a light config (``config.json`` as a plain object) when the
tokenizer names its class: the same tokenizer as ``AutoTokenizer`` loading the config itself, without
importing transformers' config classes and model-loading code (1-2 s of every stage's start-up)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tests.conftest import udhr_lines
from vocabshift.tokenization.source import _light_config, load_hf_tokenizer

TEXT = [*udhr_lines("eng")[:3], *udhr_lines("spa")[:2], "  tabs\tand  spaces, 12345 <s> </s> [MASK] ¿ñ?"]


def _folder(src: Path, dst: Path, config: dict | None, tokenizer_class: str | None = "keep") -> Path:
    shutil.copytree(src, dst)
    if config is not None:
        (dst / "config.json").write_text(json.dumps(config))
    if tokenizer_class != "keep":
        path = dst / "tokenizer_config.json"
        data = json.loads(path.read_text())
        if tokenizer_class is None:
            data.pop("tokenizer_class", None)
        else:
            data["tokenizer_class"] = tokenizer_class
        path.write_text(json.dumps(data))
    return dst


def _same(light: object, full: object, tmp_path: Path) -> None:
    assert type(light) is type(full)
    assert len(light) == len(full) and light.get_vocab() == full.get_vocab()
    assert light.all_special_tokens == full.all_special_tokens
    assert [light.encode(t) for t in TEXT] == [full.encode(t) for t in TEXT]
    assert [light.decode(light.encode(t)) for t in TEXT] == [full.decode(full.encode(t)) for t in TEXT]
    a, b = tmp_path / "saved-light", tmp_path / "saved-full"
    light.save_pretrained(a)
    full.save_pretrained(b)
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for path in b.glob("*.json"):
        assert json.loads((a / path.name).read_text()) == json.loads(path.read_text()), path.name


LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 49152}
CASES = {
    # SmolLM2's tokenizer as saved by transformers 5 (TokenizersBackend) in a Llama folder
    "smollm2": ("smollm2_source", LLAMA, "keep"),
    # the class SmolLM2 ships with: not Llama's own, so AutoTokenizer checks it against model_type
    "smollm2-gpt2-class": ("smollm2_source", LLAMA, "GPT2Tokenizer"),
    # a byte-level tokenizer.json declared LlamaTokenizerFast: transformers switches to TokenizersBackend
    "smollm2-declared-llama": ("smollm2_source", LLAMA, "LlamaTokenizerFast"),
    "llama2-sentencepiece": ("llama2_source", LLAMA, "keep"),
    "xlmr-unigram": ("xlmr_source", {"model_type": "xlm-roberta", "architectures": ["XLMRobertaForMaskedLM"]}, "keep"),
    "roberta-bpe": ("roberta_source", {"model_type": "roberta", "architectures": ["RobertaForMaskedLM"]}, "keep"),
    "minilm-as-shipped": ("minilm_source", None, "keep"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_light_config_loads_the_same_tokenizer(case, request, tmp_path):
    fixture, config, tokenizer_class = CASES[case]
    folder = _folder(request.getfixturevalue(fixture), tmp_path / "tok", config, tokenizer_class)
    assert _light_config(folder) is not None  # the light path is the one under test
    _same(load_hf_tokenizer(folder), AutoTokenizer.from_pretrained(str(folder)), tmp_path)


def test_the_real_config_is_kept_where_transformers_needs_it(smollm2_source, tmp_path):
    # no tokenizer_class: AutoTokenizer picks the class from type(config), which needs the config class
    bare = _folder(smollm2_source, tmp_path / "bare", LLAMA, None)
    assert _light_config(bare) is None
    _same(load_hf_tokenizer(bare), AutoTokenizer.from_pretrained(str(bare)), tmp_path / "bare-saved")
    # a model type transformers does not know, no config.json, config.json not an object
    assert _light_config(_folder(smollm2_source, tmp_path / "unknown", {"model_type": "no-such-model"})) is None
    assert _light_config(_folder(smollm2_source, tmp_path / "none", None)) is None
    broken = _folder(smollm2_source, tmp_path / "broken", None)
    (broken / "config.json").write_text("[1, 2]")
    assert _light_config(broken) is None


def test_loading_a_tokenizer_beside_a_llama_config_imports_no_config_class(smollm2_source, tmp_path):
    folder = _folder(smollm2_source, tmp_path / "tok", LLAMA, "GPT2Tokenizer")
    script = ("import sys\n"
              "from vocabshift.tokenization.source import load_hf_tokenizer\n"
              f"tok = load_hf_tokenizer({str(folder)!r})\n"
              "print(type(tok).__name__, 'transformers.models.llama.configuration_llama' in sys.modules, "
              "'torch.distributed.tensor' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split()[-3:] == [type(AutoTokenizer.from_pretrained(str(folder))).__name__, "False", "False"]
