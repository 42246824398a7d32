"""Export a training run as a plain transformers checkpoint (``vocabshift export``).

The run's model is rebuilt exactly as training built it (same LoRA targets, same factorized embedding)
and the checkpoint's trainable tensors are loaded into it; then LoRA is merged into the base weights
(PEFT ``merge_and_unload``), a factorized embedding is materialized into a dense ``nn.Embedding``,
and a tied head is re-tied to it, so ``config.tie_word_embeddings`` stays true and correct (the PEFT
``modules_to_save`` trap — an untied copy under a config that says tied — cannot happen: the head was
never copied). The output directory holds safetensors weights, ``config.json``,
``generation_config.json`` (decoders), the tokenizer files, a model card ``README.md`` and
``export_report.json``; it loads with ``AutoModelForMaskedLM`` / ``AutoModelForCausalLM`` and no
custom code.

With ``verify`` (the default), the written model is loaded back and its logits on a probe batch are
compared with the trained model's before merging (fp32 exports must agree to 1e-3; bf16/fp16
exports only report the difference).

With ``gguf``, the written folder is also converted to one GGUF file for llama.cpp / ollama
(:mod:`vocabshift.gguf_export`, which reads the source's pre-tokenizer name through the run's model
folder) and, with ``verify``, loaded back with transformers and compared with the exported model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vocabshift.config import ConfigMixin
from vocabshift.errors import ConfigError, ModelError
from vocabshift.outputs import (
    atomic_output_dir,
    atomic_output_file,
    check_output_path,
    input_paths,
    output_guard,
    refuse_overlap,
    writes_output,
)
from vocabshift.sentence_transformer_files import copy_sentence_transformer_files
from vocabshift.tokenization.source import copy_tokenizer_files

log = logging.getLogger(__name__)

EXPORT_REPORT_FILE = "export_report.json"
ADAPTER_DIR = "adapter"
DTYPES = ("auto", "float32", "bfloat16", "float16")
FP32_TOLERANCE = 1e-4  # relative to the largest logit (at least 1): see _verify
_STAGE_REPORTS = ("init_report.json", "extend_report.json", "prune_report.json")


@dataclass
class ExportConfig(ConfigMixin):
    """Merge a training run into a stand-alone transformers checkpoint (``vocabshift export``)."""

    run: str = field(metadata={"help": "Run directory of `vocabshift train`."})
    out: str = field(metadata={"help": "Output model directory (written atomically)."})
    checkpoint: str | None = field(default=None, metadata={
        "help": "Checkpoint to export: a step number or a checkpoint directory (default: the run's latest)."})
    save_adapter: bool = field(default=False, metadata={
        "help": "Also write the PEFT adapter (LoRA + trained embeddings) to OUT/adapter/, loadable with "
                "PeftModel.from_pretrained on the run's model."})
    dtype: str = field(default="auto", metadata={
        "help": "Weights dtype: auto (the run's model's dtype), float32, bfloat16 or float16."})
    verify: bool = field(default=True, metadata={
        "help": "Reload the written model and compare its logits with the trained model's."})
    gguf: str | None = field(default=None, metadata={
        "help": "Also write the model as one GGUF file for llama.cpp / ollama (Llama, Mistral, Qwen2, SmolLM2)."})
    gguf_type: str = field(default="auto", metadata={
        "help": "GGUF tensor type: auto (as the exported weights), f32, f16, bf16 or q8_0."})
    gguf_pre: str | None = field(default=None, metadata={
        "help": "llama.cpp pre-tokenizer name for the GGUF (default: the source model's; see docs/use-with/llama-cpp.md)."})
    force: bool = field(default=False, metadata={"help": "Replace an existing output directory (and GGUF file)."})

    def __post_init__(self) -> None:
        from vocabshift.gguf_export import check_gguf_pre, check_gguf_type

        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        check_gguf_type(self.gguf_type)
        check_gguf_pre(self.gguf_pre)
        if self.gguf is not None and not str(self.gguf).strip():
            raise ConfigError("gguf must name a file (or be left out)")


@dataclass
class ExportResult:
    """What export wrote."""

    out: Path
    report: dict[str, Any]


def resolve_checkpoint(run_dir: Path, checkpoint: str | None) -> Path:
    """The checkpoint directory named by ``checkpoint`` (a step number or a path), or the latest one."""
    from vocabshift.train.checkpoint import TRAINABLE_FILE, latest_checkpoint, list_checkpoints, step_dir_name

    if checkpoint is None:
        path = latest_checkpoint(run_dir)
        if path is None:
            raise ConfigError("the run has no checkpoint to export", path=run_dir,
                              hint="train at least until the first checkpoint (or Ctrl-C, which saves one)")
    elif checkpoint.isdigit():
        path = run_dir / "checkpoints" / step_dir_name(int(checkpoint))
        if not path.is_dir():
            have = ", ".join(p.name for p in list_checkpoints(run_dir)) or "none"
            raise ConfigError(f"no checkpoint for step {checkpoint} (have: {have})", path=run_dir)
    else:
        path = Path(checkpoint)
    if not (path / TRAINABLE_FILE).is_file():
        raise ConfigError(f"not a training checkpoint (no {TRAINABLE_FILE})", path=path)
    return path


def _probe_ids(tokenizer: Any, vocab_size: int) -> Any:
    """A fixed [2, 24] batch of ids: the tokenizer's own ids on some text, topped up with spread-out ids."""
    import torch

    ids = tokenizer("The quick brown fox jumps over the lazy dog. 0123456789 ¿Qué tal? Ñandú.",
                    add_special_tokens=False)["input_ids"][:24]
    spread = torch.linspace(0, vocab_size - 1, 48).long().tolist()
    ids = (ids + spread)[:48]
    return torch.tensor(ids, dtype=torch.long).view(2, 24)


def _stage_reports(model_dir: Path) -> dict[str, Any]:
    reports = {}
    for name in (*_STAGE_REPORTS, "id_map.json"):
        path = model_dir / name
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                continue
            if name == "id_map.json":
                data = {k: v for k, v in data.items() if k != "id_map"}  # the map itself is too long for a report
            reports[name.removesuffix(".json")] = data
    return reports


@writes_output
def export(config: ExportConfig) -> ExportResult:
    """Merge the run's trained adapters and embeddings into its model and write a transformers checkpoint."""
    import torch
    from transformers import AutoTokenizer

    from vocabshift.surgery.checkpoint import parameter_count, save_model
    from vocabshift.surgery.layout import locate
    from vocabshift.train.checkpoint import (
        STATE_FILE,
        TRAINABLE_FILE,
        load_trainable,
        model_fingerprint,
        read_metrics,
        read_run,
    )
    from vocabshift.train.config import TrainConfig
    from vocabshift.train.loop import build_setup, load_for_training
    from vocabshift.train.peft_setup import describe_parameters, merge_for_export

    t0 = time.perf_counter()
    out = check_output_path(config.out, config.force)
    gguf_path, gguf_inside = _gguf_output(config, out)
    run_dir = Path(config.run)
    run = read_run(run_dir)
    ckpt = resolve_checkpoint(run_dir, config.checkpoint)
    train_config = TrainConfig.from_dict(run["config"])
    model_dir = Path(run["model"]["path"])
    # The run's model is an input too, although only run.json names it.
    inputs = [("model", model_dir)] + [("corpus", p) for _, p in input_paths(train_config)]
    refuse_overlap(out, inputs)
    if not model_dir.is_dir():
        raise ConfigError("the run's model directory is gone", path=model_dir,
                          hint="export needs the model the run trained (its frozen weights are not in the run)")
    if gguf_path is not None:
        from vocabshift.gguf_export import check_gguf_model

        check_gguf_model(model_dir, config.gguf_pre)  # a BERT, or no pre-tokenizer name: say so before merging

    model = load_for_training(model_dir, train_config.attn_implementation)
    saved = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    source_dtype = getattr(torch, str(saved.get("dtype") or saved.get("torch_dtype") or "float32"), torch.float32)
    now = model_fingerprint(model_dir, model.get_input_embeddings().weight)
    for key in ("config_sha256", "vocab_size", "embedding_sha256"):
        if now[key] != run["model"].get(key):
            raise ConfigError(f"the model directory changed since the run started ({key} differs)", path=model_dir,
                              hint="export needs the exact model the run trained")
    from vocabshift.safe_loading import LOAD_KWARGS

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), **LOAD_KWARGS)  # checked by load_for_training
    parameters_before = parameter_count(model)
    setup = build_setup(train_config, model)
    load_trainable(setup.model, ckpt / TRAINABLE_FILE, setup.trainable_names())
    trained = describe_parameters(setup)
    setup.model.eval()
    probe = _probe_ids(tokenizer, setup.layout.vocab_size)
    with torch.no_grad():
        reference = setup.model(input_ids=probe).logits.float()

    dtype = {"auto": source_dtype, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[config.dtype]
    state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
    metrics = [m for m in read_metrics(run_dir) if m.get("step", 0) <= state["step"]]
    report: dict[str, Any] = {
        "stage": "export", "run": str(run_dir.resolve()), "checkpoint": ckpt.name, "step": state["step"],
        "tokens": state.get("tokens"), "model": run["model"], "objective": run.get("objective"),
        "dtype": str(dtype).removeprefix("torch."), "train_config": run["config"], "trained_parameters": trained,
        "final_metrics": _final_metrics(metrics), "stages": _stage_reports(model_dir),
    }

    with contextlib.ExitStack() as outputs:
        gguf_tmp = None
        if gguf_path is not None and not gguf_inside:  # a file of its own: locked, checked, renamed in last
            outputs.enter_context(output_guard(gguf_path, [*inputs, ("run", run_dir)]))
            gguf_tmp = outputs.enter_context(atomic_output_file(gguf_path, force=config.force))
        tmp = outputs.enter_context(atomic_output_dir(out, force=config.force))
        if config.save_adapter:
            report["adapter"] = _save_adapter(setup, tmp / ADAPTER_DIR)
        merged = merge_for_export(setup)
        del setup
        layout = locate(merged)
        report["tied"] = layout.tied
        report["parameters"] = {"before": parameters_before, "after": parameter_count(merged)}
        merged.to(dtype)
        if layout.config_tied is not None:
            merged.config.tie_word_embeddings = layout.tied
        save_model(merged, tmp)
        report["tokenizer_files"] = copy_tokenizer_files(model_dir, tmp)
        carried = copy_sentence_transformer_files(model_dir, tmp)
        if carried is not None:
            report["sentence_transformers"] = carried
        del merged
        if config.verify:
            report["verify"] = _verify(tmp, probe, reference, dtype, layout.tied)
        if gguf_path is not None:
            report["gguf"] = _write_gguf(config, tmp, gguf_tmp or tmp / gguf_path.relative_to(os.path.abspath(out)),
                                         model_dir, out.name)
            report["gguf"]["file"] = str(gguf_path)
        report["seconds"] = round(time.perf_counter() - t0, 3)
        (tmp / "README.md").write_text(model_card(report), encoding="utf-8")
        (tmp / EXPORT_REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str),
                                              encoding="utf-8")
    log.info("exported %s (%s, step %d) -> %s in %.1f s", run_dir, ckpt.name, state["step"], out, report["seconds"])
    return ExportResult(out=out, report=report)


def _gguf_output(config: ExportConfig, out: Path) -> tuple[Path | None, bool]:
    """The GGUF file to write (None when not asked) and whether it lies inside the output directory
    (then it is written there, as part of that directory's atomic write)."""
    if config.gguf is None:
        return None, False
    path = Path(os.path.abspath(config.gguf))
    root = Path(os.path.abspath(out))
    if path == root:
        raise ConfigError("the GGUF file cannot be the output directory itself", path=config.gguf,
                          hint="name a file, e.g. --gguf model.gguf or --gguf OUT/model.gguf")
    if path.is_relative_to(root):
        return path, True
    check_output_path(path, config.force)
    return path, False


def _write_gguf(config: ExportConfig, folder: Path, target: Path, model_dir: Path, name: str) -> dict[str, Any]:
    """Write the exported folder as GGUF at ``target``; the run's model folder says where its vocabulary came from."""
    from vocabshift.gguf_export import verify_gguf, write_gguf

    target.parent.mkdir(parents=True, exist_ok=True)
    report = write_gguf(folder, target, gguf_type=config.gguf_type, pre=config.gguf_pre, name=name, origin=model_dir)
    if config.verify:
        report["verify"] = verify_gguf(target, folder, report["type"])
    return report


def _save_adapter(setup: Any, directory: Path) -> dict[str, Any]:
    """The PEFT adapter plus the trained vocabulary-sized tensors, under the names PEFT loads them by."""
    import torch
    from safetensors.torch import load_file, save_file

    from vocabshift.train.peft_setup import FactorizedLMHead

    if not hasattr(setup.model, "peft_config"):
        raise ConfigError("the run trained no LoRA adapters (lora.enabled was false): there is no adapter to save",
                          hint="drop --save-adapter; the exported model holds the trained embeddings")
    setup.model.save_pretrained(str(directory), save_embedding_layers=False)
    weights_file = directory / "adapter_model.safetensors"
    tensors = load_file(str(weights_file))
    base = setup.base
    layout = setup.layout
    with torch.no_grad():
        extra = {layout.input_weight: base.get_input_embeddings().weight}  # dense, also for a factorized one
        head = base.get_submodule(layout.output_embeddings) if layout.output_embeddings else None
        if head is not None and not layout.tied and not isinstance(head, FactorizedLMHead):
            extra[layout.output_weight] = head.weight  # type: ignore[index]
        if layout.output_bias is not None:
            extra[layout.output_bias] = base.get_parameter(layout.output_bias)
    for name, tensor in extra.items():
        tensors[f"base_model.model.{name}"] = tensor.detach().to("cpu", torch.float32).contiguous()
    save_file(tensors, str(weights_file), metadata={"format": "pt"})
    return {"dir": ADAPTER_DIR, "vocabulary_tensors": sorted(extra)}


def _verify(directory: Path, probe: Any, reference: Any, dtype: Any, tied: bool) -> dict[str, Any]:
    import torch
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    from vocabshift.safe_loading import LOAD_KWARGS
    from vocabshift.surgery.checkpoint import model_class_for
    from vocabshift.surgery.layout import locate

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(str(directory), **LOAD_KWARGS)
        model = model_class_for(config).from_pretrained(str(directory), dtype=torch.float32, **LOAD_KWARGS)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=probe).logits.float()
    diff = float((logits - reference).abs().max())
    # Merging LoRA into the weights changes the order of fp32 sums; over a deep model that moves logits by
    # a few 1e-5 of their size (SmolLM2-135M, 30 layers: 1.0e-3 on logits of ~20-30), so the bound scales with them.
    scale = max(1.0, float(reference.abs().max()))
    tolerance = FP32_TOLERANCE * scale
    reloaded_tied = locate(model).tied
    result = {"max_abs_logit_difference": diff, "tolerance": tolerance, "tied_after_reload": reloaded_tied}
    if reloaded_tied != tied:
        raise ModelError(f"the exported model reloads {'tied' if reloaded_tied else 'untied'} but was "
                         f"{'tied' if tied else 'untied'}", path=directory)
    if dtype == torch.float32 and not diff <= tolerance:
        raise ModelError(f"the exported model's logits differ from the trained model's by {diff:.2e} "
                         f"(tolerance {tolerance:.2e} = {FP32_TOLERANCE} x the largest logit)", path=directory,
                         hint="please report this with the run's run.json")
    log.info("verified: reloaded logits within %.2e of the trained model's", diff)
    return result


def _final_metrics(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    final: dict[str, Any] = {}
    for record in metrics:
        final.update({k: v for k, v in record.items() if k in ("step", "loss", "tokens", "eval_loss",
                                                             "eval_bits_per_byte")})
    return final


def _languages(train_config: dict[str, Any]) -> list[str]:
    langs = []
    for source in (train_config.get("corpus") or {}).get("sources") or []:
        lang = source.get("lang")
        if lang and lang not in langs:
            langs.append(lang)
    return langs


def model_card(report: dict[str, Any]) -> str:
    """The ``README.md`` of an exported model: provenance, recipe, vocabulary and parameter changes, metrics."""
    cfg = report["train_config"]
    langs = _languages(cfg)
    front = ["---", "library_name: transformers", "tags:", "- vocabshift", "- continued-pretraining"]
    if langs:
        front += ["language:"] + [f"- {lang}" for lang in langs]
    front.append("---")
    stages = report["stages"]
    init = stages.get("init_report") or {}
    id_map = stages.get("id_map") or {}
    source = init.get("source") or id_map.get("source") or report["model"]["path"]
    lines = [*front, "", f"# {Path(report['model']['path']).name} adapted with vocabshift", "",
             f"Continued pretraining ({report['objective']}) of `{report['model']['path']}` "
             f"({report['model'].get('architecture')}), exported from run `{report['run']}` at "
             f"{report['checkpoint']} ({report['tokens'] or 0:,} training tokens). Loads with plain "
             "`transformers` (no custom code).", "", "## Provenance", "",
             f"- Source model: `{source}`",
             f"- Languages: {', '.join(langs) if langs else 'not recorded (give corpus sources a `lang`)'}",
             f"- Training text: {', '.join(p for s in cfg['corpus']['sources'] for p in s['paths'])}"]
    if init:
        lines.append(f"- Embedding initialization: `{init.get('method')}` ({init.get('reference', '')})")
    lines += ["", "## Vocabulary and parameters", ""]
    if init.get("source_vocab_size") is not None:
        lines.append(f"- Vocabulary: {init['source_vocab_size']:,} source tokens -> "
                     f"{init.get('target_vocab_size', report['model']['vocab_size']):,} tokens"
                     + (f", {init['shared_tokens']:,} shared with the source" if "shared_tokens" in init else ""))
    if id_map.get("new_tokens") is not None:
        lines.append(f"- New tokens (rows not copied from the source): {id_map['new_tokens']:,}")
    lines.append(f"- Embedding rows: {report['model']['vocab_size']:,}; LM head tied to the input embeddings: "
                 f"{'yes' if report.get('tied') else 'no'}")
    if init.get("parameters_before") is not None:
        lines.append(f"- Parameters of the source model: {init['parameters_before']:,}")
    lines.append(f"- Parameters: {report['parameters']['after']:,}")
    trained = report["trained_parameters"]
    groups = ", ".join(f"{k} {v:,}" for k, v in trained["trainable"].items() if v)
    lines.append(f"- Trained during continued pretraining: {trained['trainable_total']:,} ({groups}); "
                 f"LoRA merged into {trained['lora_modules']} linear layers"
                 + ("; factorized embeddings materialized" if trained.get("factorized") else "")
                 + ("; only new embedding rows trained" if trained.get("new_rows_only") else ""))
    lines += ["", "## Training recipe", "",
              f"- Steps: {report['step']:,} ({cfg.get('max_steps') or 'from max_tokens'} planned), batch "
              f"{cfg['batch_size']} x {cfg['gradient_accumulation_steps']} accumulation x "
              f"{cfg['data']['seq_len']} tokens per process",
              f"- Learning rates: embeddings {cfg['embedding_lr']}, LoRA {cfg['lora_lr']}; {cfg['schedule']} "
              f"schedule, min ratio {cfg['min_lr_ratio']}"
              + (f"; embeddings only for the first {cfg['embeddings_only_steps']} steps"
                 if cfg.get("embeddings_only_steps") else ""),
              f"- LoRA: r={cfg['lora']['r']}, alpha={cfg['lora']['alpha']}, dropout={cfg['lora']['dropout']}"
              if cfg["lora"]["enabled"] else "- LoRA: off", "",
              "<details><summary>Full training configuration</summary>", "", "```json",
              json.dumps(cfg, indent=2, ensure_ascii=False), "```", "", "</details>", "", "## Metrics", ""]
    final = report["final_metrics"]
    if final:
        lines += ["| metric | value |", "|---|---:|"]
        for key in ("step", "loss", "eval_loss", "eval_bits_per_byte"):
            if key in final:
                value = final[key]
                lines.append(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |")
    else:
        lines.append("No metrics were logged.")
    verify = report.get("verify")
    if verify:
        lines += ["", f"Export check: the reloaded model's logits are within {verify['max_abs_logit_difference']:.1e} "
                      "of the trained model's."]
    gguf = report.get("gguf")
    if gguf:
        name = Path(gguf["file"]).name
        lines += ["", "## GGUF", "",
                  f"`{name}`: {gguf['architecture']} architecture, {gguf['type']} tensors, tokenizer "
                  f"`{gguf['tokenizer']['model']}` with pre-tokenizer `{gguf['tokenizer']['pre']}`; run it with "
                  f"`llama-cli -m {name}` (see vocabshift docs/use-with/llama-cpp.md)."]
        check = gguf.get("verify")
        if check:
            lines.append(f"Loaded back with transformers: logits within {check['max_abs_logit_difference']:.1e} of "
                         f"the exported model's, argmax agreement {check['argmax_agreement']:.3f}.")
    return "\n".join(lines) + "\n"


__all__ = ["ExportConfig", "ExportResult", "export", "model_card"]
