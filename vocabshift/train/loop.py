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


@dataclass
class _Run:
    """What the setup of a run built: the model to train, its data, and the plan."""

    run_dir: Path
    objective: str
    checkpoint: Path | None
    """The checkpoint a resume continues from (its data position already checked), else None."""
    stream: Any
    eval_set: Any
    setup: TrainableSetup
    total: int
    parameters: dict[str, Any]


@writes_output
def train(config: TrainConfig, callbacks: Sequence[TrainCallback] = ()) -> TrainResult:
    """Run (or, with ``config.resume``, continue) continued pretraining; see the module docstring."""
    from accelerate.utils import set_seed

    run_dir = Path(config.out)
    accelerator, precision = _make_accelerator(config, run_dir)
    set_seed(config.seed)
    run = _prepare_run(config, accelerator, run_dir)
    optimizer, scheduler = _make_optimizer(config, run.setup, run.total, fused=accelerator.device.type == "cuda")
    prepared, optimizer, scheduler = accelerator.prepare(run.setup.model, optimizer, scheduler)
    loop = _StepLoop(config, accelerator, run, prepared, optimizer, scheduler, precision, callbacks)
    loop.run()
    return loop.result()


def _make_accelerator(config: TrainConfig, run_dir: Path) -> tuple[Any, str]:
    """The run's ``Accelerator`` and its mixed precision; refuses FSDP settings it cannot honour."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

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
    return accelerator, precision


def _prepare_run(config: TrainConfig, accelerator: Any, run_dir: Path) -> _Run:
    """Load the model, tokenizer and data, check a resume, then (main process only) record the run in run.json."""
    from transformers import AutoTokenizer

    from vocabshift import __version__
    from vocabshift.safe_loading import LOAD_KWARGS
    from vocabshift.train.data import PackedStream, build_eval_set, resolve_objective

    model_dir = Path(config.model)
    model = load_for_training(model_dir, config.attn_implementation)
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
    if accelerator.is_main_process:
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
    return _Run(run_dir=run_dir, objective=objective, checkpoint=checkpoint, stream=stream, eval_set=eval_set,
                setup=setup, total=total, parameters=parameters)


def _make_optimizer(config: TrainConfig, setup: TrainableSetup, total: int,
                    fused: bool) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the ``embeddings``, ``primitives`` and ``lora`` groups that have parameters, each with its schedule."""
    groups = []
    emb_params, lora_params = setup.parameters("embeddings"), setup.parameters("lora")
    primitive_params = setup.parameters("primitives")
    lambdas = []
    from_start = functools.partial(schedule_factor, start=0, total=total, warmup=_warmup(config, total),
                                   kind=config.schedule, min_ratio=config.min_lr_ratio)
    if emb_params:
        groups.append({"params": emb_params, "lr": config.embedding_lr, "weight_decay": 0.0, "name": "embeddings"})
        lambdas.append(from_start)
    if primitive_params:
        # Same schedule as the embeddings, but the LoRA-sized learning rate: see TrainConfig.primitives_lr.
        lr = config.primitives_lr if config.primitives_lr is not None else config.lora_lr
        groups.append({"params": primitive_params, "lr": lr, "weight_decay": 0.0, "name": "primitives"})
        lambdas.append(from_start)
    if lora_params:
        start = config.embeddings_only_steps
        groups.append({"params": lora_params, "lr": config.lora_lr, "weight_decay": config.weight_decay,
                       "name": "lora"})
        lambdas.append(functools.partial(schedule_factor, start=start, total=total,
                                         warmup=_warmup(config, total - start), kind=config.schedule,
                                         min_ratio=config.min_lr_ratio))
    optimizer = torch.optim.AdamW(groups, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon,
                                  fused=fused or None)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


class _StepLoop:
    """The optimizer-step loop of one run, and what a checkpoint of it records (step, tokens, last metrics).

    ``boundary`` is the data position, RNG states and accelerate step count taken at the end of the last
    completed step: a checkpoint always describes that step, even when written from inside the next one.
    """

    def __init__(self, config: TrainConfig, accelerator: Any, run: _Run, prepared: nn.Module, optimizer: Any,
                 scheduler: Any, precision: str, callbacks: Sequence[TrainCallback]) -> None:
        self.config, self.accelerator, self.run_info = config, accelerator, run
        self.prepared, self.optimizer, self.scheduler = prepared, optimizer, scheduler
        self.precision, self.callbacks = precision, callbacks
        self.run_dir, self.stream, self.total, self.world = run.run_dir, run.stream, run.total, accelerator.num_processes
        self.trainable = [p for g in optimizer.param_groups for p in g["params"]]
        self.writer = CheckpointWriter(run.run_dir, accelerator, run.setup.groups, keep=config.keep_checkpoints)
        self.step, self.tokens = 0, 0
        self.last: dict[str, Any] = {}
        if run.checkpoint is not None:
            self._resume(run.checkpoint)
        if config.log_with:
            start_trackers(accelerator, config.to_dict(), self.step)
        self.metrics_log = _MetricsLog(run.run_dir, accelerator, bool(config.log_with))
        self.saved_at = -1
        self.status = "completed"
        self.interval_tokens, self.interval_start = 0, time.perf_counter()
        self.boundary: tuple[dict[str, Any], RNGSnapshot, int] | None = None

    def _resume(self, checkpoint: Path) -> None:
        state, data_state = self.writer.load(checkpoint)
        self.stream.load_state_dict(data_state)
        self.step, self.tokens = int(state["step"]), int(state["tokens"])
        self.last = dict(state.get("metrics", {}))
        if state.get("total_steps") not in (None, self.total):
            log.warning("resuming a run planned for %s steps with %d steps: the learning-rate schedule changes",
                        state.get("total_steps"), self.total)
            self._reschedule()
        if self.accelerator.is_main_process:
            truncate_metrics(self.run_dir, self.step)
        log.info("resumed from %s at step %d", checkpoint, self.step)

    def _reschedule(self) -> None:
        """The learning rates of the next step under this run's schedule: the checkpoint's optimizer holds
        the ones its own total gave, and the next update would use them before the scheduler steps."""
        inner = getattr(self.scheduler, "scheduler", self.scheduler)  # accelerate wraps it
        lrs = [base * factor(inner.last_epoch) for base, factor in zip(inner.base_lrs, inner.lr_lambdas, strict=True)]
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        inner._last_lr = lrs

    def _trainer_state(self) -> dict[str, Any]:
        return {"step": self.step, "tokens": self.tokens, "total_steps": self.total,
                "objective": self.run_info.objective, "metrics": self.last}

    def _capture_boundary(self) -> None:
        self.boundary = (self.stream.state_dict(), RNGSnapshot.capture(), self.accelerator.step)

    def save(self) -> Path:
        """Checkpoint the last completed step."""
        assert self.boundary is not None
        path = self.writer.save(self.step, self._trainer_state(), self.boundary[0])
        self.saved_at = self.step
        return path

    def run(self) -> None:
        """Train until ``total`` steps, a callback's stop (``status`` "stopped") or a signal (raises)."""
        config, accelerator = self.config, self.accelerator
        batches = self.stream.batches(config.batch_size, rank=accelerator.process_index, world_size=self.world)
        self.prepared.train()
        self.saved_at = self.step if self.run_info.checkpoint is not None else -1
        self.interval_tokens, self.interval_start = 0, time.perf_counter()
        self._capture_boundary()
        progress, task = _progress(config.progress and accelerator.is_main_process, self.total, self.step)

        with progress, _StopSignals() as stop_signals:
            try:
                while self.step < self.total:
                    if self._one_step(batches, stop_signals, progress, task):
                        self.status = "stopped"
                        break
                    self.interval_start = time.perf_counter()  # tokens/s counts training, not evaluation or saving
            except KeyboardInterrupt:
                self._checkpoint_interrupted()
                raise
            finally:
                self.stream.close()
                if config.log_with:
                    accelerator.end_training()

    def _one_step(self, batches: Any, stop_signals: _StopSignals, progress: Any, task: Any) -> bool:
        """One optimizer step and its hooks; True when a callback stops the run (a signal raises instead)."""
        losses, grad_norm = self._forward_backward(batches)
        loss_value, norm_value, stop_flag = self._checked_values(losses, grad_norm, stop_signals.requested)
        lrs = self._update()
        tps = self.interval_tokens / max(time.perf_counter() - self.interval_start, 1e-9)
        self.interval_tokens = 0
        norm = norm_value if grad_norm is not None else None
        self._record(loss_value, lrs, tps, norm, progress, task)
        self._maybe_evaluate()
        stop = bool(stop_flag)
        info = StepInfo(step=self.step, total_steps=self.total, loss=loss_value, lr=lrs, tokens=self.tokens,
                        tokens_per_second=tps, grad_norm=norm)
        for callback in self.callbacks:
            stop = bool(callback(info)) or stop
        if self.step % self.config.save_every == 0 or self.step == self.total or stop:
            self.save()
        if stop and stop_flag:
            raise TrainingStopped(stop_signals.signum)
        return stop

    def _forward_backward(self, batches: Any) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The step's micro-batches (gradients accumulated), then clipping: their losses and the gradient norm."""
        accelerator = self.accelerator
        losses = []
        for _ in range(self.config.gradient_accumulation_steps):
            batch = next(batches)  # the stream repeats the corpus for as many epochs as it takes
            # Packed sequences have no padding: without an all-ones mask, SDPA takes its fast path.
            mask = batch.pop("attention_mask", None)
            if mask is not None and not bool(mask.all()):
                batch["attention_mask"] = mask
            self.interval_tokens += (int(mask.sum()) if mask is not None else batch["input_ids"].numel()) * self.world
            batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
            with accelerator.accumulate(self.prepared):
                loss = self.prepared(**batch).loss
                losses.append(loss.detach())
                accelerator.backward(loss)
        grad_norm = None
        if self.config.max_grad_norm is not None and accelerator.sync_gradients:
            grad_norm = accelerator.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
        return losses, grad_norm

    def _checked_values(self, losses: list[torch.Tensor], grad_norm: torch.Tensor | None,
                        stop_requested: bool) -> tuple[float, float, float]:
        """``(loss, grad norm, stop flag)`` averaged over processes; raises :class:`TrainingDiverged` on NaN/inf."""
        accelerator = self.accelerator
        # One host sync per step: the loss (mean over micro-batches and processes), the gradient
        # norm and whether any process got Ctrl-C, checked before the update touches the weights.
        checks = torch.stack([torch.stack(losses).mean().float(),
                              (grad_norm if grad_norm is not None else torch.zeros(())).float()
                              .to(accelerator.device),
                              torch.tensor(float(stop_requested), device=accelerator.device)])
        if self.world > 1:
            checks = accelerator.reduce(checks, "mean")
        loss_value, norm_value, stop_flag = checks.tolist()
        # (fp16's loss scaler makes an inf gradient norm normal: it skips that update itself)
        if not math.isfinite(loss_value) or (not math.isfinite(norm_value) and self.precision != "fp16"):
            what = "loss" if not math.isfinite(loss_value) else "gradient norm"
            value = loss_value if what == "loss" else norm_value
            kept = f"the last good checkpoint is step {self.saved_at}" if self.saved_at >= 0 else \
                "no checkpoint was written before it"
            raise TrainingDiverged(
                f"the {what} is {value} at step {self.step + 1}; stopped without updating the weights, "
                f"{kept}", path=self.run_dir,
                hint="lower embedding_lr/lora_lr, add warm-up, or check the data")
        return loss_value, norm_value, stop_flag

    def _update(self) -> dict[str, float]:
        """Apply the update and advance the schedule and counters; the learning rates the update used."""
        optimizer = self.optimizer
        lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)}
        optimizer.step()
        if not self.accelerator.optimizer_step_was_skipped:
            self.scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += self.interval_tokens
        self._capture_boundary()
        return lrs

    def _record(self, loss_value: float, lrs: dict[str, float], tps: float, grad_norm: float | None,
                progress: Any, task: Any) -> None:
        """Keep the step's numbers (with the last evaluation), show them, and log them every ``log_every`` steps."""
        norm = {"grad_norm": grad_norm} if grad_norm is not None else {}
        self.last = {"loss": loss_value, "lr": lrs, "tokens_per_second": tps, **norm,
                     **{k: v for k, v in self.last.items() if k.startswith("eval_")}}
        progress.update(task, completed=self.step, loss=f"{loss_value:.4f}", tps=f"{tps:,.0f}",
                        lr=" ".join(f"{v:.2e}" for v in lrs.values()))
        if self.step % self.config.log_every == 0 or self.step == self.total:
            self.metrics_log.write({"step": self.step, "loss": loss_value, "lr": lrs, "tokens": self.tokens,
                                    "tokens_per_second": tps, **norm})

    def _maybe_evaluate(self) -> None:
        """Evaluate every ``eval_every`` steps and at the end, when there is a held-out set."""
        config, eval_set = self.config, self.run_info.eval_set
        if eval_set is None or not ((config.eval_every and self.step % config.eval_every == 0)
                                    or self.step == self.total):
            return
        result = evaluate(self.prepared, eval_set, self.accelerator, config.eval_batch_size or config.batch_size,
                          self.run_info.objective)
        self.last.update(result)
        self.metrics_log.write({"step": self.step, **result})
        log.info("step %d: eval loss %.4f, %.4f bits per byte", self.step, result["eval_loss"],
                 result["eval_bits_per_byte"])

    def _checkpoint_interrupted(self) -> None:
        """Put back what the unfinished step consumed, then checkpoint the last completed step."""
        assert self.boundary is not None
        self.boundary[1].restore()
        self.accelerator.step = self.boundary[2]
        self.optimizer.zero_grad(set_to_none=True)
        if self.saved_at != self.step:
            path = self.save()
            log.warning("interrupted at step %d; checkpoint %s; continue with --resume", self.step, path)

    def result(self) -> TrainResult:
        """What the run ended with, the model unwrapped from DDP/compile."""
        step, run_dir = self.step, self.run_dir
        unwrapped = self.accelerator.unwrap_model(self.prepared)
        return TrainResult(run_dir=run_dir, step=step, total_steps=self.total, tokens=self.tokens, status=self.status,
                           metrics={**self.last, "step": step, "tokens": self.tokens},
                           checkpoint=run_dir / CHECKPOINT_DIR / step_dir_name(step) if self.saved_at == step else None,
                           parameters=self.run_info.parameters, model=unwrapped)
