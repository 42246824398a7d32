"""``vocabshift export``: merge a training run into a plain transformers checkpoint (and, asked, a GGUF file)."""

from __future__ import annotations

from pathlib import Path

import typer

from vocabshift.export import ExportConfig

from .options import field_help

_E = ExportConfig


def export(
    run: Path = typer.Option(..., "--run", help=field_help(_E, "run")),
    out: Path = typer.Option(..., "--out", help=field_help(_E, "out")),
    checkpoint: str = typer.Option(None, "--checkpoint", help=field_help(_E, "checkpoint")),
    save_adapter: bool = typer.Option(False, "--save-adapter", help=field_help(_E, "save_adapter")),
    dtype: str = typer.Option("auto", "--dtype", help=field_help(_E, "dtype")),
    verify: bool = typer.Option(True, "--verify/--no-verify", help=field_help(_E, "verify")),
    gguf: Path = typer.Option(None, "--gguf", help=field_help(_E, "gguf")),
    gguf_type: str = typer.Option("auto", "--gguf-type", help=field_help(_E, "gguf_type")),
    gguf_pre: str = typer.Option(None, "--gguf-pre", help=field_help(_E, "gguf_pre")),
    force: bool = typer.Option(False, "--force", help=field_help(_E, "force")),
) -> None:
    """Merge LoRA into the weights, materialize factorized embeddings, write safetensors + tokenizer + card
    (and, with --gguf, one GGUF file for llama.cpp / ollama)."""
    from vocabshift.export import export as run_export

    result = run_export(ExportConfig(run=str(run), out=str(out), checkpoint=checkpoint, save_adapter=save_adapter,
                                     dtype=dtype, verify=verify, gguf=None if gguf is None else str(gguf),
                                     gguf_type=gguf_type, gguf_pre=gguf_pre, force=force))
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
