"""The continued-pretraining loop (``vocabshift train``): :func:`train`.

One loop for one CPU, one GPU, and DDP/FSDP under ``accelerate launch`` or ``torchrun``: accelerate's
``Accelerator`` places the model, wraps it for the launcher's distribution, runs bf16 autocast and
gradient accumulation (``accumulate`` + ``backward``), and saves/loads checkpoints. Every process
builds the same packed stream and takes its own rows of each step's sequences
(``PackedStream.batches(rank=, world_size=)``), so all of them stand at the same data position, which
the main process saves.

Each optimizer step: ``gradient_accumulation_steps`` micro-batches, the mean loss (across processes)
checked for NaN/inf *before* the update, gradient clipping (a non-finite norm also stops the run),
AdamW (fused on CUDA) with two parameter groups, ``embeddings`` and ``lora``, each with its own
learning rate and schedule (the ``lora`` group stays at 0 during ``embeddings_only_steps``), and a
third, ``primitives``, for the shared factor of a factorized (OFA) embedding when it trains.

Stopping: Ctrl-C (SIGINT) or SIGTERM (``kill``, ``timeout``, a scheduler's preemption) sets a flag that
the loop honours at the next step boundary: it saves a checkpoint and raises :class:`TrainingStopped`
(a ``KeyboardInterrupt``). A ``KeyboardInterrupt`` raised anywhere else (a second signal, a hook) also ends in a checkpoint of the last completed step: the RNG states and data position
taken at that step's end are put back before saving, so ``--resume`` continues exactly.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vocabshift.errors import ConfigError, ModelError, Stopped, VocabshiftError
from vocabshift.outputs import writes_output
from vocabshift.train.checkpoint import (
    CHECKPOINT_DIR,
    METRICS_FILE,
    CheckpointWriter,
    RNGSnapshot,
    model_fingerprint,
    open_run,
    read_data_state,
    step_dir_name,
    truncate_metrics,
)
from vocabshift.train.config import TrainConfig
from vocabshift.train.peft_setup import TrainableSetup, describe_parameters, setup_trainable
from vocabshift.train.trackers import check_trackers, make_trackers, start_trackers, tracker_values

log = logging.getLogger(__name__)


class TrainingDiverged(VocabshiftError):
    """The loss or the gradient norm became NaN or infinite."""


@dataclass
class StepInfo:
    """What a callback sees after each optimizer step."""

    step: int
    total_steps: int
    loss: float
    lr: dict[str, float]
    tokens: int
    tokens_per_second: float
    grad_norm: float | None = None


TrainCallback = Callable[[StepInfo], "bool | None"]
"""Called after every optimizer step on every process; returning True stops training with a checkpoint."""


@dataclass
class TrainResult:
    """What a run ended with."""

    run_dir: Path
    step: int
    total_steps: int
    tokens: int
    status: str
    """``completed`` or ``stopped`` (a callback asked)."""
    metrics: dict[str, Any]
    """Last train loss, learning rates, tokens/s and the last evaluation (eval_loss, eval_bits_per_byte)."""
    checkpoint: Path | None
    parameters: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False)
    """The trained model (a ``PeftModel`` when LoRA is on), unwrapped from DDP/compile."""


def load_for_training(model_dir: str | Path, attn_implementation: str | None = "sdpa") -> nn.Module:
    """Load a model directory in fp32 in its own architecture's class, with the requested attention kernel."""
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    from vocabshift.safe_loading import LOAD_KWARGS, pickle_refused
    from vocabshift.surgery.checkpoint import check_model_files, model_class_for

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise ModelError("not a model directory (no config.json)", path=path,
                         hint="train a model directory written by `vocabshift init` (or any HF checkpoint)")
    check_model_files(path)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-tensor loading bar for a model that loads in seconds
    try:
        config = AutoConfig.from_pretrained(str(path), **LOAD_KWARGS)
        cls = model_class_for(config)
        kwargs: dict[str, Any] = {"config": config, "dtype": torch.float32, **LOAD_KWARGS}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        return cls.from_pretrained(str(path), **kwargs)
    except pickle.UnpicklingError as err:  # a .bin whose pickle is more than tensors
        raise pickle_refused(path, err) from err
    except (OSError, ValueError, ImportError) as err:
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        attention = attn_implementation and ("attn" in first or "attention" in first)
        raise ModelError(f"cannot load the model ({first})", path=path,
                         hint="set attn_implementation: eager (every model has it)" if attention else None) from err
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def build_setup(config: TrainConfig, model: nn.Module) -> TrainableSetup:
    """Freeze ``model`` and add what ``config`` trains (shared by training and export)."""
    return setup_trainable(
        model, model_dir=config.model, embeddings=config.embeddings, train_lm_head=config.train_lm_head,
        train_output_bias=config.train_output_bias, factorized=config.factorized,
        train_primitives=config.train_primitives, lora=config.lora.enabled, lora_r=config.lora.r,
        lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout, target_modules=config.lora.target_modules,
    )


def schedule_factor(step: int, *, start: int, total: int, warmup: int, kind: str, min_ratio: float) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based) for a phase running ``start..total``."""
    if step < start:
        return 0.0
    s, n = step - start, max(total - start, 1)
    if s < warmup:
        return (s + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min((s - warmup) / max(n - warmup, 1), 1.0)
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * decay


def _warmup(config: TrainConfig, phase_steps: int) -> int:
    return config.warmup_steps if config.warmup_steps is not None else round(0.05 * phase_steps)


def _mixed_precision(config: TrainConfig) -> str:
    if config.mixed_precision != "auto":
        return config.mixed_precision
    from_launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if from_launcher:
        return from_launcher
    if config.device != "cpu" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def _total_steps(config: TrainConfig, world: int) -> int:
    if config.max_steps is not None:
        return config.max_steps
    per_step = config.batch_size * config.gradient_accumulation_steps * config.data.seq_len * world
    steps = math.ceil(config.max_tokens / per_step)  # type: ignore[operator]
    if steps <= config.embeddings_only_steps:
        raise ConfigError(f"max_tokens gives {steps} steps of {per_step:,} tokens, not more than "
                          f"embeddings_only_steps ({config.embeddings_only_steps})")
    return steps


class TrainingStopped(Stopped):
    """Training stopped by a signal (Ctrl-C's SIGINT, or SIGTERM from ``kill``, ``timeout`` or a scheduler)
    after writing a checkpoint of the last finished step; ``signum`` says which."""


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _StopSignals:
    """While active (main thread only), the first SIGINT or SIGTERM sets ``requested``; a second one raises
    :class:`TrainingStopped` at once. The handlers found on entry are put back exactly on exit (an ignored
    SIGINT, as in a background shell, stays ignored afterwards)."""

    def __init__(self) -> None:
        self.requested = False
        self.signum = signal.SIGINT
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in _STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise TrainingStopped(signum)
        self.requested, self.signum = True, signum
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        log.warning("%s: stopping after this step with a checkpoint (send it again to stop at once)", what)

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            # None: the handler was not set from Python; SIG_DFL is what such a process had.
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()


class _MetricsLog:
    """metrics.jsonl (main process) and accelerate's trackers (the same numbers, see ``train/trackers.py``)."""

    def __init__(self, run_dir: Path, accelerator: Any, trackers: bool) -> None:
        self.path = run_dir / METRICS_FILE
        self.accelerator = accelerator
        self.trackers = trackers

    def write(self, record: dict[str, Any]) -> None:
        if not self.accelerator.is_main_process:
            return
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.trackers:
            self.accelerator.log(tracker_values(record), step=record["step"])


def _progress(enabled: bool, total: int, start: int) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
        TextColumn("lr {task.fields[lr]}"), TextColumn("ETA"), TimeRemainingColumn(),
        console=Console(stderr=True), disable=not enabled, transient=False,
    )
    task = progress.add_task("train", total=total, completed=start, loss="-", tps="-", lr="-")
    return progress, task


@torch.no_grad()
def evaluate(model: nn.Module, eval_set: Any, accelerator: Any, batch_size: int, objective: str) -> dict[str, float]:
    """Summed NLL over the held-out sequences -> mean loss per predicted token and bits per byte."""
    from vocabshift.train.data import bits_per_byte

    rng = RNGSnapshot.capture()  # evaluation must not change what training draws next
    was_training = model.training
    model.eval()
    nll = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    count = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    batches = list(eval_set.batches(batch_size))
    world, rank = accelerator.num_processes, accelerator.process_index
    # Every process runs the same number of forward passes (FSDP gathers weights in each one); the
    # padding passes repeat batch 0 and are not counted.
    for i in range(rank, math.ceil(len(batches) / world) * world, world):
        batch = {k: v.to(accelerator.device) for k, v in batches[i if i < len(batches) else 0].items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        if i >= len(batches):
            continue
        if objective == "clm":
            logits, labels = logits[:, :-1], labels[:, 1:]
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                               reduction="sum").double()
        count += (labels != -100).sum().double()
    if accelerator.num_processes > 1:
        nll, count = accelerator.reduce(nll, "sum"), accelerator.reduce(count, "sum")
    model.train(was_training)
    rng.restore()
    total, n = float(nll), float(count)
    return {"eval_loss": total / max(n, 1.0), "eval_bits_per_byte": bits_per_byte(total, eval_set.n_bytes),
            "eval_tokens": int(n)}


@writes_output
def train(config: TrainConfig, callbacks: Sequence[TrainCallback] = ()) -> TrainResult:
    """Run (or, with ``config.resume``, continue) continued pretraining; see the module docstring."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, set_seed
    from transformers import AutoTokenizer

    from vocabshift import __version__
    from vocabshift.train.data import PackedStream, build_eval_set, resolve_objective

    run_dir = Path(config.out)
    acc_kwargs: dict[str, Any] = {
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "mixed_precision": (precision := _mixed_precision(config)),
        # accelerate only runs several CPU processes (torchrun without GPUs) when told cpu=True
        "cpu": config.device == "cpu" or (not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1),
        "step_scheduler_with_optimizer": False, "project_dir": str(run_dir),
    }
    if config.log_with:
        check_trackers(config.log_with)
        acc_kwargs["log_with"] = make_trackers(config.log_with, run_dir)
    if config.compile:
        acc_kwargs["dynamo_backend"] = "inductor"
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # accelerate keeps one process-wide state: a second train() in the same process (a notebook, a
        # sweep, the tests) would silently keep the first run's settings (compile, mixed precision).
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    accelerator = Accelerator(**acc_kwargs)
    main = accelerator.is_main_process
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes") and \
            accelerator.distributed_type != DistributedType.FSDP:
        # accelerate shards with FSDP only on accelerators; on CPU it would quietly train plain data
        # parallel with every process holding the whole model, not what an FSDP config asks for.
        raise ConfigError(f"an FSDP config is set (ACCELERATE_USE_FSDP) but accelerate runs "
                          f"{accelerator.distributed_type.value} here: it shards with FSDP on GPUs only",
                          hint="run on GPUs, or drop the FSDP config (unset ACCELERATE_USE_FSDP) to train with "
                               "DDP under torchrun")
    if accelerator.distributed_type == DistributedType.FSDP and config.embeddings == "new":
        raise ConfigError("embeddings: new (a gradient mask on the embedding rows) does not work on FSDP's "
                          "sharded parameters", hint="train all rows, or run with DDP")
    set_seed(config.seed)

    model_dir = Path(config.model)
    model = load_for_training(model_dir, config.attn_implementation)
    from vocabshift.safe_loading import LOAD_KWARGS

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), **LOAD_KWARGS)  # checked by load_for_training
    objective = resolve_objective(model, config.data.objective)
    fingerprint = model_fingerprint(model_dir, model.get_input_embeddings().weight)
    record = {"vocabshift": __version__, "model": fingerprint, "objective": objective,
              "num_processes": accelerator.num_processes, "config": config.to_dict()}
    checkpoint = open_run(run_dir, record, resume=config.resume, force=config.force, write=False)
    # Bad input fails here, before anything is written: a corpus shorter than one sequence, a model
    # without LoRA targets, new-rows training without an id_map.
    stream = PackedStream(tokenizer, config.corpus, config.data, objective, split="train")
    eval_set = build_eval_set(tokenizer, config.corpus, config.data, objective)
    setup = build_setup(config, model)
    world = accelerator.num_processes
    total = _total_steps(config, world)
    if checkpoint is not None:
        # A resume that cannot continue (another seq_len, seed or corpus mix) is refused here, before
        # run.json records the attempt.
        stream.load_state_dict(read_data_state(checkpoint))
    # Every process has checked; only now does the main process write (no process sees its run.json).
    accelerator.wait_for_everyone()
    if main:
        open_run(run_dir, record, resume=config.resume, force=config.force, write=True)
    accelerator.wait_for_everyone()

    if config.gradient_checkpointing:
        setup.base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(setup.base.config, "use_cache"):
            setup.base.config.use_cache = False
    parameters = describe_parameters(setup)
    log.info("objective %s, %d steps of %s tokens, %s trainable parameters", objective, total,
             f"{config.batch_size * config.gradient_accumulation_steps * config.data.seq_len * world:,}",
             f"{parameters['trainable_total']:,}")

    groups = []
    emb_params, lora_params = setup.parameters("embeddings"), setup.parameters("lora")
    primitive_params = setup.parameters("primitives")
    lambdas = []
    if emb_params:
        groups.append({"params": emb_params, "lr": config.embedding_lr, "weight_decay": 0.0, "name": "embeddings"})
        lambdas.append(functools.partial(schedule_factor, start=0, total=total, warmup=_warmup(config, total),
                                         kind=config.schedule, min_ratio=config.min_lr_ratio))
    if primitive_params:
        # Same schedule as the embeddings, but the LoRA-sized learning rate: see TrainConfig.primitives_lr.
        lr = config.primitives_lr if config.primitives_lr is not None else config.lora_lr
        groups.append({"params": primitive_params, "lr": lr, "weight_decay": 0.0, "name": "primitives"})
        lambdas.append(functools.partial(schedule_factor, start=0, total=total, warmup=_warmup(config, total),
                                         kind=config.schedule, min_ratio=config.min_lr_ratio))
    if lora_params:
        start = config.embeddings_only_steps
        groups.append({"params": lora_params, "lr": config.lora_lr, "weight_decay": config.weight_decay,
                       "name": "lora"})
        lambdas.append(functools.partial(schedule_factor, start=start, total=total,
                                         warmup=_warmup(config, total - start), kind=config.schedule,
                                         min_ratio=config.min_lr_ratio))
    on_cuda = accelerator.device.type == "cuda"
    optimizer = torch.optim.AdamW(groups, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon,
                                  fused=on_cuda or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    prepared, optimizer, scheduler = accelerator.prepare(setup.model, optimizer, scheduler)
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    writer = CheckpointWriter(run_dir, accelerator, setup.groups, keep=config.keep_checkpoints)

    step, tokens = 0, 0
    last: dict[str, Any] = {}
    if checkpoint is not None:
        state, data_state = writer.load(checkpoint)
        stream.load_state_dict(data_state)
        step, tokens, last = int(state["step"]), int(state["tokens"]), dict(state.get("metrics", {}))
        if state.get("total_steps") not in (None, total):
            log.warning("resuming a run planned for %s steps with %d steps: the learning-rate schedule changes",
                        state.get("total_steps"), total)
        if main:
            truncate_metrics(run_dir, step)
        log.info("resumed from %s at step %d", checkpoint, step)
    if config.log_with:
        start_trackers(accelerator, config.to_dict(), step)
    metrics_log = _MetricsLog(run_dir, accelerator, bool(config.log_with))

    def trainer_state() -> dict[str, Any]:
        return {"step": step, "tokens": tokens, "total_steps": total, "objective": objective, "metrics": last}

    batches = stream.batches(config.batch_size, rank=accelerator.process_index, world_size=world)
    prepared.train()
    saved_at = step if checkpoint is not None else -1
    status = "completed"
    interval_tokens, interval_start = 0, time.perf_counter()
    boundary = (stream.state_dict(), RNGSnapshot.capture(), accelerator.step)
    progress, task = _progress(config.progress and main, total, step)

    def save() -> Path:
        nonlocal saved_at
        path = writer.save(step, trainer_state(), boundary[0])
        saved_at = step
        return path

    with progress, _StopSignals() as stop_signals:
        try:
            while step < total:
                losses = []
                for _ in range(config.gradient_accumulation_steps):
                    batch = next(batches)  # the stream repeats the corpus for as many epochs as it takes
                    # Packed sequences have no padding: without an all-ones mask, SDPA takes its fast path.
                    mask = batch.pop("attention_mask", None)
                    if mask is not None and not bool(mask.all()):
                        batch["attention_mask"] = mask
                    interval_tokens += (int(mask.sum()) if mask is not None else batch["input_ids"].numel()) * world
                    batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
                    with accelerator.accumulate(prepared):
                        loss = prepared(**batch).loss
                        losses.append(loss.detach())
                        accelerator.backward(loss)
                grad_norm = None
                if config.max_grad_norm is not None and accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                # One host sync per step: the loss (mean over micro-batches and processes), the gradient
                # norm and whether any process got Ctrl-C, checked before the update touches the weights.
                checks = torch.stack([torch.stack(losses).mean().float(),
                                      (grad_norm if grad_norm is not None else torch.zeros(())).float()
                                      .to(accelerator.device),
                                      torch.tensor(float(stop_signals.requested), device=accelerator.device)])
                if world > 1:
                    checks = accelerator.reduce(checks, "mean")
                loss_value, norm_value, stop_flag = checks.tolist()
                # (fp16's loss scaler makes an inf gradient norm normal: it skips that update itself)
                if not math.isfinite(loss_value) or (not math.isfinite(norm_value) and precision != "fp16"):
                    what = "loss" if not math.isfinite(loss_value) else "gradient norm"
                    value = loss_value if what == "loss" else norm_value
                    kept = f"the last good checkpoint is step {saved_at}" if saved_at >= 0 else \
                        "no checkpoint was written before it"
                    raise TrainingDiverged(
                        f"the {what} is {value} at step {step + 1}; stopped without updating the weights, "
                        f"{kept}", path=run_dir,
                        hint="lower embedding_lr/lora_lr, add warm-up, or check the data")
                lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)}
                optimizer.step()
                if not accelerator.optimizer_step_was_skipped:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                tokens += interval_tokens
                boundary = (stream.state_dict(), RNGSnapshot.capture(), accelerator.step)

                tps = interval_tokens / max(time.perf_counter() - interval_start, 1e-9)
                interval_tokens = 0
                last = {"loss": loss_value, "lr": lrs, "tokens_per_second": tps,
                        **({"grad_norm": norm_value} if grad_norm is not None else {}),
                        **{k: v for k, v in last.items() if k.startswith("eval_")}}
                progress.update(task, completed=step, loss=f"{loss_value:.4f}", tps=f"{tps:,.0f}",
                                lr=" ".join(f"{v:.2e}" for v in lrs.values()))
                if step % config.log_every == 0 or step == total:
                    metrics_log.write({"step": step, "loss": loss_value, "lr": lrs, "tokens": tokens,
                                       "tokens_per_second": tps,
                                       **({"grad_norm": norm_value} if grad_norm is not None else {})})
                if eval_set is not None and ((config.eval_every and step % config.eval_every == 0)
                                             or step == total):
                    result = evaluate(prepared, eval_set, accelerator, config.eval_batch_size or config.batch_size,
                                      objective)
                    last.update(result)
                    metrics_log.write({"step": step, **result})
                    log.info("step %d: eval loss %.4f, %.4f bits per byte", step, result["eval_loss"],
                             result["eval_bits_per_byte"])
                stop = bool(stop_flag)
                info = StepInfo(step=step, total_steps=total, loss=loss_value, lr=lrs, tokens=tokens,
                                tokens_per_second=tps, grad_norm=norm_value if grad_norm is not None else None)
                for callback in callbacks:
                    stop = bool(callback(info)) or stop
                if step % config.save_every == 0 or step == total or stop:
                    save()
                if stop:
                    if stop_flag:
                        raise TrainingStopped(stop_signals.signum)
                    status = "stopped"
                    break
                interval_start = time.perf_counter()  # tokens/s counts training, not evaluation or saving
        except KeyboardInterrupt:
            # Put back what the unfinished step consumed, then checkpoint the last completed step.
            boundary[1].restore()
            accelerator.step = boundary[2]
            optimizer.zero_grad(set_to_none=True)
            if saved_at != step:
                path = save()
                log.warning("interrupted at step %d; checkpoint %s; continue with --resume", step, path)
            raise
        finally:
            stream.close()
            if config.log_with:
                accelerator.end_training()

    unwrapped = accelerator.unwrap_model(prepared)
    return TrainResult(run_dir=run_dir, step=step, total_steps=total, tokens=tokens, status=status,
                       metrics={**last, "step": step, "tokens": tokens},
                       checkpoint=run_dir / CHECKPOINT_DIR / step_dir_name(step) if saved_at == step else None,
                       parameters=parameters, model=unwrapped)

