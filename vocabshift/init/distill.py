r"""``distill``: new rows learned from the source model itself (AweDist: Dobler, Elliott & de Melo, 2025).

Static-vector methods guess a new token's row from word vectors trained on a few MB of text; AweDist
asks the source model what the token *does*. On windows of target text (``teacher.contexts``, target
ids), the teacher reads the source model's own view of the text and the student reads it with the new
tokens:

* teacher: ``[prefix] + pieces(t_1) + ... + pieces(t_L)``, where ``pieces(t)`` is ``[copy[t]]`` for a
  token the model already has and the source tokenizer's split ``decompositions[t]`` for a new one;
* student: ``[prefix, e(t_1), ..., e(t_L)]``, with ``e(t)`` the source row of a copied token and the
  learned row :math:`\theta_t` of a new one.

Student position :math:`i` is aligned with the teacher position :math:`\pi(i)` of the *last* piece of
:math:`t_i` (the position whose hidden state has read the whole token, as in AweDist), and the new rows
minimize the mean squared error between the last hidden states (after the final norm):

.. math::  \mathcal L_{\text{mse}} = \frac{1}{|P|\,d} \sum_{(w,i) \in P}
           \big\| h^{S}_{w,i}(\theta) - h^{T}_{w,\pi(i)} \big\|^2

over the positions :math:`P` from the first new token of each window on (a causal model's earlier
positions are identical in both views; an encoder's are not, so there all positions count). Only the
new rows move (Adam, one pass over the windows by default); they start
from the FVT mean of their pieces, AweDist's own start. Windows hold many new tokens at once, so one
forward pass teaches every new token in it, in the company of the others, as the target tokenizer will
use them.

**Output side.** With a tied head a new row is also the token's output row, so it decides how much
probability the token takes from the others. ``ce_weight`` adds AweDist's auto-weighted next-token
cross-entropy over the target vocabulary (causal LMs only):
:math:`\mathcal L = \mathcal L_{\text{mse}} + \lambda\,\frac{\operatorname{sg}(\mathcal L_{\text{mse}})}
{\operatorname{sg}(\mathcal L_{\text{ce}})}\,\mathcal L_{\text{ce}}`. With an untied head the new
output rows are ``output``: ``train`` (the mean of the pieces' output rows, then trained by the
next-token cross-entropy on detached hidden states, which moves only those rows: the newer AweDist
package's default), ``mean`` (the pieces' output rows averaged) or ``zero`` (logit 0, the paper's code).

New tokens the windows never show keep their start row (origin ``FALLBACK``, counted as
``no_context``); a token with an empty split gets the mean source row and cuts any window at it.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vocabshift.config import ConfigMixin
from vocabshift.errors import ConfigError, InitError
from vocabshift.init._common import check_positive, fallback_rows, start_rows, take_rows
from vocabshift.init.base import (
    FALLBACK,
    REQUIRES_DECOMPOSITIONS,
    REQUIRES_TEACHER,
    InitInputs,
    InitResult,
    Teacher,
)
from vocabshift.init.contexts import PRECISIONS
from vocabshift.init.registry import register_init_method

if TYPE_CHECKING:  # torch is imported when a function runs: the CLI reads the registry without it
    import torch

log = logging.getLogger(__name__)

OUTPUT_POLICIES = ("train", "mean", "zero")


@dataclass
class DistillConfig(ConfigMixin):
    """Options of ``distill`` (AweDist's defaults where the paper has one)."""

    contexts_per_token: int = field(default=25, metadata={
        "help": "Windows of target text wanted per new token (AweDist: 25 snippets); a window counts for "
                "every new token in it."})
    context_length: int = field(default=24, metadata={
        "help": "Target tokens per window (AweDist: 50-token snippets; 24 halves the CPU cost)."})
    max_contexts: int | None = field(default=2048, metadata={
        "help": "At most this many windows in all: the bound on cost (forward passes = windows x epochs). "
                "None: as many as contexts_per_token asks for."})
    epochs: int = field(default=1, metadata={"help": "Passes over the windows (AweDist: 1)."})
    batch_size: int = field(default=16, metadata={"help": "Windows per optimizer step (AweDist: 16)."})
    micro_batch: int = field(default=4, metadata={
        "help": "Windows per forward/backward pass; a step accumulates batch_size / micro_batch of them. Bounds "
                "the memory the backward pass holds (activations of every layer, the logits): about 4x less "
                "than a whole batch of 16 at once, at a small cost in time."})
    lr: float = field(default=1e-3, metadata={
        "help": "Adam learning rate of the new rows (AweDist: 1e-4 on 8B models, whose embedding entries are "
                "about 10x smaller than a 135M model's)."})
    ce_weight: float = field(default=1.0, metadata={
        "help": "Weight of the next-token cross-entropy over the target vocabulary, auto-scaled to the "
                "distillation loss (causal LMs; 0: distillation only, the paper's default). It keeps tied "
                "new rows from taking probability from source-language text."})
    output: str = field(default="train", metadata={
        "help": "Untied heads: new output rows 'train' (pieces' mean, then next-token cross-entropy), "
                "'mean' (pieces' mean) or 'zero'."})
    max_steps: int | None = field(default=None, metadata={"help": "Stop after this many optimizer steps."})
    precision: str = field(default="auto", metadata={
        "help": "The source model's forward and backward passes: 'fp32', 'bf16' (its weights loaded in bf16, "
                "autocast; half the memory) or 'auto' (bf16 on CUDA, fp32 on a CPU). The new rows are fp32."})

    def __post_init__(self) -> None:
        for name in ("contexts_per_token", "context_length", "epochs", "batch_size", "micro_batch", "lr"):
            check_positive(getattr(self, name), name)
        for name in ("max_contexts", "max_steps"):
            if getattr(self, name) is not None:
                check_positive(getattr(self, name), name)
        if isinstance(self.ce_weight, bool) or not isinstance(self.ce_weight, (int, float)) or self.ce_weight < 0:
            raise ConfigError(f"ce_weight must be a number >= 0, got {self.ce_weight!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.output not in OUTPUT_POLICIES:
            raise ConfigError(f"output must be one of {', '.join(OUTPUT_POLICIES)}, got {self.output!r}")


@dataclass
class _Windows:
    """Teacher and student sequences of every usable window, padded, with the alignment."""

    student: torch.Tensor  # [N, Ls] long: target ids, -1 at the prefix and in padding
    student_source: torch.Tensor  # [N, Ls] long: compact source id for copied positions, else -1
    student_new: torch.Tensor  # [N, Ls] long: index into the new rows for new positions, else -1
    student_len: torch.Tensor  # [N]
    teacher: torch.Tensor  # [N, Lt] long: compact source ids (0 in padding)
    teacher_len: torch.Tensor  # [N]
    align: torch.Tensor  # [N, Ls] long: teacher position of each student position (0 in padding)
    first_new: torch.Tensor  # [N]: student position of the first new token


def _windows(teacher: Teacher, copy: list[int], new_index: list[int], pieces: list[list[int]]) -> _Windows:
    """Expand each window of target ids into the teacher's and the student's sequences.

    A window is cut before a new token without pieces (the teacher cannot read it); windows left with
    no new token teach nothing and are dropped.
    """
    import torch
    prefix = [teacher.prefix] if teacher.prefix >= 0 else []
    rows: list[tuple[list[int], list[int], list[int], list[int], list[int], int]] = []
    for window in teacher.contexts.tolist():
        s_tgt, s_src, s_new, t_ids, align = [-1] * len(prefix), list(prefix), [-1] * len(prefix), list(prefix), \
            list(range(len(prefix)))
        first = -1
        for t in window:
            if t < 0:
                break
            if copy[t] >= 0:
                t_ids.append(copy[t])
                s_src.append(copy[t])
                s_new.append(-1)
            else:
                if not pieces[t]:
                    break
                t_ids.extend(pieces[t])
                s_src.append(-1)
                s_new.append(new_index[t])
                if first < 0:
                    first = len(s_tgt)
            s_tgt.append(t)
            align.append(len(t_ids) - 1)
        if first >= 0:
            rows.append((s_tgt, s_src, s_new, t_ids, align, first))
    n = len(rows)
    ls = max((len(r[0]) for r in rows), default=1)
    lt = max((len(r[3]) for r in rows), default=1)
    out = _Windows(student=torch.full((n, ls), -1, dtype=torch.long),
                   student_source=torch.full((n, ls), -1, dtype=torch.long),
                   student_new=torch.full((n, ls), -1, dtype=torch.long),
                   student_len=torch.zeros(n, dtype=torch.long), teacher=torch.zeros((n, lt), dtype=torch.long),
                   teacher_len=torch.zeros(n, dtype=torch.long), align=torch.zeros((n, ls), dtype=torch.long),
                   first_new=torch.zeros(n, dtype=torch.long))
    for k, (s_tgt, s_src, s_new, t_ids, align, first) in enumerate(rows):
        m = len(s_tgt)
        out.student[k, :m] = torch.tensor(s_tgt)
        out.student_source[k, :m] = torch.tensor(s_src)
        out.student_new[k, :m] = torch.tensor(s_new)
        out.student_len[k] = m
        out.teacher[k, :len(t_ids)] = torch.tensor(t_ids)
        out.teacher_len[k] = len(t_ids)
        out.align[k, :m] = torch.tensor(align)
        out.first_new[k] = first
    return out


def _mean_rows(table: torch.Tensor, ids: torch.Tensor, pieces: list[list[int]]) -> torch.Tensor:
    """Mean of ``table[pieces[i]]`` for each ``i`` in ``ids`` (all non-empty)."""
    import torch
    out = torch.empty(ids.numel(), table.shape[1], dtype=torch.float32)
    for k, i in enumerate(ids.tolist()):
        out[k] = table[torch.tensor(pieces[i])].double().mean(0).float()
    return out


@register_init_method(
    "distill",
    config=DistillConfig,
    reference_url="https://arxiv.org/abs/2505.20133",
    requires=(REQUIRES_DECOMPOSITIONS, REQUIRES_TEACHER),
    copy_overlap=True,
    description="AweDist: new rows learned so the source model's hidden states on target text match its "
                "own reading of the source split (needs --corpus and the model).",
)
def distill_init(inputs: InitInputs, config: DistillConfig) -> InitResult:
    """Learn each new row by distilling the source model's hidden states on its source split."""
    import torch
    teacher = inputs.teacher
    assert teacher is not None and inputs.decompositions is not None
    t0 = time.perf_counter()
    todo = inputs.copy < 0
    pieces = inputs.decompositions
    emb_cpu = inputs.source_embeddings
    copy = inputs.copy.tolist()
    new_ids = todo.nonzero().squeeze(1)
    n_new = int(new_ids.numel())
    new_index = [-1] * inputs.n_target
    for k, t in enumerate(new_ids.tolist()):
        new_index[t] = k
    has_pieces = torch.tensor([bool(pieces[t]) for t in new_ids.tolist()], dtype=torch.bool)

    # Start rows: the FVT mean of the pieces; no pieces -> the mean source row (FALLBACK).
    start = fallback_rows("mean", n_new, emb_cpu, inputs) if n_new else torch.empty(0, emb_cpu.shape[1])
    if bool(has_pieces.any()):
        start[has_pieces] = _mean_rows(emb_cpu, new_ids[has_pieces], pieces)
    out_emb = teacher.output_embeddings
    out_start = None
    if out_emb is not None:
        out_emb = out_emb.to(torch.float32)
        if tuple(out_emb.shape) != tuple(emb_cpu.shape):
            raise InitError(f"teacher.output_embeddings must be {tuple(emb_cpu.shape)}, got {tuple(out_emb.shape)}")
        out_start = torch.zeros_like(start) if config.output == "zero" else \
            fallback_rows("mean", n_new, out_emb, inputs) if n_new else torch.empty(0, out_emb.shape[1])
        if config.output != "zero" and bool(has_pieces.any()):
            out_start[has_pieces] = _mean_rows(out_emb, new_ids[has_pieces], pieces)

    windows = _windows(teacher, copy, new_index, pieces)
    seen = torch.zeros(n_new, dtype=torch.long)
    valid_new = windows.student_new[windows.student_new >= 0]
    seen.index_add_(0, valid_new, torch.ones_like(valid_new))
    info: dict[str, object] = {"windows": int(windows.student.shape[0]), "new_tokens": n_new,
                               "with_context": int((seen > 0).sum()), "no_context": int(((seen == 0) & has_pieces).sum()),
                               "no_pieces": int((~has_pieces).sum()),
                               "mean_occurrences": float(seen[seen > 0].double().mean()) if bool((seen > 0).any()) else 0.0}

    learned, learned_out, history = _train(teacher, inputs, config, windows, start, out_start, out_emb, copy, new_ids)
    info.update(history)
    teacher.done()  # the model is not needed any more: freed (when init loaded it for distill) before the output
    gc.collect()
    rows, origin, _ = start_rows(inputs)  # after training: the output matrix is not held while it runs
    rows[new_ids] = learned
    no_context = (seen == 0)
    origin[new_ids[no_context]] = FALLBACK
    output_rows = None
    if out_emb is not None:
        output_rows = torch.empty_like(rows)
        copied = ~todo
        output_rows[copied] = out_emb.index_select(0, inputs.copy[copied])
        output_rows[new_ids] = learned_out if learned_out is not None else out_start
    info["fallback"] = "start rows (fvt mean) for new tokens no window shows; the mean row without pieces"
    info["seconds"] = round(time.perf_counter() - t0, 3)
    return InitResult(rows=rows, origin=origin, info=info, output_rows=output_rows)


def _train(teacher: Teacher, inputs: InitInputs, config: DistillConfig, w: _Windows, start: torch.Tensor,
           out_start: torch.Tensor | None, out_emb: torch.Tensor | None, copy: list[int],
           new_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, object]]:
    """Adam on the new rows (and the untied head's new rows) over the windows; returns them on the CPU."""
    import torch
    dev = torch.device(inputs.device)
    n = int(w.student.shape[0])
    history: dict[str, object] = {"steps": 0, "loss_first": None, "loss_last": None}
    if n == 0 or start.numel() == 0:
        return start, out_start, history
    emb = inputs.source_embeddings.to(dev)
    theta = torch.nn.Parameter(start.clone().to(dev))
    params = [theta]
    theta_out = None
    train_out = out_emb is not None and out_start is not None and config.output == "train" and teacher.causal
    if train_out:
        assert out_start is not None
        theta_out = torch.nn.Parameter(out_start.clone().to(dev))
        params.append(theta_out)
    use_ce = teacher.causal and config.ce_weight > 0
    copied_ids = torch.tensor([t for t, c in enumerate(copy) if c >= 0], dtype=torch.long)
    # The logits' columns are [copied tokens..., new tokens...]; column of each target id:
    column = torch.empty(len(copy), dtype=torch.long)
    column[copied_ids] = torch.arange(copied_ids.numel())
    column[new_ids] = copied_ids.numel() + torch.arange(new_ids.numel())
    column = column.to(dev)
    head = out_emb if out_emb is not None else inputs.source_embeddings
    copied_out = take_rows(head, torch.tensor([copy[t] for t in copied_ids.tolist()], dtype=torch.long)).to(dev) \
        if (use_ce or train_out) else None

    optimizer = torch.optim.Adam(params, lr=config.lr)
    gen = torch.Generator().manual_seed(inputs.seed)
    autocast = torch.autocast(device_type=dev.type, dtype=teacher.dtype, enabled=teacher.dtype != torch.float32)
    step, losses = 0, []
    total = config.epochs * -(-n // config.batch_size)
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    started = time.perf_counter()
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=gen)
        for s in range(0, n, config.batch_size):
            if config.max_steps is not None and step >= config.max_steps:
                break
            b = order[s:s + config.batch_size]
            # Normalizers of the whole step, so that the micro-batches' gradients add up to the batch's.
            s_mask_b, scored_b = _student_masks(w, b, w.student.shape[1], teacher.causal)
            n_scored = float(scored_b.sum()) * emb.shape[1]
            n_targets = float(((w.student[b, 1:] >= 0) & s_mask_b[:, 1:]).sum())
            optimizer.zero_grad(set_to_none=True)
            mse_step = 0.0
            for m in range(0, b.numel(), config.micro_batch):
                mse_step += _micro_step(teacher, w, b[m:m + config.micro_batch], dev, emb, theta, theta_out,
                                        out_emb, copied_out, column, autocast, config, use_ce, train_out,
                                        max(n_scored, 1.0), max(n_targets, 1.0))
            optimizer.step()
            losses.append(mse_step)
            step += 1
            if step % max(1, total // 10) == 0 or step == total:
                elapsed = time.perf_counter() - started
                log.info("distill: step %d/%d, distillation loss %.4g, %.1f s (%.2f s/step)", step, total,
                         losses[-1], elapsed, elapsed / step)
    history.update(steps=step, loss_first=losses[0] if losses else None, loss_last=losses[-1] if losses else None,
                   loss_curve=[round(x, 6) for x in losses[:: max(1, len(losses) // 20)]])
    log.info("distill: %d steps over %d windows, distillation loss %.4g -> %.4g", step, n,
             losses[0] if losses else float("nan"), losses[-1] if losses else float("nan"))
    return theta.detach().float().cpu(), (theta_out.detach().float().cpu() if theta_out is not None else None), history


def _student_masks(w: _Windows, b: torch.Tensor, length: int, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(in_window, scored)`` [len(b), length] of the windows ``b``: positions inside each window, and the
    positions the distillation loss scores (a causal model's from the first new token on: before it both
    views are identical; an encoder's all)."""
    import torch
    positions = torch.arange(length)[None, :]
    in_window = positions < w.student_len[b][:, None]
    return in_window, (in_window & (positions >= w.first_new[b][:, None]) if causal else in_window)


def _micro_step(teacher: Teacher, w: _Windows, b: torch.Tensor, dev: torch.device, emb: torch.Tensor,
                theta: torch.Tensor, theta_out: torch.Tensor | None, out_emb: torch.Tensor | None,
                copied_out: torch.Tensor | None, column: torch.Tensor, autocast: Any, config: DistillConfig,
                use_ce: bool, train_out: bool, n_scored: float, n_targets: float) -> float:
    """Forward and backward of the windows ``b`` (part of a step); returns their share of the step's mse.

    ``n_scored`` (scored positions x d) and ``n_targets`` are the whole step's, so the parts' losses add
    up to the step's mean squared error and mean cross-entropy. The cross-entropy's auto-weight
    sg(mse)/sg(ce) is taken over this part.
    """
    import torch
    ls, lt = int(w.student_len[b].max()), int(w.teacher_len[b].max())
    t_ids = w.teacher[b, :lt].to(dev)
    t_mask = (torch.arange(lt)[None, :] < w.teacher_len[b][:, None]).to(dev)
    s_mask, scored = (m.to(dev) for m in _student_masks(w, b, ls, teacher.causal))
    src, new = w.student_source[b, :ls].to(dev), w.student_new[b, :ls].to(dev)
    with torch.no_grad(), autocast:
        h_t = teacher.body(emb[t_ids], t_mask.long())
        h_t = torch.gather(h_t.float(), 1, w.align[b, :ls].to(dev)[..., None].expand(-1, -1, h_t.shape[-1]))
    embeds = torch.where((new >= 0)[..., None], theta[new.clamp_min(0)], emb[src.clamp_min(0)])
    with autocast:
        h_s = teacher.body(embeds, s_mask.long()).float()
    weight = scored.float()[..., None]
    sq = ((h_s - h_t).square() * weight).sum()
    loss = sq / n_scored
    if use_ce or train_out:
        targets = w.student[b, 1:ls].to(dev)
        ok = (targets >= 0) & s_mask[:, 1:]
        tgt_cols = column[targets[ok]]
        h_ok = h_s[:, :-1][ok]  # positions with a next token only: the logits are [positions, vocabulary]
        assert copied_out is not None
        if use_ce:
            out_new = theta if out_emb is None else (theta_out.detach() if theta_out is not None else
                                                     torch.zeros_like(theta))
            # Two products, not one with cat([copied, new]): no copy of the copied rows (nor its gradient)
            logits = torch.cat([h_ok @ copied_out.T, h_ok @ out_new.T], dim=1)
            ce_sum = torch.nn.functional.cross_entropy(logits, tgt_cols, reduction="sum")
            part_mse = sq.detach() / (weight.sum() * h_s.shape[-1]).clamp_min(1.0)
            part_ce = ce_sum.detach() / max(int(ok.sum()), 1)
            loss = loss + config.ce_weight * (part_mse / part_ce.clamp_min(1e-8)) * ce_sum / n_targets
        if train_out:
            assert theta_out is not None
            h_det = h_ok.detach()
            logits = torch.cat([h_det @ copied_out.T, h_det @ theta_out.T], dim=1)
            loss = loss + torch.nn.functional.cross_entropy(logits, tgt_cols, reduction="sum") / n_targets
    loss.backward()
    return float(sq.detach()) / n_scored
