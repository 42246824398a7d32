"""``vocabshift export``: merge a training run into a plain transformers checkpoint (and, asked, a GGUF file)."""

from __future__ import annotations

from typing import Any

import typer

from vocabshift.export import ExportConfig

from .options import ConfigOptions, config_options

OPTIONS = ConfigOptions(ExportConfig, paths=frozenset({"run", "out", "gguf"}))


@config_options(OPTIONS)
def export(*, given: dict[str, Any]) -> None:
    """Merge LoRA into the weights, materialize factorized embeddings, write safetensors + tokenizer + card
    (and, with --gguf, one GGUF file for llama.cpp / ollama)."""
    from vocabshift.export import export as run_export

    result = run_export(ExportConfig(**given))
    report = result.report
    check = report.get("verify")
    typer.echo(f"exported {report['checkpoint']} ({report['tokens'] or 0:,} tokens, {report['dtype']}, "
               f"{'tied' if report['tied'] else 'untied'} head) -> {result.out}"
               + (f"; reloaded logits within {check['max_abs_logit_difference']:.1e}" if check else ""))
    gguf_report = report.get("gguf")
    if gguf_report:
        gguf_check = gguf_report.get("verify")
        typer.echo(f"GGUF {gguf_report['type']} (pre-tokenizer {gguf_report['tokenizer']['pre']}) -> "
                   f"{gguf_report['file']}"
                   + (f"; transformers reload: logits within {gguf_check['max_abs_logit_difference']:.1e}, argmax "
                      f"agreement {gguf_check['argmax_agreement']:.1%}" if gguf_check else ""))
