"""``train(spec, run_dir)``: the paper's training protocol, writing one resumable run folder.

Per epoch k = 1..E: set the learning rate of the schedule, train one pass over the
shuffled training split (mixup on every batch when ``mixup_alpha`` > 0), evaluate the
test split and (``train_eval``) the training split in evaluation mode, append the
metrics record, and at saved epochs write the checkpoint and then the resume state.
Epoch 0 is the initialisation, evaluated and saved the same way.

Write order makes every crash recoverable: the record of epoch k is appended before
its checkpoint and resume state, so the resume state (the last file) names an epoch
whose record and checkpoint exist; on restart the records after it are dropped and
training continues from it. All randomness of epoch k is a pure function of
(seed, k) (:mod:`transferlens.train.seeds`), so the resumed run ends bit-identical
(on CPU, with the same thread count) to one that was never interrupted.
``complete.json`` is written last.

Intervals over the examples (:mod:`transferlens.train.intervals`): the final epoch's
test evaluation and every trained epoch's train-eval evaluation keep each example's
outcome. Rank 0 writes, before the epoch's record (so a record on disk implies them),
the final test metric of each bootstrap resample and, for the speed, either each
example's term added to the running sums (a metric that is a mean over examples:
accuracy; bootstrapped once at the end) or, for ROC-AUC, the epoch's replicates.
Nothing of the training (weights, random streams, logged numbers) changes.

``environment.json`` records the threads, device and torch version the epochs ran
with (:mod:`transferlens.train.environment`); a resume under another thread count is
refused. ``keep_epochs`` (a study's checkpoint pruning) deletes, after each saved
epoch, every checkpoint outside it but the latest (which resuming needs), and the
resume state once the run is complete.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from transferlens import models
from transferlens.errors import UserInputError
from transferlens.evaluation import autocast, evaluate
from transferlens.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl
from transferlens.metrics import task_loss
from transferlens.train.checkpoints import (
    RESUME_FILE,
    ResumeState,
    checkpoint_path,
    prune_checkpoints,
    read_checkpoint,
    read_resume_state,
    resume_epoch,
    save_checkpoint,
    save_resume_state,
    saved_epochs,
    unwrap,
)
from transferlens.train.distributed import (
    DistContext,
    all_reduce_sum,
    current_context,
    resolve_device,
)
from transferlens.train.environment import (
    check_resume_threads,
    current_environment,
    record_environment,
)
from transferlens.train.init import initial_model
from transferlens.train.intervals import (
    TEST,
    TRAIN_EVAL,
    added_sums,
    metric_replicates,
    prune_sums,
    read_sums,
    run_intervals,
    save_replicates,
    save_sums,
)
from transferlens.train.loaders import Loaders, build_loaders
from transferlens.train.mixup import mixup
from transferlens.train.optim import (
    build_optimizer,
    learning_rate,
    set_learning_rate,
    warmup_factor,
)
from transferlens.train.progress import EpochBar, epoch_line
from transferlens.train.run_dir import (
    COMPLETE_FILE,
    METRICS_FILE,
    SPEC_FILE,
    read_complete,
    read_spec_json,
)
from transferlens.train.seeds import derive_seed, seed_global_rngs
from transferlens.train.spec import TrainSpec, comparable_json
from transferlens.train.summary import RunSummary, summarise

EpochCallback = Callable[[int, dict[str, Any]], None]
POSTFIX_EVERY = 25  # steps between progress-bar loss updates (each one syncs the GPU)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the epoch's weights are not saved."""


def check_spec_matches(run_dir: Path, spec: TrainSpec) -> bool:
    """True if the folder holds this spec, False if it has none; UserInputError if another."""
    path = run_dir / SPEC_FILE
    if not path.is_file():
        return False
    stored = comparable_json(read_spec_json(run_dir))
    given = spec.comparable()
    for key in sorted(set(stored) | set(given)):
        if key in given and stored.get(key) != given.get(key):
            raise UserInputError(
                f"{path}: the run folder holds another spec ({key}: stored "
                f"{json.dumps(stored.get(key))}, given {json.dumps(given.get(key))}); "
                "train it into another folder"
            )
    return True


class _Run:
    """The state of one run in progress: model, optimiser, loaders and where they run."""

    def __init__(
        self,
        spec: TrainSpec,
        run_dir: Path,
        context: DistContext,
        progress: bool,
        keep_epochs: Collection[int] | None = None,
    ):
        self.spec, self.run_dir, self.context = spec, run_dir, context
        self.keep_epochs = None if keep_epochs is None else frozenset(keep_epochs)
        self.progress = progress and context.is_main
        self.device = resolve_device(spec.device, context)
        on_cuda = self.device.type == "cuda"
        self.amp = on_cuda if spec.amp == "auto" else bool(spec.amp)
        use_channels_last = on_cuda if spec.channels_last == "auto" else spec.channels_last
        self.memory_format = torch.channels_last if use_channels_last else torch.contiguous_format
        if on_cuda:
            torch.cuda.set_device(self.device)  # NCCL collectives use the current device
            torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest kernels
        self.loaders: Loaders = build_loaders(
            spec, rank=context.rank, world_size=context.world_size, pin_memory=on_cuda
        )
        self.task = self.loaders.splits.task
        self.num_classes = self.loaders.splits.num_classes
        self.replicates: dict[str, np.ndarray] = {}  # of the epoch last evaluated (rank 0)
        # Rank 0: the train-eval terms summed over the epochs evaluated so far (None
        # before the first); ``sums_kept`` is False when a resumed epoch has none.
        self.sums: np.ndarray | None = None
        self.new_sums: np.ndarray | None = None  # through the epoch last evaluated
        self.sums_kept = True
        self.resume_point = 0  # the epoch the resume state names: its sums are kept

    def build(self, resume: ResumeState | None) -> None:
        """Model and optimiser at the start epoch (the init, or the resumed checkpoint)."""
        spec = self.spec
        if resume is None:
            model = initial_model(spec, self.num_classes)
        else:
            state, _ = read_checkpoint(checkpoint_path(self.run_dir, resume.epoch))
            with torch.random.fork_rng(devices=[]):
                model = models.build_model(spec.model, self.num_classes, **spec.model_kwargs)
            model.load_state_dict(state)
        model = model.to(self.device, memory_format=self.memory_format)
        self.optimizer = build_optimizer(
            model, spec.lr, spec.momentum, spec.weight_decay, spec.bias_scale_lr_factor
        )
        if resume is not None:
            resume.apply(self.optimizer)
            self.resume_point = resume.epoch
            if resume.epoch >= 1 and self.context.is_main:
                self.sums = read_sums(self.run_dir, resume.epoch)
                self.sums_kept = self.sums is not None
        self.model: nn.Module = model
        if self.context.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(model, device_ids=device_ids)

    def train_epoch(self, epoch: int, lr: float) -> tuple[float, int, float]:
        """One pass at base rate ``lr`` (warmed up per step in the first ``warmup_epochs``
        epochs); returns (mean step loss, images, seconds)."""
        spec, device, loader = self.spec, self.device, self.loaders.train
        steps_per_epoch = len(loader)
        warmup_steps = spec.warmup_epochs * steps_per_epoch
        first_step = (epoch - 1) * steps_per_epoch
        set_learning_rate(self.optimizer, lr)
        rank = self.context.rank
        # Every random stream of this epoch restarts from (seed, epoch): see seeds.py.
        loader.sampler.set_epoch(epoch)
        loader.generator.manual_seed(derive_seed(spec.seed, "workers", epoch, rank))
        seed_global_rngs(derive_seed(spec.seed, "augment", epoch, rank))
        lam_rng = np.random.default_rng(derive_seed(spec.seed, "mixup", epoch, rank))
        perm_generator = torch.Generator().manual_seed(
            derive_seed(spec.seed, "mixup-permutation", epoch, rank)
        )
        non_blocking = device.type == "cuda"
        model, optimizer = self.model, self.optimizer
        model.train()
        loss_sum = torch.zeros((), device=device)
        images_seen = 0
        bar = EpochBar(f"epoch {epoch}/{spec.epochs}", len(loader), enabled=self.progress)
        start = time.perf_counter()
        for step, (images, targets) in enumerate(bar.steps(loader)):
            images = images.to(device, non_blocking=non_blocking, memory_format=self.memory_format)
            targets = targets.to(device, non_blocking=non_blocking)
            if spec.mixup_alpha > 0:
                images, targets = mixup(
                    images,
                    targets,
                    alpha=spec.mixup_alpha,
                    num_classes=self.num_classes,
                    task=self.task,
                    rng=lam_rng,
                    generator=perm_generator,
                )
            with autocast(device, self.amp):
                logits = model(images)
            loss = task_loss(logits, targets, self.task)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if first_step + step < warmup_steps:  # the last warm-up step has factor 1
                set_learning_rate(optimizer, lr * warmup_factor(first_step + step, warmup_steps))
            if spec.grad_clip_norm is not None:
                # After backward: under DDP the gradients are already all-reduced, so
                # every process clips by the same global norm.
                nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip_norm)
            optimizer.step()
            batch = images.shape[0]
            loss_sum.add_(loss.detach(), alpha=batch)  # on the device: no per-step sync
            images_seen += batch
            if self.progress and step % POSTFIX_EVERY == 0:
                bar.show_loss(loss_sum.item() / images_seen)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        totals = torch.stack([loss_sum.double().cpu(), torch.tensor(float(images_seen))])
        totals = all_reduce_sum(totals.double(), self.context)
        images_total = int(totals[1].item())
        return float(totals[0].item()) / max(images_total, 1), images_total, seconds

    def evaluate_epoch(self, epoch: int) -> dict[str, Any]:
        """Test metrics and (``train_eval``) train metrics in evaluation mode; keeps, for
        :meth:`save`, the final test metric's bootstrap replicates (``self.replicates``)
        and each trained epoch's train-eval terms added to the running sums
        (``self.new_sums``), or its replicates when the metric has no such terms."""
        start = time.perf_counter()
        model = unwrap(self.model)
        # Every process asks alike: keeping the examples gathers them (a collective).
        keep_test, keep_train = epoch == self.spec.epochs, epoch >= 1
        test = evaluate(
            model, self.loaders.test, self.task, self.device, self.amp, keep_examples=keep_test
        )
        outcomes = {TEST: test.examples}
        record: dict[str, Any] = {
            "epoch": epoch,
            "test_loss": test.loss,
            "test_metric": test.metric,
            "train_loss": None,
            "train_metric": None,
        }
        if self.loaders.train_eval is not None:
            train = evaluate(
                model,
                self.loaders.train_eval,
                self.task,
                self.device,
                self.amp,
                keep_examples=keep_train,
            )
            record.update(train_loss=train.loss, train_metric=train.metric)
            outcomes[TRAIN_EVAL] = train.examples
        record["eval_seconds"] = time.perf_counter() - start
        # After the clock: eval_seconds stays the evaluations' time.
        self.replicates, self.new_sums = {}, None
        if self.context.is_main:
            for split, examples in outcomes.items():
                if examples is None or examples.n == 0:
                    continue
                sums = None
                if split == TRAIN_EVAL and self.sums_kept:
                    sums = added_sums(self.sums, examples)
                if sums is not None:
                    self.new_sums = sums
                else:
                    self.replicates[split] = metric_replicates(examples)
        return record

    def save(self, epoch: int, record: dict[str, Any]) -> None:
        """Append the record; at saved epochs, write the checkpoint and then the resume state."""
        if not self.context.is_main:
            return
        for split, values in self.replicates.items():  # before the record that implies them
            save_replicates(self.run_dir, split, epoch, values)
        if self.new_sums is not None:
            save_sums(self.run_dir, epoch, self.new_sums)
        append_jsonl(self.run_dir / METRICS_FILE, record)
        spec = self.spec
        if epoch == 0 or epoch == spec.epochs or epoch % spec.checkpoint_every == 0:
            save_checkpoint(
                self.model,
                checkpoint_path(self.run_dir, epoch),
                epoch=epoch,
                model_name=spec.model,
                num_classes=self.num_classes,
                model_kwargs=spec.model_kwargs,
            )
            save_resume_state(self.run_dir, epoch, self.optimizer)
            self.resume_point = epoch
            if self.keep_epochs is not None:  # after the resume state: it names this epoch
                prune_checkpoints(self.run_dir, self.keep_epochs | {epoch})
        if self.new_sums is not None:
            self.sums = self.new_sums
            # After the resume state: a restart needs the sums of the epoch it names.
            prune_sums(self.run_dir, {epoch, self.resume_point})

    def report(self, record: dict[str, Any]) -> None:
        if self.progress:
            print(epoch_line(record, self.spec.epochs), flush=True)


def _restart_point(run: _Run, run_dir: Path) -> ResumeState | None:
    """The resume state to continue from, after trimming the records past it."""
    resume = read_resume_state(run_dir)
    if resume is None:
        return None
    records = [r for r in read_jsonl(run_dir / METRICS_FILE) if r["epoch"] <= resume.epoch]
    if [r["epoch"] for r in records] != list(range(resume.epoch + 1)):
        raise UserInputError(
            f"{run_dir / METRICS_FILE}: records of epochs 0..{resume.epoch} are incomplete; "
            "delete the run folder to start over"
        )
    if run.context.is_main:
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        atomic_write_text(run_dir / METRICS_FILE, lines)
    return resume


def train(
    spec: TrainSpec,
    run_dir: str | Path,
    *,
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
    keep_epochs: Collection[int] | None = None,
) -> RunSummary:
    """Train ``spec`` into ``run_dir`` (resuming it if interrupted) and return the summary.

    A complete folder is returned as it is (nothing recomputed); a folder holding
    another spec, or resumed under another CPU thread count, raises UserInputError.
    ``on_epoch(epoch, record)`` is called after each epoch's files are written (epoch 0
    included). ``keep_epochs``: the checkpoints to keep (None: every saved epoch; the
    final epoch is kept whether listed or not). See the module docstring.
    """
    run_dir = Path(run_dir)
    context = current_context()
    if check_spec_matches(run_dir, spec):
        summary = read_complete(run_dir)
        if summary is not None:
            return RunSummary.from_json(summary, already_complete=True)
    if resume_epoch(run_dir) is not None:  # before anything of the folder changes
        check_resume_threads(run_dir, torch.get_num_threads())
    if keep_epochs is not None:
        keep_epochs = {*keep_epochs, spec.epochs}
    run = _Run(spec, run_dir, context, progress, keep_epochs)
    resume = _restart_point(run, run_dir) if (run_dir / SPEC_FILE).is_file() else None
    run.build(resume)  # builds (and checks) the init before anything is written
    context.barrier()  # every process has read the folder before rank 0 writes to it
    if context.is_main and resume is None:
        atomic_write_json(run_dir / SPEC_FILE, spec.model_dump(mode="json"))
        atomic_write_text(run_dir / METRICS_FILE, "")
    start = 0 if resume is None else resume.epoch
    if context.is_main:
        environment = current_environment(run.device, context.world_size)
        record_environment(run_dir, start, environment, fresh=resume is None)
    if resume is None:
        record = run.evaluate_epoch(0)
        record.update(lr=None, seconds=0.0, images=0, images_per_second=None, step_loss=None)
        run.save(0, record)
        run.report(record)
        if on_epoch is not None:
            on_epoch(0, record)
    for epoch in range(start + 1, spec.epochs + 1):
        lr = learning_rate(spec.lr, epoch - 1, spec.lr_milestones, spec.lr_gamma)
        step_loss, images, seconds = run.train_epoch(epoch, lr)
        if not math.isfinite(step_loss):  # before anything of this epoch is written
            raise TrainingDiverged(
                f"{run_dir}: training diverged in epoch {epoch} (mean step loss {step_loss}); "
                "lower lr, or set warmup_epochs or grad_clip_norm"
            )
        record = run.evaluate_epoch(epoch)
        record.update(
            lr=lr,
            seconds=seconds,
            images=images,
            images_per_second=images / seconds if seconds > 0 else None,
            step_loss=step_loss,
        )
        run.save(epoch, record)
        run.report(record)
        if on_epoch is not None:
            on_epoch(epoch, record)
    context.barrier()  # rank 0's last record is on disk for every process to read
    summary = summarise(
        run_dir,
        read_jsonl(run_dir / METRICS_FILE),
        saved_epochs(run_dir),
        task=run.task,
        num_classes=run.num_classes,
        device=str(run.device),
        amp=run.amp,
        world_size=context.world_size,
        resumed_from=None if resume is None else resume.epoch,
        intervals=run_intervals(run_dir, spec.epochs, range(1, spec.epochs + 1)),
    )
    if context.is_main:
        atomic_write_json(run_dir / COMPLETE_FILE, summary.to_json())
        if keep_epochs is not None:  # a complete run is never resumed
            (run_dir / RESUME_FILE).unlink(missing_ok=True)
    context.barrier()
    return summary
