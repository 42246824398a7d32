"""Evaluation of an adapted model against its baseline, and the run report (``vocabshift eval``).

- :func:`evaluate_model` / :class:`EvalConfig` / :class:`EvalResult` (:mod:`.evaluate`) — one call for
  every measure: tokenization per script, held-out loss and bits per byte, size, inference speed and
  nearest source tokens of new tokens;
- :func:`write_report` (:mod:`.report`) — ``report.md``, ``eval.json`` and PNG plots;
- the measures alone: :func:`score_documents` (per document, as lm-evaluation-harness) and :func:`lm_loss`
  (packed) (:mod:`.lm`), :func:`compare_bits_per_byte` (paired bootstrap, :mod:`.bootstrap`),
  :func:`measure_speed` (:mod:`.speed`), :func:`nearest_source_tokens` (:mod:`.neighbours`).
"""

from __future__ import annotations

# Loaded on first use: ``vocabshift.eval.config`` (what the command line reads) must not pull in torch.
_LAZY = {
    "Interval": "bootstrap", "PairedComparison": "bootstrap", "compare_bits_per_byte": "bootstrap",
    "EvalConfig": "config",
    "EvalResult": "evaluate", "SizeResult": "evaluate", "evaluate_model": "evaluate",
    "DocumentLMResult": "lm", "LMResult": "lm", "lm_loss": "lm", "score_documents": "lm",
    "NeighboursResult": "neighbours", "nearest_source_tokens": "neighbours",
    "render_summary": "report", "write_report": "report",
    "SpeedResult": "speed", "measure_speed": "speed",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"vocabshift.eval.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'vocabshift.eval' has no attribute {name!r}")


__all__ = [
    "DocumentLMResult",
    "EvalConfig",
    "EvalResult",
    "Interval",
    "LMResult",
    "NeighboursResult",
    "PairedComparison",
    "SizeResult",
    "SpeedResult",
    "compare_bits_per_byte",
    "evaluate_model",
    "lm_loss",
    "measure_speed",
    "nearest_source_tokens",
    "render_summary",
    "score_documents",
    "write_report",
]
