"""``distill`` (AweDist) on hand-checkable teachers, then through the init glue on a pico Llama."""

from __future__ import annotations

import json

import pytest
import torch

from vocabshift.errors import ConfigError, InitError
from vocabshift.init import COPIED, FALLBACK, DistillConfig, InitInputs, Teacher, run_init_method


def cumsum_body(embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A causal 'model' whose hidden state is the running sum of its inputs: a token that stands for two
    pieces is exactly their sum, so the distillation optimum is known."""
    return torch.cumsum(embeds * mask[..., None].to(embeds.dtype), dim=1)


def _inputs(contexts: list[list[int]], *, body=cumsum_body, prefix: int = 0, output: torch.Tensor | None = None,
            causal: bool = True, seed: int = 0) -> InitInputs:
    # Source: 6 tokens in 4 dimensions; target: the 6 source tokens (copied) + 2 new ones.
    gen = torch.Generator().manual_seed(3)
    emb = torch.randn(6, 4, generator=gen)
    copy = torch.tensor([0, 1, 2, 3, 4, 5, -1, -1])
    width = max(len(c) for c in contexts)
    ctx = torch.tensor([c + [-1] * (width - len(c)) for c in contexts])
    return InitInputs(source_embeddings=emb, copy=copy, shared=copy.clone(),
                      decompositions=[[i] for i in range(6)] + [[2, 3], [4, 1, 5]], seed=seed,
                      teacher=Teacher(body=body, contexts=ctx, prefix=prefix, causal=causal,
                                      output_embeddings=output))


CONTEXTS = [[1, 6, 2, 7], [6, 3, 3], [5, 7, 6, 1, 2], [2, 6], [7, 4]]


def test_distill_recovers_the_sum_of_the_pieces():
    inputs = _inputs(CONTEXTS)
    result = run_init_method("distill", inputs, {"lr": 0.05, "epochs": 300, "batch_size": 5, "ce_weight": 0})
    emb = inputs.source_embeddings
    # The running sum after the new token equals the teacher's after its last piece iff row = sum of pieces.
    torch.testing.assert_close(result.rows[6], emb[2] + emb[3], atol=1e-3, rtol=0)
    torch.testing.assert_close(result.rows[7], emb[4] + emb[1] + emb[5], atol=1e-3, rtol=0)
    assert result.info["loss_last"] < 1e-6 < result.info["loss_first"]
    assert result.info["with_context"] == 2 and result.info["no_context"] == 0 and result.info["windows"] == 5
    # kept rows are the source rows, bit for bit
    assert torch.equal(result.rows[:6], emb) and bool((result.origin[:6] == COPIED).all())


def test_distill_starts_from_the_fvt_mean_and_is_deterministic():
    inputs = _inputs(CONTEXTS)
    start = run_init_method("distill", inputs, {"max_steps": 1, "lr": 1e-12})
    emb = inputs.source_embeddings
    torch.testing.assert_close(start.rows[6], (emb[2] + emb[3]) / 2, atol=1e-6, rtol=0)
    a = run_init_method("distill", inputs, {"lr": 0.01, "epochs": 3, "batch_size": 2})
    b = run_init_method("distill", inputs, {"lr": 0.01, "epochs": 3, "batch_size": 2})
    assert a.info["config"]["ce_weight"] == 1.0  # the default keeps the cross-entropy term
    assert torch.equal(a.rows, b.rows)
    c = run_init_method("distill", _inputs(CONTEXTS, seed=1), {"lr": 0.01, "epochs": 3, "batch_size": 2})
    assert not torch.equal(a.rows, c.rows)  # the window order follows the seed


def test_a_teacher_that_owns_its_model_releases_it_after_training():
    """init's lean path loads the model for distill alone: distill drops it before building its output
    (the peak memory of an init); a teacher that does not own its model stays usable."""
    import gc
    import weakref

    class Model(torch.nn.Module):
        def forward(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return cumsum_body(embeds, mask)

    model = Model()
    alive = weakref.ref(model)
    body = model.forward
    inputs = _inputs(CONTEXTS, body=body)
    inputs.teacher.owns_model = True
    del model, body
    a = run_init_method("distill", inputs, {"lr": 0.01, "epochs": 2, "batch_size": 2})
    gc.collect()
    assert alive() is None
    with pytest.raises(RuntimeError, match="released"):
        inputs.teacher.body(torch.zeros(1, 2, 4), torch.ones(1, 2))
    shared = _inputs(CONTEXTS)  # owns_model False: the same inputs run twice, same rows
    b = run_init_method("distill", shared, {"lr": 0.01, "epochs": 2, "batch_size": 2})
    assert torch.equal(a.rows, b.rows)
    assert torch.equal(b.rows, run_init_method("distill", shared, {"lr": 0.01, "epochs": 2, "batch_size": 2}).rows)


def test_a_token_no_window_shows_keeps_its_start_row_and_is_counted():
    inputs = _inputs([[1, 6, 2], [6, 0]])
    result = run_init_method("distill", inputs, {"lr": 0.05, "epochs": 50, "ce_weight": 0})
    emb = inputs.source_embeddings
    assert result.info["no_context"] == 1 and result.info["with_context"] == 1
    assert int(result.origin[7]) == FALLBACK
    torch.testing.assert_close(result.rows[7], (emb[4] + emb[1] + emb[5]) / 3, atol=1e-6, rtol=0)
    assert result.info["counts"] == {"copied": 6, "computed": 1, "fallback": 1}


def test_untied_head_new_output_rows():
    out = torch.randn(6, 4, generator=torch.Generator().manual_seed(9))
    for policy, expected in (("mean", (out[2] + out[3]) / 2), ("zero", torch.zeros(4))):
        result = run_init_method("distill", _inputs(CONTEXTS, output=out), {"output": policy, "max_steps": 2})
        assert result.output_rows is not None and torch.equal(result.output_rows[:6], out)
        torch.testing.assert_close(result.output_rows[6], expected, atol=1e-6, rtol=0)
    trained = run_init_method("distill", _inputs(CONTEXTS, output=out), {"output": "train", "lr": 0.05,
                                                                        "epochs": 20})
    assert not torch.allclose(trained.output_rows[6], (out[2] + out[3]) / 2)  # moved by cross-entropy
    assert torch.equal(trained.output_rows[:6], out)


def test_cross_entropy_term_moves_the_rows_differently():
    plain = run_init_method("distill", _inputs(CONTEXTS), {"lr": 0.01, "epochs": 5, "ce_weight": 0})
    with_ce = run_init_method("distill", _inputs(CONTEXTS), {"lr": 0.01, "epochs": 5, "ce_weight": 1.0})
    assert not torch.equal(plain.rows[6:], with_ce.rows[6:])
    assert torch.isfinite(with_ce.rows).all()


def test_micro_batches_add_up_to_the_whole_batch():
    """A step over micro-batches of 1 or 2 windows takes the same step as the whole batch at once: the parts'
    losses are normalized by the whole batch (mse and the untied head's cross-entropy). The tied head's
    auto-weighted cross-entropy is weighted per part, so only the distillation-only run is compared there."""
    out = torch.randn(6, 4, generator=torch.Generator().manual_seed(9))
    for inputs, options in ((_inputs(CONTEXTS), {"ce_weight": 0}),
                            (_inputs(CONTEXTS, output=out), {"ce_weight": 0, "output": "train"})):
        runs = [run_init_method("distill", inputs, {"lr": 0.02, "epochs": 4, "batch_size": 5, "micro_batch": m,
                                                    **options}) for m in (5, 2, 1)]
        for other in runs[1:]:
            torch.testing.assert_close(other.rows, runs[0].rows, atol=1e-5, rtol=0)
            torch.testing.assert_close(other.info["loss_curve"], runs[0].info["loss_curve"], atol=1e-5, rtol=0)
            if options.get("output"):
                torch.testing.assert_close(other.output_rows, runs[0].output_rows, atol=1e-5, rtol=0)
        emb = inputs.source_embeddings
        assert (runs[0].rows[6] - (emb[2] + emb[3]) / 2).abs().max() > 1e-2  # it moved from the start row
    tied = [run_init_method("distill", _inputs(CONTEXTS), {"lr": 0.02, "epochs": 4, "batch_size": 5,
                                                           "micro_batch": m}) for m in (5, 1)]
    assert all(torch.isfinite(r.rows).all() for r in tied)


@pytest.mark.parametrize("options, field", [({"contexts_per_token": 0}, "contexts_per_token"),
                                            ({"micro_batch": 0}, "micro_batch"), ({"precision": "fp16"}, "precision"),
                                            ({"lr": -1.0}, "lr"), ({"output": "tied"}, "output"),
                                            ({"ce_weight": -0.5}, "ce_weight"), ({"max_steps": 0}, "max_steps")])
def test_bad_options(options, field):
    with pytest.raises(ConfigError, match=field):
        DistillConfig.from_dict(options)


def test_without_a_teacher_the_error_names_it():
    inputs = _inputs(CONTEXTS)
    inputs.teacher = None
    with pytest.raises(InitError, match="teacher"):
        run_init_method("distill", inputs)


# -- through the init stage, on pico models with a real Spanish tokenizer ---------------------------------

from tests.test_init_apply import _pico_bert_mlm, _pico_llama  # noqa: E402


@pytest.fixture(scope="module")
def spanish_file(tmp_path_factory):
    from tests.test_pipeline import _bible

    path = tmp_path_factory.mktemp("spa") / "spa.txt"
    path.write_text("\n".join(_bible("spa", 3000)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def target_bpe(tmp_path_factory, roberta_source, spanish_file):
    from vocabshift.config import TokenizerTrainConfig
    from vocabshift.corpus import corpus_from_paths
    from vocabshift.tokenization.train import train_tokenizer

    out = tmp_path_factory.mktemp("tgt") / "tok"
    train_tokenizer(TokenizerTrainConfig(source=str(roberta_source), corpus=corpus_from_paths([spanish_file]),
                                         vocab_size=600, out=str(out), show_progress=False))
    return out


@pytest.fixture(scope="module")
def llama_tied(tmp_path_factory, roberta_source):
    return _pico_llama(roberta_source, tmp_path_factory.mktemp("llt") / "m", tied=True)


@pytest.fixture(scope="module")
def llama_untied(tmp_path_factory, roberta_source):
    return _pico_llama(roberta_source, tmp_path_factory.mktemp("llu") / "m", tied=False)


@pytest.fixture(scope="module")
def bert_mlm(tmp_path_factory, roberta_source):
    return _pico_bert_mlm(roberta_source, tmp_path_factory.mktemp("bert") / "m")


def _distill(model, out, spanish_file, tokenizer=None, **options):
    import json as _json

    from vocabshift.corpus import corpus_from_paths
    from vocabshift.init.apply import InitConfig, init_model

    opts = {"max_contexts": 64, "context_length": 24, "lr": 1e-2, "epochs": 2, **options}
    init_model(InitConfig(method="distill", model=str(model), tokenizer=str(tokenizer) if tokenizer else None,
                          out=str(out), corpus=corpus_from_paths([spanish_file]), options=opts, device="cpu"))
    return _json.loads((out / "init_report.json").read_text())


def test_replacement_on_a_tied_llama(llama_tied, target_bpe, spanish_file, tmp_path):
    from transformers import AutoModelForCausalLM

    report = _distill(llama_tied, tmp_path / "out", spanish_file, target_bpe)
    info = report["matrices"]["input_embeddings"]["info"]
    assert report["teacher"]["causal"] and report["teacher"]["windows"] == info["windows"] == 64
    assert info["steps"] == 8 and info["loss_last"] < info["loss_first"]
    assert info["with_context"] > 50 and info["counts"]["computed"] == info["with_context"]
    src, new = AutoModelForCausalLM.from_pretrained(llama_tied), AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert new.get_output_embeddings().weight.data_ptr() == new.get_input_embeddings().weight.data_ptr()
    import json as _json

    id_map = torch.tensor(_json.loads((tmp_path / "out" / "id_map.json").read_text())["id_map"])
    kept = id_map >= 0
    assert torch.equal(new.get_input_embeddings().weight[kept], src.get_input_embeddings().weight[id_map[kept]])
    assert "lm_head" not in report["matrices"]


@pytest.mark.parametrize("fixture", ["llama_untied", "bert_mlm"])
def test_the_lean_path_loads_the_model_for_the_method_and_writes_what_in_memory_writes(fixture, target_bpe,
                                                                                       spanish_file, tmp_path,
                                                                                       request):
    """distill on the lean path (model loaded for the method, freed, the output streamed from the source
    files) writes the same tensors as with the model held in memory; bf16 precision runs the teacher in
    bf16 and still writes fp32 rows close to them."""
    from safetensors.torch import load_file

    from vocabshift.corpus import corpus_from_paths
    from vocabshift.init.apply import InitConfig, init_model

    model = request.getfixturevalue(fixture)
    outs = {}
    for name, extra in (("lean", {}), ("memory", {"in_memory": True}),
                        ("bf16", {"options": {"max_contexts": 16, "epochs": 1, "precision": "bf16"}})):
        out = tmp_path / name
        init_model(InitConfig(method="distill", model=str(model), tokenizer=str(target_bpe), out=str(out),
                              corpus=corpus_from_paths([spanish_file]), device="cpu",
                              **{"options": {"max_contexts": 16, "epochs": 1}, **extra}))
        outs[name] = (load_file(str(out / "model.safetensors")), json.loads((out / "init_report.json").read_text()))
    (lean, r_lean), (memory, r_memory), (bf16, r_bf16) = outs["lean"], outs["memory"], outs["bf16"]
    assert r_lean["teacher"]["weights"] == "loaded for the method" and r_lean["teacher"]["dtype"] == "float32"
    assert r_memory["teacher"]["weights"] == "the model init holds"
    assert r_bf16["teacher"]["dtype"] == "bfloat16"
    assert lean.keys() == memory.keys() == bf16.keys()
    for name, tensor in lean.items():
        assert tensor.dtype == memory[name].dtype == bf16[name].dtype == torch.float32
        assert torch.equal(tensor, memory[name]), name
    emb = next(n for n in lean if "word_embeddings" in n or "embed_tokens" in n)
    new = torch.tensor(json.loads((tmp_path / "lean" / "id_map.json").read_text())["id_map"]) < 0
    assert not torch.equal(lean[emb][new], bf16[emb][new])  # bf16 passes: other rows, of the same kind
    assert (lean[emb][new] - bf16[emb][new]).norm() < 0.5 * lean[emb][new].norm()


def test_untied_head_gets_its_rows_from_the_same_run(llama_untied, target_bpe, spanish_file, tmp_path):
    from transformers import AutoModelForCausalLM

    report = _distill(llama_untied, tmp_path / "out", spanish_file, target_bpe, max_contexts=16, epochs=1)
    assert set(report["matrices"]) == {"input_embeddings"}  # the output rows came with the input rows
    new = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    w_in, w_out = new.get_input_embeddings().weight, new.get_output_embeddings().weight
    assert w_in.data_ptr() != w_out.data_ptr() and torch.isfinite(w_out).all()


def test_after_extend_and_on_an_encoder(llama_untied, bert_mlm, target_bpe, spanish_file, tmp_path):
    from vocabshift.vocabulary import ExtendConfig, extend

    ext = tmp_path / "ext"
    extend(ExtendConfig(model=str(llama_untied), tokenizer=str(target_bpe), out=str(ext)))
    report = _distill(ext, tmp_path / "out", spanish_file, max_contexts=16, epochs=1)
    assert report["mode"] == "id_map" and report["teacher"]["windows"] == 16
    report = _distill(bert_mlm, tmp_path / "bert", spanish_file, target_bpe, max_contexts=16, epochs=1)
    assert not report["teacher"]["causal"] and report["matrices"]["input_embeddings"]["info"]["steps"] == 1


def test_distill_without_corpus_or_with_useless_text_writes_nothing(llama_tied, target_bpe, tmp_path):
    from vocabshift.corpus import corpus_from_paths
    from vocabshift.init.apply import InitConfig, init_model

    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="corpus"):
        init_model(InitConfig(method="distill", model=str(llama_tied), tokenizer=str(target_bpe), out=str(out)))
    assert not out.exists()
    english = tmp_path / "eng.txt"
    english.write_text("\n".join(["the the the"] * 20) + "\n", encoding="utf-8")
    with pytest.raises(InitError, match="no window of the corpus shows any of the"):
        init_model(InitConfig(method="distill", model=str(llama_tied), tokenizer=str(target_bpe), out=str(out),
                              corpus=corpus_from_paths([english])))
    assert not out.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    cpu = run_init_method("distill", _inputs(CONTEXTS), {"lr": 0.01, "epochs": 3})
    gpu_inputs = _inputs(CONTEXTS)
    gpu_inputs.device = "cuda"
    gpu = run_init_method("distill", gpu_inputs, {"lr": 0.01, "epochs": 3})
    assert gpu.rows.device.type == "cpu"
    torch.testing.assert_close(gpu.rows, cpu.rows, atol=1e-4, rtol=1e-4)


def test_windows_are_chosen_for_coverage_not_corpus_order():
    """The greedy choice takes windows that add new tokens before more contexts of tokens already shown,
    stops when nothing is added, and keeps corpus order; first-come would have taken windows 0 and 1."""
    import numpy as np

    from vocabshift.init.contexts import _choose

    need = np.zeros(20, dtype=bool)
    need[[10, 11, 12, 13]] = True  # the new tokens
    pool = [np.array([1, 10, 2]), np.array([10, 3]), np.array([11, 12, 4]), np.array([13, 10, 11]),
            np.array([12, 5])]
    chosen, counts = _choose(pool, need, per_token=1, max_windows=None)
    assert chosen == [2, 3]  # {11, 12} and {13, 10, 11}: every new token once, two windows
    assert counts[[10, 11, 12, 13]].tolist() == [1, 2, 1, 1]
    # two contexts wanted: the best two as before, then one of the three windows that add 1/2 each
    chosen, counts = _choose(pool, need, per_token=2, max_windows=3)
    assert len(chosen) == 3 and {2, 3} <= set(chosen) and chosen == sorted(chosen)
