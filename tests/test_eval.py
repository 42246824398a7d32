"""``vocabshift eval``: tokenization per script, bits per byte, size, speed, nearest source tokens, report, CLI."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoTokenizer

from tests.conftest import udhr_lines
from tests.test_cli import run_cli
from vocabshift.config import TokenizerTrainConfig
from vocabshift.corpus import corpus_from_paths, iter_corpus
from vocabshift.errors import CorpusError, ModelError, OutputExistsError
from vocabshift.eval import EvalConfig, evaluate_model, lm_loss, write_report
from vocabshift.eval.lm import max_positions
from vocabshift.eval.neighbours import cosine_top_k, display_token
from vocabshift.eval.report import load_metrics, loss_series
from vocabshift.tokenization.stats import tokenizer_stats
from vocabshift.tokenization.surface import Surface
from vocabshift.tokenization.train import train_tokenizer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pico_llama(tokenizer_dir: Path, directory: Path, seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def _pico_bert(tokenizer_dir: Path, directory: Path, head: bool) -> Path:
    from transformers import BertConfig, BertForMaskedLM, BertModel

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    (BertForMaskedLM if head else BertModel)(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def spanish(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spa") / "spa.txt"
    path.write_text("\n".join(udhr_lines("spa")) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def spanish_tokenizer(tmp_path_factory, roberta_source, spanish) -> Path:
    """A byte-level BPE trained on the Spanish text: lower fertility there than the English source's."""
    out = tmp_path_factory.mktemp("spatok") / "tok"
    train_tokenizer(TokenizerTrainConfig(source=str(roberta_source), corpus=corpus_from_paths(spanish),
                                         vocab_size=900, out=str(out), show_progress=False))
    return out


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, roberta_source) -> Path:
    return _pico_llama(roberta_source, tmp_path_factory.mktemp("base") / "m")


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, spanish_tokenizer) -> Path:
    return _pico_llama(spanish_tokenizer, tmp_path_factory.mktemp("adapted") / "m", seed=1)


def _config(model: Path, corpus: Path, **kwargs) -> EvalConfig:
    defaults = {"speed_words": 200, "speed_repeats": 2, "max_documents": 40, "max_sequences": 8, "device": "cpu"}
    return EvalConfig(model=str(model), corpus=corpus_from_paths(corpus), **{**defaults, **kwargs})


@pytest.fixture(scope="module")
def evaluated(baseline, adapted, spanish):
    return evaluate_model(_config(adapted, spanish, baseline=str(baseline)))


# -- tokenization ------------------------------------------------------------------------------------------


def test_per_script_fertility_is_tokenizer_stats(evaluated, baseline, adapted, spanish):
    docs = list(iter_corpus(corpus_from_paths(spanish, max_documents=40)))
    old, new = tokenizer_stats({"old": AutoTokenizer.from_pretrained(baseline),
                                "new": AutoTokenizer.from_pretrained(adapted)}, docs)
    for key, expected in (("old", old), ("new", new)):
        got = evaluated.tokenization[key]
        assert set(got.scripts) == set(expected.scripts)
        for script, s in expected.scripts.items():
            assert got.scripts[script].fertility == pytest.approx(s.fertility)
            assert got.scripts[script].char_coverage == pytest.approx(s.char_coverage)
    # The Spanish tokenizer splits Spanish words into fewer pieces than the English one.
    assert evaluated.tokenization["new"].total.fertility < evaluated.tokenization["old"].total.fertility
    assert evaluated.documents == 40


# -- bits per byte -----------------------------------------------------------------------------------------


class UniformForCausalLM(nn.Module):
    """Logits all zero: every token has probability 1/V, so each predicted token costs ln V nats."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: object) -> object:
        logits = torch.zeros(*input_ids.shape, self.vocab_size) + 0 * self.dummy
        return type("Out", (), {"logits": logits})()


class UniformForMaskedLM(UniformForCausalLM):
    pass


def test_bits_per_byte_formula_on_a_uniform_model(tmp_path, roberta_source):
    tok = AutoTokenizer.from_pretrained(roberta_source)
    text = "All human beings are born free and equal in dignity and rights."
    corpus = tmp_path / "one.txt"
    corpus.write_text(text + "\n", encoding="utf-8")
    # The tokenizer's post-processor puts <s> ... </s> around a document; </s> is also the eos.
    n_tokens = len(tok(text)["input_ids"])
    model = UniformForCausalLM(len(tok))
    r = lm_loss(model, tok, corpus_from_paths(corpus), seq_len=n_tokens, max_documents=1, max_sequences=1)
    vocab = len(tok)
    assert r.objective == "clm" and not r.pseudo
    assert r.sequences == 1 and r.predicted_tokens == n_tokens - 1  # every position but the first
    assert r.bytes == len(text.encode("utf-8"))  # the whole document is covered
    assert r.loss == pytest.approx(math.log(vocab))
    assert r.total_nll_nats == pytest.approx((n_tokens - 1) * math.log(vocab))
    assert r.bits_per_byte == pytest.approx((n_tokens - 1) * math.log2(vocab) / len(text.encode("utf-8")))


def test_masked_lm_loss_is_pseudo_and_scores_masked_tokens_only(tmp_path, roberta_source):
    tok = AutoTokenizer.from_pretrained(roberta_source)
    corpus = tmp_path / "eng.txt"
    corpus.write_text("\n".join(udhr_lines("eng")) + "\n", encoding="utf-8")
    r = lm_loss(UniformForMaskedLM(len(tok)), tok, corpus_from_paths(corpus), seq_len=64, max_documents=50,
                max_sequences=4, mlm_probability=0.15)
    assert r.objective == "mlm" and r.pseudo and "masked" in r.note
    assert 0 < r.predicted_tokens < 0.5 * r.sequences * r.seq_len
    assert r.bits_per_byte == pytest.approx(r.predicted_tokens * math.log2(len(tok)) / r.bytes)


def test_lm_results_of_the_pipeline(evaluated):
    """Default protocol: per document, both models on the same 40 documents, windows of the model's positions."""
    assert evaluated.protocol == "document"
    for key in ("old", "new"):
        r = evaluated.lm[key]
        assert r is not None and r.objective == "clm" and math.isfinite(r.bits_per_byte) and r.bits_per_byte > 0
        assert r.protocol == "document" and r.documents == 40 and r.window == 256  # max_position_embeddings
        assert r.bits_per_byte == pytest.approx(r.total_nll_nats / math.log(2) / r.bytes)
        assert r.interval is not None and r.interval.low <= r.bits_per_byte <= r.interval.high
    assert evaluated.lm["old"].bytes == evaluated.lm["new"].bytes == evaluated.comparison.bytes
    assert evaluated.comparison.verdict in ("better", "worse", "within noise")


def test_packed_protocol_keeps_one_seq_len_for_loss_and_speed(baseline, adapted, spanish):
    packed = evaluate_model(_config(adapted, spanish, baseline=str(baseline), protocol="packed", speed_repeats=1,
                                    neighbours=0))
    assert packed.protocol == "packed" and packed.comparison is None
    assert any("packed protocol" in n for n in packed.notes)
    for key in ("old", "new"):
        r = packed.lm[key]
        assert r is not None and r.protocol == "packed" and 1 <= r.sequences <= 8
        assert r.seq_len == packed.speed[key].scoring.seq_len  # one seq_len for loss and speed, both models
    # Why it is not the default: each tokenizer's blocks cover a different amount of text.
    assert packed.lm["old"].bytes != packed.lm["new"].bytes


def test_max_positions_leaves_out_roberta_padding_offset():
    from transformers import GPT2Config, LlamaConfig, XLMRobertaConfig

    assert max_positions(XLMRobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
    assert max_positions(GPT2Config(n_positions=1024)) == 1024
    assert max_positions(LlamaConfig(max_position_embeddings=2048)) == 2048


# -- size and speed ----------------------------------------------------------------------------------------


def test_size_fields(evaluated, baseline, adapted):
    old, new = evaluated.size["old"], evaluated.size["new"]
    assert old.vocab_size == len(AutoTokenizer.from_pretrained(baseline))
    assert new.vocab_size == len(AutoTokenizer.from_pretrained(adapted))
    # Untied pico Llama: input embeddings and head, 32 columns each.
    assert new.embedding_parameters == 2 * 32 * new.embedding_rows
    assert new.parameters - old.parameters == 2 * 32 * (new.embedding_rows - old.embedding_rows)
    assert old.file_bytes > 0 and new.file_bytes > 0


def test_speed_fields_and_speedups(evaluated):
    """Both models read the same text; the speed-ups are ratios of the medians with a quartile range.
    (The measures themselves are tested in tests/test_eval_speed.py.)"""
    old, new = evaluated.speed["old"], evaluated.speed["new"]
    assert old.scoring.words == new.scoring.words == 200  # the same text for both
    assert new.scoring.tokens < old.scoring.tokens  # lower fertility: fewer forward tokens for the same words
    for s in (old, new):
        t = s.scoring.timing
        assert t.runs >= 2 and t.stopped in ("stable", "max_repeats", "max_seconds") and len(t.cpu) == t.runs
        assert t.q1 <= t.median <= t.q3 and t.min <= t.q1 and t.q3 <= t.max
        assert s.generation is not None and s.generation.new_tokens == 32 and s.generation.deterministic
    up = evaluated.speedups["scoring"]
    assert evaluated.speedup == up.estimate == pytest.approx(
        old.scoring.seconds_per_1000_words / new.scoring.seconds_per_1000_words)
    assert up.low <= up.estimate <= up.high and up.verdict in ("faster", "slower", "within noise")


# -- nearest source tokens ---------------------------------------------------------------------------------


def test_cosine_top_k_in_chunks_matches_brute_force():
    torch.manual_seed(0)
    q, keys = torch.randn(4, 8), torch.randn(23, 8)
    vals, idx = cosine_top_k(q, keys, 5, chunk_size=3)
    full = nn.functional.normalize(q, dim=-1) @ nn.functional.normalize(keys, dim=-1).T
    top = full.topk(5, dim=1)
    assert torch.equal(idx, top.indices) and torch.allclose(vals, top.values)


def test_display_token():
    assert display_token(Surface("casa", True, "normal")) == "▁casa"
    assert display_token(Surface("ción", False, "normal")) == "ción"
    assert display_token(Surface("", False, "byte", b"\xc3")) == "<0xC3>"
    assert display_token(Surface("<s>", False, "special")) == "<s>"
    assert display_token(Surface("\n", False, "normal")) == "\\n"


def test_copied_row_has_its_source_as_top_neighbour_with_id_map(tmp_path, baseline, spanish):
    """A new row that is a copy of source row X (FVT of a one-piece token) finds X at cosine 1."""
    from safetensors.torch import load_file, save_file

    model_dir = tmp_path / "m"
    shutil.copytree(baseline, model_dir)
    weights = load_file(model_dir / "model.safetensors")
    emb = weights["model.embed_tokens.weight"]
    copies = {40: 300, 41: 301, 42: 302}  # new id -> source row copied into it
    for new, src in copies.items():
        emb[new] = emb[src].clone()
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})
    id_map = [-1 if i in copies else i for i in range(emb.shape[0])]
    (model_dir / "id_map.json").write_text(json.dumps({"source": str(baseline), "id_map": id_map}))

    result = evaluate_model(_config(model_dir, spanish, baseline=str(baseline), neighbours=20, neighbours_k=3))
    nb = result.neighbours
    assert nb is not None and nb.selection == "id_map" and nb.new_tokens == 3 and nb.sample_size == 3
    tok = AutoTokenizer.from_pretrained(baseline)
    for t in nb.tokens:
        top = t.neighbours[0]
        assert top.id == copies[t.id] and top.cosine == pytest.approx(1.0, abs=1e-5)
        assert len(t.neighbours) == 3 and t.neighbours[1].cosine < 0.999
        assert top.token.lstrip("▁") == tok.convert_tokens_to_string([tok.convert_ids_to_tokens(top.id)]).strip()


def test_added_tokens_are_new_without_id_map_and_sample_is_seeded(tmp_path, baseline, spanish):
    from vocabshift.surgery.checkpoint import load_model

    tok = AutoTokenizer.from_pretrained(baseline)
    added = [f"palabra{i}" for i in range(30)]
    tok.add_tokens(added)
    model = load_model(baseline)
    old_rows = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        for k in range(len(added)):
            emb[old_rows + k] = emb[100 + k]
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")

    runs = [evaluate_model(_config(tmp_path / "m", spanish, baseline=str(baseline), neighbours=5, seed=s,
                                   speed_repeats=1, max_sequences=1)) for s in (0, 0, 1)]
    a, b, c = (r.neighbours for r in runs)
    assert a is not None and b is not None and c is not None
    assert a.selection == "vocabulary" and a.new_tokens == 30 and a.sample_size == 5
    assert [t.id for t in a.tokens] == [t.id for t in b.tokens] != [t.id for t in c.tokens]
    for t in a.tokens:
        assert t.neighbours[0].id == 100 + t.id - old_rows and t.neighbours[0].cosine == pytest.approx(1.0, abs=1e-5)


# -- report ------------------------------------------------------------------------------------------------


def test_report_tables_and_plots(tmp_path, evaluated):
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.parent.mkdir()
    lines = [{"step": s, "loss": 5.0 - 0.1 * s, "lr": {"embeddings": 1e-3}} for s in range(1, 11)]
    lines += [{"step": 5, "eval_loss": 4.8, "eval_bits_per_byte": 2.0}, {"step": 10, "eval_loss": 4.5,
                                                                          "eval_bits_per_byte": 1.9}]
    metrics.write_text("\n".join(json.dumps(r) for r in lines) + "\n{\"step\": 11, \"lo")  # killed mid-write
    extra = {"tokenizer": {"vocab_size": 900, "family": "byte_level_bpe"}, "init": {"method": "fvt", "new": 812},
             "train": "10 steps"}
    report = write_report(evaluated, tmp_path / "out", metrics_jsonl=metrics.parent, extra=extra)
    assert report == tmp_path / "out" / "report.md"
    text = report.read_text(encoding="utf-8")
    for heading in ("## Summary", "## Pipeline stages", "## Tokenization per script", "## Training",
                    "## Held-out language modelling", "## Size", "## Inference speed",
                    "## Nearest source tokens of new tokens"):
        assert heading in text
    assert "| Script | Words | Fertility old | Fertility new |" in text
    assert "| **All** |" in text and "Latin (Latn)" in text
    assert "| init | method: fvt; new: 812 |" in text
    assert "×" in text and "s per 1,000 words" in text
    for png in ("fertility.png", "size.png", "speed.png", "loss.png"):
        data = (tmp_path / "out" / png).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000
        assert f"]({png})" in text
    data = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert data["extra"] == extra and data["speedup"] == pytest.approx(evaluated.speedup)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary left


def test_loss_series_keeps_last_record_of_a_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0},
                                                       {"step": 2, "loss": 2.5}, {"step": 2, "eval_loss": 2.2}]))
    steps, losses, eval_steps, eval_losses, bpb = loss_series(load_metrics(path))
    assert steps == [1, 2] and losses == [3.0, 2.5] and eval_steps == [2] and eval_losses == [2.2] and bpb == []


def test_masked_lm_and_base_model_without_baseline(tmp_path, roberta_source, spanish):
    mlm = evaluate_model(_config(_pico_bert(roberta_source, tmp_path / "mlm", head=True), spanish, speed_repeats=1))
    r = mlm.lm["new"]
    assert r is not None and r.pseudo and mlm.speedup is None and mlm.neighbours is None
    assert r.protocol == "document" and r.objective == "mlm" and "PLL-word-l2r" in r.note
    assert any("pseudo-log-likelihood" in n for n in mlm.notes) and any("no baseline" in n for n in mlm.notes)
    assert r.window == 128  # BERT: max_position_embeddings
    base = evaluate_model(_config(_pico_bert(roberta_source, tmp_path / "base", head=False), spanish,
                                  speed_repeats=1, out=str(tmp_path / "out")))
    assert base.lm["new"] is None and any("no held-out loss" in n for n in base.notes)
    text = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "## Size" in text and "## Inference speed" in text and "## Pipeline stages" not in text


# -- CLI and errors ----------------------------------------------------------------------------------------


def test_cli_json_and_out(capsys, tmp_path, baseline, adapted, spanish):
    out = tmp_path / "report"
    code, stdout, stderr = run_cli(capsys, "eval", "--model", adapted, "--baseline", baseline, "--corpus", spanish,
                                   "--json", "--out", out, "--max-documents", 20, "--max-sequences", 2,
                                   "--speed-words", 100, "--speed-repeats", 1, "--neighbours", 4, "--device", "cpu")
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["tokenization"]["new"]["total"]["fertility"] > 0
    assert data["lm"]["old"]["bits_per_byte"] > 0 and data["speedup"] > 0
    assert data["neighbours"]["sample_size"] == 4 and data["config"]["max_documents"] == 20
    assert json.loads((out / "eval.json").read_text())["speedup"] == data["speedup"]
    assert (out / "report.md").is_file() and (out / "fertility.png").read_bytes()[:8] == PNG_MAGIC

    code, _, err = run_cli(capsys, "eval", "--model", adapted, "--corpus", spanish, "--out", out)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "--force" in err

    code, stdout, err = run_cli(capsys, "eval", "--model", adapted, "--corpus", spanish, "--max-documents", 10,
                                "--speed-words", 50, "--speed-repeats", 1, "--device", "cpu")
    assert code == 0, err
    assert "Tokenization per script" in stdout and "Inference speed" in stdout


def _bad_inputs(tmp: Path, good_model: Path, corpus: Path) -> dict[str, tuple[list[object], str]]:
    empty = tmp / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    broken = tmp / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"garbage")
    weightless = tmp / "weightless"
    weightless.mkdir()
    (weightless / "config.json").write_text("{}")
    return {
        "missing model": (["--model", tmp / "nope", "--corpus", corpus], "no such model directory"),
        "no weights": (["--model", weightless, "--corpus", corpus], "no model weights"),
        "empty corpus": (["--model", good_model, "--corpus", empty], "empty.txt"),
        "missing corpus": (["--model", good_model, "--corpus", tmp / "nothing.txt"], "nothing.txt"),
        "broken baseline": (["--model", good_model, "--baseline", broken, "--corpus", corpus], "broken"),
        "bad objective": (["--model", good_model, "--corpus", corpus, "--objective", "mlm"], "mlm"),
    }


@pytest.mark.parametrize("case", ["missing model", "no weights", "empty corpus", "missing corpus", "broken baseline",
                                  "bad objective"])
def test_cli_errors_one_line_exit_1_nothing_written(capsys, tmp_path, adapted, spanish, case):
    args, expected = _bad_inputs(tmp_path, adapted, spanish)[case]
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "eval", *args, "--out", out, "--speed-repeats", 1, "--max-documents", 10)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert not out.exists()


def test_library_errors_name_the_baseline(tmp_path, adapted, spanish):
    broken = tmp_path / "base"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (broken / "model.safetensors").write_bytes(b"garbage")
    shutil.copy(adapted / "tokenizer.json", broken / "tokenizer.json")
    shutil.copy(adapted / "tokenizer_config.json", broken / "tokenizer_config.json")
    with pytest.raises(ModelError, match="baseline model") as info:
        evaluate_model(_config(adapted, spanish, baseline=str(broken), out=str(tmp_path / "o")))
    assert str(broken) in str(info.value) and not (tmp_path / "o").exists()
    empty = tmp_path / "e.txt"
    empty.write_text("")
    with pytest.raises(CorpusError):
        evaluate_model(_config(adapted, empty))
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "report.md").write_text("mine")
    with pytest.raises(OutputExistsError):
        evaluate_model(_config(adapted, spanish, out=str(tmp_path / "o")))
    assert (tmp_path / "o" / "report.md").read_text() == "mine"


def test_seq_len_longer_than_positions_fails_before_loading(tmp_path, adapted, spanish):
    from vocabshift.errors import ConfigError

    with pytest.raises(ConfigError, match="seq_len 512 is longer than the 256 positions"):
        evaluate_model(_config(adapted, spanish, seq_len=512))


def test_failed_report_leaves_no_directory(tmp_path, evaluated, monkeypatch):
    import vocabshift.eval.report as report

    def boom(*_: object) -> None:
        raise RuntimeError("plot failed")

    monkeypatch.setattr(report, "plot_speed", boom)
    with pytest.raises(RuntimeError):
        write_report(evaluated, tmp_path / "new" / "out")
    assert not (tmp_path / "new" / "out").exists()


def test_same_vocabulary_has_no_new_tokens(tmp_path, baseline, spanish):
    result = evaluate_model(_config(baseline, spanish, baseline=str(baseline), speed_repeats=1, max_sequences=1,
                                    out=str(tmp_path / "out")))
    assert result.neighbours is not None and result.neighbours.new_tokens == 0 and result.neighbours.tokens == []
    assert result.tokenization["old"].total.fertility == result.tokenization["new"].total.fertility
    assert "The model has no new tokens" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
