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

from vocabshift.eval.bootstrap import Interval, PairedComparison, compare_bits_per_byte
from vocabshift.eval.evaluate import EvalConfig, EvalResult, SizeResult, evaluate_model
from vocabshift.eval.lm import DocumentLMResult, LMResult, lm_loss, score_documents
from vocabshift.eval.neighbours import NeighboursResult, nearest_source_tokens
from vocabshift.eval.report import render_summary, write_report
from vocabshift.eval.speed import SpeedResult, measure_speed

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
