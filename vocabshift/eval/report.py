"""The evaluation report: ``report.md``, ``eval.json`` and PNG plots, plus the terminal summary.

:func:`summary_tables` turns an :class:`~vocabshift.eval.evaluate.EvalResult` into plain tables once;
the markdown report and the rich terminal summary both render those, so they always agree.

Plots are drawn with matplotlib's object API on an Agg canvas (``matplotlib.figure.Figure`` +
``FigureCanvasAgg``): no pyplot, no display, and the caller's matplotlib backend is left alone.

``write_report`` builds every file in a temporary directory inside ``out_dir`` and moves them into
place only when all of them were written, so a failure leaves no half-written report.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vocabshift.errors import ConfigError, OutputExistsError
from vocabshift.outputs import temporary_output_dir
from vocabshift.tokenization.scripts import script_name

if TYPE_CHECKING:
    from vocabshift.eval.evaluate import EvalResult

log = logging.getLogger(__name__)

EVAL_FILE = "eval.json"
REPORT_FILE = "report.md"
METRICS_FILE = "metrics.jsonl"
PLOT_FILES = {"fertility": "fertility.png", "size": "size.png", "speed": "speed.png", "loss": "loss.png"}
MAX_PLOT_SCRIPTS = 12
_OLD_COLOR, _NEW_COLOR = "#9aa5b1", "#1f77b4"


# --------------------------------------------------------------------------------------------------
# Tables


@dataclass(frozen=True)
class Token:
    """A table cell that shows a token (a code span in markdown), with optional trailing text."""

    text: str
    suffix: str = ""


Cell = str | Token


@dataclass
class SummaryTable:
    """One table of the summary: the same rows in the terminal and in ``report.md``."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)
    total_row: bool = False  # the last row is a total (bold in the terminal)


def _count(n: int) -> str:
    """Parameters in readable units: 1.23 B, 135.5 M, 12.3 k."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB"


def _change(old: float, new: float) -> str:
    if not old:
        return "–"
    return f"{(new - old) / old:+.1%}"


def _script_label(code: str) -> str:
    return "All" if code == "all" else f"{script_name(code)} ({code})"


def _tokenization_table(result: EvalResult) -> SummaryTable:
    new = result.tokenization["new"]
    old = result.tokenization.get("old")
    scripts = sorted(new.scripts.values(), key=lambda s: -s.words) + [new.total]
    show_unk = any(s.unk_tokens for t in result.tokenization.values() for s in [*t.scripts.values(), t.total])
    if old is None:
        columns = ["Script", "Words", "Fertility", "Bytes/token", "Char coverage"] + (["UNK"] if show_unk else [])
    else:
        columns = ["Script", "Words", "Fertility old", "Fertility new", "Change", "Bytes/token old", "Bytes/token new",
                   "Char coverage old", "Char coverage new"] + (["UNK old", "UNK new"] if show_unk else [])
    rows: list[list[Cell]] = []
    for s in scripts:
        if old is None:
            row: list[Cell] = [_script_label(s.script), f"{s.words:,}", f"{s.fertility:.3f}",
                               f"{s.bytes_per_token:.2f}", f"{s.char_coverage:.2%}"]
            row += [f"{s.unk_rate:.2%}"] if show_unk else []
        else:
            o = old.total if s.script == "all" else old.scripts.get(s.script)
            if o is None:  # cannot happen for the same text, but keep the table whole
                continue
            row = [_script_label(s.script), f"{s.words:,}", f"{o.fertility:.3f}", f"{s.fertility:.3f}",
                   _change(o.fertility, s.fertility), f"{o.bytes_per_token:.2f}", f"{s.bytes_per_token:.2f}",
                   f"{o.char_coverage:.2%}", f"{s.char_coverage:.2%}"]
            row += [f"{o.unk_rate:.2%}", f"{s.unk_rate:.2%}"] if show_unk else []
        rows.append(row)
    title = f"Tokenization per script ({new.documents:,} documents)"
    notes = ["Fertility: tokens per whitespace-separated word (lower is better); bytes/token: UTF-8 bytes per "
             "token (higher is better); char coverage: share of characters that some vocabulary token contains."]
    if old is not None:
        notes.append(f"old: {old.name} ({old.vocab_size:,} tokens, {old.family}); new: {new.name} "
                     f"({new.vocab_size:,} tokens, {new.family}).")
    return SummaryTable("tokenization", title, columns, rows, notes, total_row=True)


def _interval(interval: Any) -> str:
    return "–" if interval is None else f"[{interval.low:.4f}, {interval.high:.4f}]"


def _perplexity(value: float) -> str:
    return f"{value:,.2f}" if value < 1e6 else f"{value:.3g}"


def _lm_row(label: str, r: Any) -> list[Cell]:
    """One model's row: document protocol (intervals, perplexities) or packed (sequences)."""
    if r is None:
        return [label, "–", "–", "–", "–", "–", "–", "–", "–"]
    if r.protocol == "document":
        return [label, "document", f"{r.bits_per_byte:.4f}", _interval(r.interval), f"{r.byte_perplexity:.4f}",
                _perplexity(r.word_perplexity), f"{r.loss:.4f}", f"{r.predicted_tokens:,}", f"{r.bytes:,}"]
    protocol = "packed" + (" (pseudo MLM)" if r.pseudo else "")
    return [label, protocol, f"{r.bits_per_byte:.4f}", "–", f"{2 ** r.bits_per_byte:.4f}", "–", f"{r.loss:.4f}",
            f"{r.predicted_tokens:,}", f"{r.bytes:,}"]


def _corpus_entries(result: EvalResult) -> list[tuple[str, dict[str, Any], Any]]:
    """``(row label, lm per model, paired comparison)`` per named corpus, the held-out corpus first."""
    from vocabshift.eval.corpora import DEFAULT_CORPUS_NAME

    if not result.corpora:  # a result built by hand: its one corpus
        return [(DEFAULT_CORPUS_NAME, result.lm, result.comparison)]
    return [(c.name, c.lm, c.comparison) for c in result.corpora]


def _extra_corpus_notes(result: EvalResult) -> list[str]:
    """What each corpus after the first holds, and its paired difference."""
    notes = []
    for label, lm, c in _corpus_entries(result)[1:]:
        docs = [v for v in lm.values() if v is not None and v.protocol == "document"]
        if docs:
            same = " (the same for both models)" if len(docs) == 2 else ""
            notes.append(f"{label}: {docs[0].documents:,} documents, {docs[0].bytes:,} UTF-8 bytes, "
                         f"{docs[0].words:,} words{same}.")
        if c is not None:
            notes.append(f"{label}: paired difference new − old {c.difference.estimate:+.4f} bits/byte, 95% interval "
                         f"[{c.difference.low:+.4f}, {c.difference.high:+.4f}]: {c.verdict.upper()}.")
    if any(c.forgetting for c in result.corpora):
        notes.append("Source language (forgetting): the models on source-language text; a positive difference "
                     "(worse) is what the adaptation cost in the source language.")
    return notes


def _lm_notes(result: EvalResult) -> list[str]:
    lms = {k: v for k, v in result.lm.items() if v is not None}
    notes = ["Bits/byte = total NLL / ln 2 / UTF-8 bytes of the scored text; byte perplexity = 2^(bits/byte); "
             "word perplexity = exp(total NLL / whitespace-separated words); loss: mean NLL per scored token "
             "(nats), which depends on the tokenizer."]
    docs = [v for v in lms.values() if v.protocol == "document"]
    if docs:
        d = docs[0]
        same = " (the same documents and bytes for both models)" if len(docs) == 2 else ""
        windows = sorted({v.window for v in docs})
        strides = sorted({v.stride for v in docs})
        notes.append(f"Per document (lm-evaluation-harness loglikelihood_rolling): {d.documents:,} held-out documents, "
                     f"{d.bytes:,} UTF-8 bytes, {d.words:,} words{same}; each document scored on its own after the "
                     f"bos (else eos) token, windows of {'/'.join(map(str, windows))} tokens, stride "
                     f"{'/'.join(map(str, strides))}.")
        if d.interval is not None:
            notes.append(f"Intervals: 95% percentile bootstrap over documents ({d.interval.resamples:,} resamples, "
                         f"seed {d.interval.seed}).")
    c = result.comparison
    if c is not None:
        on = "" if len(_corpus_entries(result)) == 1 else f" on {_corpus_entries(result)[0][0]}"
        notes.append(f"Paired difference new − old{on}: {c.difference.estimate:+.4f} bits/byte, 95% interval "
                     f"[{c.difference.low:+.4f}, {c.difference.high:+.4f}] on the same resampled documents: "
                     f"{c.verdict.upper()} (decided from the interval: better = entirely below 0).")
    notes += _extra_corpus_notes(result)
    for r in lms.values():
        if r.protocol == "packed":
            notes.append(f"Packed ({r.sequences} × {r.seq_len} tokens): documents packed into blocks, each predicted "
                         "with the previous ones as context; each model's blocks cover different text, so packed "
                         "figures of two tokenizers do not compare on the same bytes.")
            break
    for r in lms.values():
        if r.pseudo:
            notes.append("MLM " + r.note + ".")
            break
    return notes


def _lm_table(result: EvalResult) -> SummaryTable:
    """One row per corpus and model, and each corpus's paired difference."""
    columns = ["Corpus", "Model", "Protocol", "Bits/byte", "95% interval", "Byte perplexity", "Word perplexity",
               "Loss", "Scored tokens", "Bytes"]
    rows: list[list[Cell]] = []
    entries = _corpus_entries(result)
    for corpus, lm, c in entries:
        for key, label in (("old", "old (baseline)"), ("new", "new (model)")):
            if key in lm:
                rows.append([corpus, *_lm_row(label, lm[key])])
        if c is not None:
            rows.append([corpus, "new − old (paired)", c.verdict, f"{c.difference.estimate:+.4f}",
                         f"[{c.difference.low:+.4f}, {c.difference.high:+.4f}]", "", "", "", "", f"{c.bytes:,}"])
    scored = [r for r in result.lm.values() if r is not None]
    if len(entries) == 1 and scored and all(r.protocol == "document" for r in scored):
        columns, rows = columns[:-1], [row[:-1] for row in rows]  # the same bytes: stated once, in the notes
    return SummaryTable("lm", "Held-out language modelling", columns, rows, _lm_notes(result))


def _size_table(result: EvalResult) -> SummaryTable:
    new, old = result.size["new"], result.size.get("old")
    items = [("Parameters", "parameters", _count), ("Embedding parameters", "embedding_parameters", _count),
             ("Vocabulary", "vocab_size", lambda n: f"{n:,}"), ("Embedding rows", "embedding_rows", lambda n: f"{n:,}"),
             ("Weights on disk", "file_bytes", _mb)]
    columns = ["", "old", "new", "Change"] if old is not None else ["", "new"]
    rows: list[list[Cell]] = []
    for label, name, fmt in items:
        n = getattr(new, name)
        if old is None:
            rows.append([label, fmt(n)])
        else:
            o = getattr(old, name)
            rows.append([label, fmt(o), fmt(n), _change(o, n)])
    notes = ["Embedding parameters: input embeddings, plus an untied LM head and an output bias."]
    return SummaryTable("size", "Size", columns, rows, notes)


def _med_iqr(values: Sequence[float], fmt: str) -> str:
    """A measure over timed runs: median [Q1–Q3]."""
    from vocabshift.eval.speed import quartiles

    q1, median, q3 = quartiles(values)
    return f"{median:{fmt}} [{q1:{fmt}}–{q3:{fmt}}]"


def _speed_rows(s: Any) -> dict[str, tuple[list[float], str]]:
    """Per-run values of every speed measure of one model (label -> (values, format))."""
    sc, rows = s.scoring, {}
    rows["Scoring: s per 1,000 words"] = (sc.seconds_per_1000_words_runs, ".4f")
    rows["Scoring: words/s"] = ([sc.words / t for t in sc.timing.wall], ",.0f")
    rows["Scoring: bytes/s"] = ([sc.bytes / t for t in sc.timing.wall], ",.0f")
    if s.device == "cpu":
        rows["Scoring: CPU s per 1,000 words"] = ([1000 * c / sc.words for c in sc.timing.cpu], ".4f")
    g = s.generation
    if g is not None:
        rows["Prefill: tokens/s"] = ([g.prompt_tokens / t for t in g.prefill.wall], ",.0f")
        rows["Decode: tokens/s"] = ([(g.new_tokens - 1) / t for t in g.decode.wall], ",.1f")
        if g.seconds_per_1000_words_runs:
            rows["Generation: s per 1,000 words of output"] = (g.seconds_per_1000_words_runs, ".3f")
    return rows


def _speed_table(result: EvalResult) -> SummaryTable:
    keys = [k for k in ("old", "new") if k in result.speed]
    per_model = {k: _speed_rows(result.speed[k]) for k in keys}
    ups = {"Scoring: s per 1,000 words": result.speedups.get("scoring"),
           "Generation: s per 1,000 words of output": result.speedups.get("generation")}
    columns = ["Measure", *keys] + (["Speed-up (old / new)"] if len(keys) == 2 else [])
    rows: list[list[Cell]] = []
    for label in dict.fromkeys(label for k in keys for label in per_model[k]):
        row: list[Cell] = [label]
        for k in keys:
            values, fmt = per_model[k].get(label, ([], ""))
            row.append(_med_iqr(values, fmt) if values else "–")
        if len(keys) == 2:
            up = ups.get(label)
            row.append("" if up is None else f"{up.estimate:.2f}× [{up.low:.2f}–{up.high:.2f}], {up.verdict}")
        rows.append(row)
    notes = ["Each cell: median [interquartile range] over the timed runs of that model."]
    for k in keys:
        s = result.speed[k]
        runs = ", ".join(f"{name} {t.runs} ({t.stopped.replace('_', ' ')})" for name, t in
                         (("scoring", s.scoring.timing), ("prefill", s.generation and s.generation.prefill),
                          ("decode", s.generation and s.generation.decode)) if t)
        text = (f"{k}: {s.scoring.words:,} words ({s.scoring.bytes:,} bytes) in {s.scoring.documents:,} documents, "
                f"{s.scoring.tokens:,} tokens in {s.scoring.sequences:,} pieces of <= {s.scoring.seq_len}, batch "
                f"{s.scoring.batch_size}")
        if s.generation is not None:
            g = s.generation
            text += (f"; prompt {g.prompt_words} words ({g.prompt_tokens} tokens), {g.new_tokens} tokens generated "
                     f"greedily = {g.output_words} words")
        notes.append(f"{text}; timed runs after {s.scoring.timing.warmup} warm-up: {runs}; {s.device} "
                     f"({s.dtype}, {s.threads} threads).")
        notes += [f"{k}: {n}" for n in s.notes]
    if result.speedups:
        notes.append("Speed-up: old / new median seconds per 1,000 words; the range is old Q1 / new Q3 to old Q3 / "
                     "new Q1 (the models run one after the other, so runs are not paired); 'faster' only when the "
                     "whole range is above 1.")
    return SummaryTable("speed", "Inference speed", columns, rows, notes)


def _neighbours_table(result: EvalResult) -> SummaryTable | None:
    nb = result.neighbours
    if nb is None:
        return None
    columns = ["New token", "Id"] + [f"#{i + 1}" for i in range(nb.k)]
    rows: list[list[Cell]] = []
    for t in nb.tokens:
        cells: list[Cell] = [Token(t.token), str(t.id)]
        cells += [Token(n.token, f" {n.cosine:.2f}") for n in t.neighbours]
        cells += [""] * (len(columns) - len(cells))
        rows.append(cells)
    how = "the -1 entries of id_map.json" if nb.selection == "id_map" else "tokens not in the baseline vocabulary"
    if not nb.tokens:
        return SummaryTable("neighbours", "Nearest source tokens of new tokens", columns, [],
                            [f"The model has no new tokens ({how})."])
    notes = [f"{nb.sample_size} of {nb.new_tokens:,} new tokens ({how}), sampled with seed {nb.seed}; the {nb.k} "
             "baseline tokens with the most similar input embedding (cosine). ▁ marks a word-initial token."]
    return SummaryTable("neighbours", "Nearest source tokens of new tokens", columns, rows, notes)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        if len(value) > 8:
            return f"[{len(value):,} items]"
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    return str(value)


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(data, dict):
        out: list[tuple[str, str]] = []
        for k, v in data.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, _format_value(data))]


def _stages_table(extra: dict[str, Any] | None) -> SummaryTable | None:
    if not extra:
        return None
    rows: list[list[Cell]] = []
    for stage, summary in extra.items():
        if isinstance(summary, dict):
            text = "; ".join(f"{k}: {v}" for k, v in _flatten(summary))
        else:
            text = _format_value(summary)
        rows.append([str(stage), text])
    return SummaryTable("stages", "Pipeline stages", ["Stage", "Summary"], rows)


def summary_tables(result: EvalResult, extra: dict[str, Any] | None = None) -> list[SummaryTable]:
    """The report's tables, in report order: stages (``extra``), tokenization, LM, size, speed, neighbours."""
    tables = [_stages_table(extra), _tokenization_table(result), _lm_table(result), _size_table(result),
              _speed_table(result), _neighbours_table(result)]
    return [t for t in tables if t is not None]


def render_summary(result: EvalResult, console: Any = None) -> None:
    """Print the summary tables with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    console.print(f"[bold]model[/bold] {result.model}" + (f"   [bold]baseline[/bold] {result.baseline}"
                                                          if result.baseline else ""))
    for t in summary_tables(result):
        if not t.rows:
            console.print(f"[bold]{t.title}[/bold]: " + " ".join(t.notes), highlight=False)
            continue
        table = Table(title=t.title, title_justify="left")
        for i, col in enumerate(t.columns):
            table.add_column(col, justify="left" if i == 0 or t.key == "neighbours" else "right")
        for i, row in enumerate(t.rows):
            last = t.total_row and i == len(t.rows) - 1
            table.add_row(*[c.text + c.suffix if isinstance(c, Token) else c for c in row],
                          style="bold" if last else None, end_section=t.total_row and i == len(t.rows) - 2)
        console.print(table)
        for note in t.notes:
            console.print(f"  [dim]{note}[/dim]", highlight=False)
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)


# --------------------------------------------------------------------------------------------------
# Markdown


def _md_text(text: str) -> str:
    """Plain text safe inside a markdown table cell."""
    out = text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    for ch in "*_`<>[]":
        out = out.replace(ch, "\\" + ch)
    return out


def _md_code(text: str) -> str:
    """A code span holding ``text`` exactly (pipes escaped for tables)."""
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or text.startswith(" ") else ""
    body = text.replace("|", "\\|")
    return f"{fence}{pad}{body}{pad}{fence}"


def _md_cell(cell: Cell) -> str:
    if isinstance(cell, Token):
        return _md_code(cell.text) + _md_text(cell.suffix)
    return _md_text(cell)


def markdown_table(table: SummaryTable) -> str:
    """A GitHub-flavoured markdown table (first column left-aligned, numbers right-aligned)."""
    left = table.key in ("neighbours", "stages")
    align = [":---"] + [":---" if left else "---:"] * (len(table.columns) - 1)
    lines = ["| " + " | ".join(_md_text(c) for c in table.columns) + " |", "| " + " | ".join(align) + " |"]
    for i, row in enumerate(table.rows):
        cells = [_md_cell(c) for c in row]
        if table.total_row and i == len(table.rows) - 1:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _lm_headline(result: EvalResult) -> list[str]:
    lm_new, lm_old = result.lm.get("new"), result.lm.get("old")
    if lm_new is None:
        return []

    def figure(r: Any) -> str:
        return f"{r.bits_per_byte:.4f}" + ("" if getattr(r, "interval", None) is None else f" {_interval(r.interval)}")

    if lm_new.protocol == "document" and (lm_old is None or lm_old.protocol == "document"):
        how = f"per document, {lm_new.documents:,} documents, the same {lm_new.bytes:,} bytes for both"
        how = how if lm_old is not None else f"per document, {lm_new.documents:,} documents, {lm_new.bytes:,} bytes"
    else:
        how = "packed" + (", pseudo: masked tokens only" if lm_new.pseudo else "")
        how += "" if lm_old is None else "; the two models' figures cover different text"
    entries = _corpus_entries(result)
    on = "" if len(entries) == 1 else f" on {entries[0][0]}"
    text = f"Held-out bits per byte{on} ({how}): "
    text += figure(lm_new) if lm_old is None else f"{figure(lm_old)} → {figure(lm_new)}"
    c = result.comparison
    if c is not None:
        text += (f"; paired difference {c.difference.estimate:+.4f} [{c.difference.low:+.4f}, "
                 f"{c.difference.high:+.4f}]: {c.verdict}")
    lines = [text]
    for label, lm, c in entries[1:]:
        new, old = lm.get("new"), lm.get("old")
        if new is None:
            continue
        what = f"{new.documents:,} documents, {new.bytes:,} bytes" if new.protocol == "document" else new.protocol
        line = f"Bits per byte on {label} ({what}): "
        line += figure(new) if old is None else f"{figure(old)} → {figure(new)}"
        if c is not None:
            line += (f"; paired difference {c.difference.estimate:+.4f} [{c.difference.low:+.4f}, "
                     f"{c.difference.high:+.4f}]: {c.verdict}")
        lines.append(line)
    return lines


def _headline(result: EvalResult) -> list[str]:
    """One-line facts for the top of the report."""
    lines = []
    new, old = result.tokenization["new"].total, result.tokenization.get("old")
    if old is not None:
        lines.append(f"Fertility (tokens per word): {old.total.fertility:.3f} → {new.fertility:.3f} "
                     f"({_change(old.total.fertility, new.fertility)})")
    else:
        lines.append(f"Fertility (tokens per word): {new.fertility:.3f}")
    lines += _lm_headline(result)
    size_new, size_old = result.size["new"], result.size.get("old")
    if size_old is not None:
        lines.append(f"Parameters: {_count(size_old.parameters)} → {_count(size_new.parameters)} "
                     f"({_change(size_old.parameters, size_new.parameters)})")
    else:
        lines.append(f"Parameters: {_count(size_new.parameters)}")
    for measure, up in result.speedups.items():
        what = "scoring the speed text" if measure == "scoring" else "generating text"
        old, new = result.speed["old"], result.speed["new"]
        t_old, t_new = ((old.scoring.seconds_per_1000_words, new.scoring.seconds_per_1000_words) if measure == "scoring"
                        else (old.generation.seconds_per_1000_words, new.generation.seconds_per_1000_words))
        lines.append(f"Inference ({what}): {t_old:.4f} → {t_new:.4f} s per 1,000 words (medians), speed-up "
                     f"{up.estimate:.2f}× [{up.low:.2f}–{up.high:.2f}]: {up.verdict}")
    return lines


def _training_section(records: list[dict[str, Any]], plot: str | None) -> list[str]:
    steps, losses, eval_steps, eval_losses, eval_bpb = loss_series(records)
    out = ["## Training", ""]
    facts = []
    if steps:
        facts.append(f"{steps[-1]:,} steps; train loss {losses[0]:.4f} (step {steps[0]:,}) → {losses[-1]:.4f} "
                     f"(step {steps[-1]:,})")
    if eval_steps:
        facts.append(f"eval loss {eval_losses[0]:.4f} (step {eval_steps[0]:,}) → {eval_losses[-1]:.4f} "
                     f"(step {eval_steps[-1]:,})")
        if eval_bpb:
            facts.append(f"eval bits per byte at the last evaluation: {eval_bpb[-1]:.4f}")
    out += [f"- {_md_text(f)}" for f in facts] or ["No loss values in the metrics file."]
    if plot:
        out += ["", f"![Training loss]({plot})"]
    return out + [""]


def report_markdown(result: EvalResult, *, plots: dict[str, str] | None = None,
                    metrics: list[dict[str, Any]] | None = None, extra: dict[str, Any] | None = None) -> str:
    """The text of ``report.md``: headline, stage table, measurement tables, plots and notes."""
    plots = plots or {}
    corpus = result.config.get("corpus") or {}
    paths = [p for s in corpus.get("sources", []) for p in s.get("paths", [])]
    lines = ["# vocabshift evaluation", ""]
    lines.append(f"- Model (new): {_md_code(result.model)}")
    if result.baseline:
        lines.append(f"- Baseline (old): {_md_code(result.baseline)}")
    if paths:
        name = f" {_md_text(result.corpora[0].name)}" if len(result.corpora) > 1 else ""
        lines.append(f"- Corpus{name}: {', '.join(_md_code(p) for p in paths)} (first {result.documents:,} documents)")
    for name, extra_paths in (result.config.get("extra_corpora") or {}).items():
        lines.append(f"- Corpus {_md_text(name)}: {', '.join(_md_code(p) for p in extra_paths)}")
    if result.config.get("source_corpus"):
        lines.append(f"- Source-language corpus (forgetting): "
                     f"{', '.join(_md_code(p) for p in result.config['source_corpus'])}")
    lines.append(f"- Evaluated in {result.seconds:.1f} s")
    lines += ["", "## Summary", ""] + [f"- {_md_text(h)}" for h in _headline(result)] + [""]
    sections = {"fertility": "tokenization", "size": "size", "speed": "speed"}
    for table in summary_tables(result, extra):
        if table.key == "lm" and metrics is not None:
            lines += _training_section(metrics, plots.get("loss"))
        lines += [f"## {_md_text(table.title)}", ""] + ([markdown_table(table), ""] if table.rows else [])
        lines += [f"{_md_text(note)}  " for note in table.notes]
        for plot_key, table_key in sections.items():
            if table_key == table.key and plot_key in plots:
                lines += ["", f"![{plot_key}]({plots[plot_key]})"]
        lines.append("")
    if result.notes:
        lines += ["## Notes", ""] + [f"- {_md_text(n)}" for n in result.notes] + [""]
    lines += ["---", "", "Measures and formulas: vocabshift `docs/eval.md`. Full numbers: "
              f"[{EVAL_FILE}]({EVAL_FILE}).", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Metrics of a training run


def _metrics_path(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / METRICS_FILE
    if not p.is_file():
        raise ConfigError("training metrics file does not exist", path=p,
                          hint=f"give a run directory of `vocabshift train` or its {METRICS_FILE}")
    return p


def load_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a training run's ``metrics.jsonl`` (a file or its run directory).

    A broken last line (a run killed while writing) is skipped; any other broken line is an error.
    """
    p = _metrics_path(path)
    lines = p.read_text(encoding="utf-8").splitlines()
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            if i == len(lines):
                log.warning("%s: skipping the incomplete last line", p)
                continue
            raise ConfigError(f"line {i} is not JSON ({err})", path=p) from err
        if isinstance(record, dict):
            records.append(record)
    return records


def loss_series(
    records: Sequence[dict[str, Any]],
) -> tuple[list[int], list[float], list[int], list[float], list[float]]:
    """Train steps and losses, eval steps, losses and bits per byte; the last record of a step wins
    (a resumed run appends steps it already logged)."""
    train: dict[int, float] = {}
    evals: dict[int, tuple[float, float]] = {}
    for r in records:
        step = r.get("step")
        if not isinstance(step, int):
            continue
        if isinstance(r.get("loss"), (int, float)) and math.isfinite(r["loss"]):
            train[step] = float(r["loss"])
        if isinstance(r.get("eval_loss"), (int, float)) and math.isfinite(r["eval_loss"]):
            evals[step] = (float(r["eval_loss"]), float(r.get("eval_bits_per_byte", math.nan)))
    steps = sorted(train)
    eval_steps = sorted(evals)
    bpb = [evals[s][1] for s in eval_steps if math.isfinite(evals[s][1])]
    return steps, [train[s] for s in steps], eval_steps, [evals[s][0] for s in eval_steps], bpb


# --------------------------------------------------------------------------------------------------
# Plots


def _figure(width: float = 7.0, height: float = 3.8) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png")


def plot_fertility(result: EvalResult, path: Path) -> None:
    """Grouped bars: fertility per script (most words first) and overall, old vs new."""
    new, old = result.tokenization["new"], result.tokenization.get("old")
    scripts = sorted(new.scripts.values(), key=lambda s: -s.words)[:MAX_PLOT_SCRIPTS] + [new.total]
    labels = ["All" if s.script == "all" else script_name(s.script) for s in scripts]
    fig = _figure(max(5.0, 1.0 + 0.8 * len(scripts)))
    ax = fig.add_subplot()
    xs = list(range(len(scripts)))
    if old is not None:
        olds = [(old.total if s.script == "all" else old.scripts.get(s.script)) for s in scripts]
        ax.bar([x - 0.2 for x in xs], [o.fertility if o else 0.0 for o in olds], 0.4, label="old", color=_OLD_COLOR)
        ax.bar([x + 0.2 for x in xs], [s.fertility for s in scripts], 0.4, label="new", color=_NEW_COLOR)
        ax.legend()
    else:
        ax.bar(xs, [s.fertility for s in scripts], 0.6, label="new", color=_NEW_COLOR)
    ax.set_xticks(xs, labels, rotation=30, ha="right")
    ax.set_ylabel("tokens per word")
    ax.set_title("Fertility per script (lower is better)")
    _save(fig, path)


def plot_size(result: EvalResult, path: Path) -> None:
    """Two panels: parameters (millions, embeddings shaded) and weights on disk (MB), old vs new."""
    keys = [k for k in ("old", "new") if k in result.size]
    sizes = [result.size[k] for k in keys]
    colors = [_OLD_COLOR if k == "old" else _NEW_COLOR for k in keys]
    fig = _figure(7.0, 3.4)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.bar(keys, [s.parameters / 1e6 for s in sizes], color=colors)
    ax1.bar(keys, [s.embedding_parameters / 1e6 for s in sizes], color="none", edgecolor="black", hatch="//",
            label="embeddings")
    ax1.set_ylabel("parameters (millions)")
    ax1.set_title("Parameters")
    ax1.legend(fontsize="small")
    ax2.bar(keys, [s.file_bytes / 1e6 for s in sizes], color=colors)
    ax2.set_ylabel("MB")
    ax2.set_title("Weights on disk")
    _save(fig, path)


def plot_speed(result: EvalResult, path: Path) -> None:
    """Bars: median seconds per 1,000 words, old vs new, scoring and generation, with IQR whiskers."""
    from vocabshift.eval.speed import quartiles

    keys = [k for k in ("old", "new") if k in result.speed]
    measures = {"scoring": {k: result.speed[k].scoring.seconds_per_1000_words_runs for k in keys},
                "generation": {k: result.speed[k].generation.seconds_per_1000_words_runs for k in keys
                               if result.speed[k].generation is not None}}
    measures = {m: runs for m, runs in measures.items() if any(runs.values())}
    fig = _figure(3.0 + 2.2 * len(measures), 3.6)
    for i, (measure, runs) in enumerate(measures.items()):
        ax = fig.add_subplot(1, len(measures), i + 1)
        shown = [k for k in keys if runs.get(k)]
        q = [quartiles(runs[k]) for k in shown]
        ax.bar(shown, [m for _, m, _ in q], yerr=[[m - q1 for q1, m, _ in q], [q3 - m for _, m, q3 in q]],
               capsize=4, color=[_OLD_COLOR if k == "old" else _NEW_COLOR for k in shown])
        ax.set_ylabel("s per 1,000 words" + (" of output" if measure == "generation" else ""))
        title = measure
        up = result.speedups.get(measure)
        if up is not None:
            title += f"\n{up.estimate:.2f}× [{up.low:.2f}–{up.high:.2f}]"
        ax.set_title(title)
    fig.suptitle("Inference time, median and IQR (lower is faster)", fontsize="medium")
    _save(fig, path)


def plot_loss(records: Sequence[dict[str, Any]], path: Path) -> bool:
    """Training loss and eval loss against the step; False (nothing drawn) when there is no loss."""
    steps, losses, eval_steps, eval_losses, _ = loss_series(records)
    if not steps and not eval_steps:
        return False
    fig = _figure()
    ax = fig.add_subplot()
    if steps:
        ax.plot(steps, losses, label="train loss", color=_NEW_COLOR, linewidth=1.2)
    if eval_steps:
        ax.plot(eval_steps, eval_losses, label="eval loss", color="#d62728", marker="o", linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title("Continued pretraining")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
    return True


# --------------------------------------------------------------------------------------------------
# Writing


def check_report_dir(out_dir: str | Path, force: bool) -> Path:
    """Refuse a report directory that already holds ``eval.json``/``report.md`` unless ``force``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError("output exists and is not a directory", path=out)
    existing = [n for n in (EVAL_FILE, REPORT_FILE) if (out / n).exists()]
    if existing and not force:
        raise OutputExistsError(f"output directory already holds {' and '.join(existing)}", path=out,
                                hint="pass --force to replace the report")
    return out


def write_report(result: EvalResult, out_dir: str | Path, *, metrics_jsonl: str | Path | None = None,
                 extra: dict[str, Any] | None = None) -> Path:
    """Write ``report.md``, ``eval.json`` and PNG plots into ``out_dir``; returns the path of ``report.md``.

    ``metrics_jsonl``: a training run's ``metrics.jsonl`` (or run directory) for the loss curve and a
    training section; ``extra``: stage name -> summary (a dict, flattened into ``key: value`` pairs,
    or any value) shown as the "Pipeline stages" table and stored under ``"extra"`` in ``eval.json``.
    Files this function writes are replaced; nothing else in ``out_dir`` is touched.
    """
    metrics = load_metrics(metrics_jsonl) if metrics_jsonl is not None else None
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError("output exists and is not a directory", path=out)
    created = not out.exists()
    if created:
        # A new report directory appears whole: written beside it, then renamed into place.
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_output_dir(out)
    else:  # the user's directory: the report's own files are replaced one by one, nothing else touched
        tmp = Path(tempfile.mkdtemp(prefix=".report.tmp-", dir=out))
    done = False
    try:
        plots: dict[str, str] = {}
        plot_fertility(result, tmp / PLOT_FILES["fertility"])
        plots["fertility"] = PLOT_FILES["fertility"]
        plot_size(result, tmp / PLOT_FILES["size"])
        plots["size"] = PLOT_FILES["size"]
        plot_speed(result, tmp / PLOT_FILES["speed"])
        plots["speed"] = PLOT_FILES["speed"]
        if metrics is not None and plot_loss(metrics, tmp / PLOT_FILES["loss"]):
            plots["loss"] = PLOT_FILES["loss"]
        data = result.to_dict()
        if extra:
            data["extra"] = extra
        (tmp / EVAL_FILE).write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n",
                                     encoding="utf-8")
        (tmp / REPORT_FILE).write_text(report_markdown(result, plots=plots, metrics=metrics, extra=extra),
                                       encoding="utf-8")
        if created:
            os.rename(tmp, out)
        else:
            for f in sorted(tmp.iterdir()):
                os.replace(f, out / f.name)
            for name in PLOT_FILES.values():  # a plot an earlier report drew but this one does not
                if name not in plots.values() and (out / name).is_file():
                    (out / name).unlink()
        done = True
    finally:
        if not (created and done):
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %s, %s and %d plots to %s", REPORT_FILE, EVAL_FILE, len(plots), out)
    return out / REPORT_FILE
