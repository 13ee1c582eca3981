"""The distillation loop: `distill(config) -> MemoryBank` for every parameterization x objective
(x add-ons), and the random-real baseline.

One outer iteration: the config's objective (`distill.objectives`, e.g. bptt: a fresh network, T
unrolled inner steps, the hypergradient of the real-batch loss; dm, gm: autograd of their loss),
with its add-ons, gives gradients for the learnable tensors, then one shared outer step (SGD with
momentum, or Adam; `distill.outer`) with gradient-norm clipping (optimiser, lr, schedule and clip
resolved per objective: `DistillConfig.resolved_outer`, `DistillConfig.resolved_optimizer`).
All randomness of iteration i comes from one CPU generator whose state is part of the run's state,
so a run resumed from a checkpoint continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from compressdata.bank.memory_bank import MemoryBank
from compressdata.bank.metadata import TrainingRecipe
from compressdata.bank.quantize import (
    POST_TRAINING,
    QUANTIZATION_AWARE,
    decoded_error,
    quantization_record,
    stored_bank,
)
from compressdata.data.sampler import ClassBalancedSampler
from compressdata.data.sources import RealData, load_source
from compressdata.data.zca import zca_normalization
from compressdata.distiller.checkpoint import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    DistillState,
    MetricsLog,
    check_resumed_state,
    load_checkpoint,
    read_checkpoint_header,
    save_checkpoint,
)
from compressdata.distiller.config import DistillConfig
from compressdata.distiller.objectives import EXTRA_THETA, FINISHERS
from compressdata.distiller.outer import outer_adam_step, outer_sgd_step, scheduled_lr
from compressdata.distiller.parallel import iteration_objective
from compressdata.distiller.run import DistillRun
from compressdata.distiller.synthetic import SyntheticSet, init_labels, init_theta, random_real_subset
from compressdata.errors import CheckpointError, DivergenceError, UsageError
from compressdata.evaluate import evaluate_tensors
from compressdata.params import Layout, get_parameterization, layout_for_budget
from compressdata.params.budget import FLOAT32_BYTES, budget_bytes_of
from compressdata.params.quant import storage_label
from compressdata.runtime.allocator import active_allocator
from compressdata.runtime.distributed import CollectiveError, current_world
from compressdata.runtime.precision import native_bfloat16
from compressdata.version import __version__

Callback = Callable[[DistillState, dict[str, Any]], None]
logger = logging.getLogger(__name__)
ETA_AFTER = 3  # iterations timed before the one-line estimate of the time left
LOSS_CHECK_MIN = 10  # iterations a run needs before its loss curve is judged


def resolve_device(device: str | None) -> torch.device:
    """`device` as given, else CUDA when available, else CPU; a clear error for unusable ones."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UsageError(f"unknown device {device!r}; expected e.g. cpu, cuda, cuda:1") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} requested but CUDA is not available")
    return resolved


def prepare_source(config: DistillConfig, data: RealData | None = None) -> RealData:
    """The real split the run distils, with ZCA whitening fitted on it when config.data.zca."""
    data = data if data is not None else load_source(config.data.source, config.data.split,
                                                     download=config.data.download)
    if config.data.zca:
        if data.normalization.uses_zca:
            raise UsageError("the source already carries ZCA whitening; do not ask for zca again")
        data = data.with_normalization(
            zca_normalization(data.normalization, data.float_pixels, config.data.zca_regularization))
    return data


def distill(config: DistillConfig, data: RealData | None = None, *, progress: bool = True,
            callback: Callback | None = None, log: Callable[[str], None] = logger.info,
            overwrite_checkpoint: bool = False) -> MemoryBank:
    """Run `config` and return the distilled bank.

    data: the real split to distil (default: `load_source(config.data.source, config.data.split)`);
    callback(state, metrics): called after every outer iteration; log: where one-line messages go (default:
    this module's logger, INFO; warnings always go to the logger). With config.run.checkpoint_dir,
    checkpoints are written every config.run.checkpoint_every iterations, at the end and on KeyboardInterrupt
    (then re-raised); config.run.resume continues from the last one. A checkpoint of a finished run there
    does not stop a fresh run; one of an unfinished run does, unless overwrite_checkpoint=True (start afresh).
    """
    config.validate()
    if not current_world().is_main:  # in a distributed run only rank 0 speaks
        progress, log = False, _silent
    device = resolve_device(config.run.device)
    if config.run.amp and not native_bfloat16(device):
        log(f"note: bfloat16 autocast on {device} is emulated (no native bf16 support) and slower than float32")
    if config.scale.streaming:
        from compressdata.data.streaming import streaming_source

        if data is not None:
            raise UsageError("a streaming run reads config.data.source itself; do not pass in-memory data")
        world = current_world()
        data, real = streaming_source(config.data.source, config.data.split, device, seed=config.run.seed,
                                      buffer_per_class=config.scale.stream_buffer_per_class,
                                      refresh_per_class=config.outer.real_batch_per_class,
                                      workers=config.scale.stream_workers,
                                      rank=world.rank, world_size=world.size)
    else:
        data = prepare_source(config, data)
        real = ClassBalancedSampler(data.images.to(device), data.labels, data.num_classes)
    kind = config.kind
    p = config.parameterization
    layout = layout_for_budget(kind, p.budget_ipc, data.num_classes, data.image_shape, n_bases=p.n_bases,
                               downsample=p.downsample, rank=p.rank, budget_bytes=p.budget_bytes,
                               storage=config.storage)
    budget = f"IPC {p.budget_ipc:g}" if p.budget_bytes is None else f"{p.budget_bytes} bytes"
    log(f"{config.method_name} on {data.name} ({data.split}, {len(data)} examples), budget "
        f"{budget}: {layout.describe()}; {device}, {torch.get_num_threads()} threads, "
        f"allocator {active_allocator()}")
    if config.method == "random-real":
        generator = torch.Generator().manual_seed(config.run.seed)
        images, labels = random_real_subset(real, layout.per_class, generator)
        return _bank(config, data, layout, {"pixels": images}, labels, iterations=0, device=device,
                     recipe=training_recipe(config), label_space="index", log=log)
    synthetic = SyntheticSet(kind, data.num_classes, layout.per_class, data.image_shape[1:],
                             storage=layout.storage if config.parameterization.quant_aware else None)
    run = DistillRun(config, device, data, real, synthetic, layout)
    state = _initial_state(run, log, overwrite_checkpoint)
    state = _train(run, state, progress, callback, log)
    recipe, labels, label_space = bank_targets(run, state.theta)
    return _bank(config, data, layout, state.theta, labels, state.iteration, device,
                 recipe=recipe, label_space=label_space, log=log)


def _initial_state(run: DistillRun, log: Callable[[str], None], overwrite: bool = False) -> DistillState:
    config = run.config
    if config.run.resume:
        state, saved_dict = load_checkpoint(config.run.checkpoint_dir, run.device)
        saved = _saved_config(saved_dict, config.run.checkpoint_dir)
        different = config.differences(saved)
        if different:
            raise UsageError(f"cannot resume from {config.run.checkpoint_dir}: the checkpoint was made "
                             f"with different {', '.join(different)} (only "
                             f"{', '.join(sorted(config.resumable_changes))} may change)")
        _check_buffers(config, state, config.run.checkpoint_dir)
        expected = _fresh_theta(run, torch.Generator().manual_seed(config.run.seed))
        check_resumed_state(state, expected, saved.outer.iterations, config.run.checkpoint_dir)
        log(f"resuming from {config.run.checkpoint_dir} at iteration {state.iteration}")
        if current_world().is_main:
            MetricsLog(Path(config.run.checkpoint_dir) / METRICS_FILE).truncate_after(state.iteration)
        return state
    if config.run.checkpoint_dir and (Path(config.run.checkpoint_dir) / CHECKPOINT_FILE).exists():
        _replace_checkpoint(config.run.checkpoint_dir, overwrite, log)
    if config.run.checkpoint_dir and current_world().is_main:  # a run killed before its first checkpoint left these
        MetricsLog(Path(config.run.checkpoint_dir) / METRICS_FILE).clear()
    generator = torch.Generator().manual_seed(config.run.seed)
    theta = {k: v.to(run.device) for k, v in _fresh_theta(run, generator).items()}
    momentum = {k: torch.zeros_like(v) for k, v in theta.items()}
    second = {k: torch.zeros_like(v) for k, v in theta.items()} if config.resolved_optimizer[0] == "adam" else {}
    return DistillState(0, theta, momentum, generator.get_state(), second)


def _replace_checkpoint(directory: str, overwrite: bool, log: Callable[[str], None]) -> None:
    """A fresh run in `directory`, which holds a checkpoint: removed (rank 0) when its run finished or with
    `overwrite`; else a UsageError saying how to continue it or start afresh."""
    path = Path(directory) / CHECKPOINT_FILE
    try:
        iteration, saved = read_checkpoint_header(directory)
        planned = saved.get("iterations")
        finished = isinstance(planned, int) and iteration >= planned
        what = f"iteration {iteration} of {planned}"
    except CheckpointError as e:
        finished, what = False, f"unreadable: {e.problem}"
    if not (finished or overwrite):
        raise UsageError(f"{directory} holds the checkpoint of an unfinished run ({what})",
                         hint="continue it with resume=True (run.resume), or start afresh with "
                              "overwrite_checkpoint=True",
                         cli_hint="continue it with --resume, or start afresh with --force")
    log(f"starting afresh: replacing the checkpoint in {directory} ({'a finished run' if finished else what})")
    if current_world().is_main:
        path.unlink(missing_ok=True)


def _fresh_theta(run: DistillRun, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The learnable tensors a fresh start of `run` begins from (CPU), drawn from `generator`."""
    config = run.config
    theta = init_theta(run.synthetic, run.layout, config.resolved_init, run.real, generator,
                       run.data.image_shape)
    if config.parameterization.learn_labels:
        theta["labels"] = init_labels(run.synthetic, config.parameterization.label_init_scale)
    extra = EXTRA_THETA.get(config.objective)
    if extra is not None:
        theta.update(extra(run))
    return theta


def _saved_config(saved: dict[str, Any], directory: str | None) -> DistillConfig:
    """The checkpoint's run configuration (CheckpointError naming the field when it is not one)."""
    path = str(Path(directory or ".") / CHECKPOINT_FILE)
    try:
        return DistillConfig.from_dict(saved).validate()
    except (TypeError, ValueError, AttributeError, KeyError) as e:  # any value the saved JSON may hold
        raise CheckpointError(f"field 'config': not a valid run configuration ({e})", path) from None


def _check_buffers(config: DistillConfig, state: DistillState, directory: str | None) -> None:
    """A resumed state must carry the outer optimiser's buffers: Adam's second moments, sgd none."""
    adam = config.resolved_optimizer[0] == "adam"
    if adam and set(state.second_moment) != set(state.theta):
        raise UsageError(f"cannot resume from {directory}: the adam outer optimiser needs a second moment per "
                         f"theta tensor {sorted(state.theta)}, the checkpoint has {sorted(state.second_moment)}")
    if not adam and state.second_moment:
        raise UsageError(f"cannot resume from {directory}: the checkpoint holds Adam second moments but the "
                         "outer optimiser is sgd")


def _train(run: DistillRun, state: DistillState, progress: bool, callback: Callback | None,
           log: Callable[[str], None]) -> DistillState:
    config = run.config
    main = current_world().is_main
    ckpt = Path(config.run.checkpoint_dir) if config.run.checkpoint_dir and main else None
    metrics_log = MetricsLog(ckpt / METRICS_FILE) if ckpt else None
    bar = tqdm(total=config.outer.iterations, initial=min(state.iteration, config.outer.iterations),
               disable=not progress, desc=f"distill {config.method_name}", dynamic_ncols=True)
    last_eval: float | None = None
    seconds: list[float] = []
    losses = [r["outer_loss"] for r in metrics_log.records()] if metrics_log and state.iteration else []
    try:
        while state.iteration < config.outer.iterations:
            started = time.perf_counter()
            previous = state
            state, metrics = outer_iteration(run, state)
            _check_finite(run, state, metrics, previous, ckpt)
            metrics["seconds"] = round(time.perf_counter() - started, 4)
            seconds.append(metrics["seconds"])
            losses.append(metrics["outer_loss"])
            if len(seconds) == ETA_AFTER:
                log(time_left(seconds, config.outer.iterations - state.iteration))
            if main and config.run.eval_every and state.iteration % config.run.eval_every == 0:
                last_eval = _quick_evaluation(run, state)
                metrics["eval_accuracy"] = last_eval
            if metrics_log:
                metrics_log.append(metrics)
            if ckpt and state.iteration % config.run.checkpoint_every == 0:
                save_checkpoint(ckpt, state, config.to_dict())
            bar.update(1)
            postfix = {"loss": f"{metrics['outer_loss']:.4f}"}
            if last_eval is not None:
                postfix["eval"] = f"{100 * last_eval:.2f}%"
            bar.set_postfix(postfix)
            if callback:
                callback(state, metrics)
    except (KeyboardInterrupt, CollectiveError) as e:
        if ckpt:
            save_checkpoint(ckpt, state, config.to_dict())
            what = "interrupted" if isinstance(e, KeyboardInterrupt) else "the other ranks failed"
            log(f"\n{what}: checkpoint of iteration {state.iteration} written to {ckpt}; "
                "continue with resume (--run.resume true)")
        raise
    finally:
        bar.close()
    if ckpt:
        save_checkpoint(ckpt, state, config.to_dict())
    warning = loss_warning(losses)
    if warning and main:
        logger.warning(warning)
    return state


def time_left(seconds: list[float], remaining: int) -> str:
    """One line: the estimated time of the `remaining` iterations from the first ones' `seconds` (the first
    one, which carries one-time costs, left out when there are others)."""
    timed = seconds[1:] or seconds
    each = sum(timed) / len(timed)
    return (f"{each:.2f} s per outer iteration: about {format_duration(each * remaining)} for the remaining "
            f"{remaining} (--iterations, --profile cpu|gpu and the network size set it)")


def format_duration(seconds: float) -> str:
    """3725 -> '1 h 2 min'; 125 -> '2 min 5 s'; 7.5 -> '8 s'."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds} s"


def loss_warning(losses: list[float]) -> str | None:
    """A warning when the outer loss never fell: the mean of the last fifth of the iterations is not below
    the mean of the first fifth (None for runs shorter than LOSS_CHECK_MIN iterations)."""
    if len(losses) < LOSS_CHECK_MIN:
        return None
    window = max(1, len(losses) // 5)
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    if last < first:
        return None
    return (f"the outer loss did not fall over {len(losses)} iterations (mean {first:.4g} over the first "
            f"{window}, {last:.4g} over the last {window}): the bank may have learned nothing; try more "
            "iterations, init real, or another outer lr, and check it with compressdata evaluate / preview")


def outer_iteration(run: DistillRun, state: DistillState) -> tuple[DistillState, dict[str, Any]]:
    """One outer iteration (the config's objective, then the shared outer step); returns the new
    state (the old one is left untouched) and the iteration's metrics."""
    config = run.config
    generator = torch.Generator()
    generator.set_state(state.rng)
    result = iteration_objective(run, state.theta, generator)
    base_lr, mu, clip = config.resolved_outer
    optimizer, betas, schedule = config.resolved_optimizer
    lr = scheduled_lr(base_lr, schedule, state.iteration, config.outer.iterations)
    second = state.second_moment
    if optimizer == "adam":
        theta, momentum, second, grad_norm = outer_adam_step(
            state.theta, result.grads, state.momentum, state.second_moment, state.iteration + 1, lr, betas, clip)
    else:
        theta, momentum, grad_norm = outer_sgd_step(state.theta, result.grads, state.momentum, lr, mu, clip)
    new_state = DistillState(state.iteration + 1, theta, momentum, generator.get_state(), second)
    metrics = {"iteration": new_state.iteration, "outer_loss": result.loss, **result.metrics,
               "grad_norm": float(grad_norm)}
    if schedule != "constant":
        metrics["outer_lr"] = lr
    return new_state, metrics


def _check_finite(run: DistillRun, state: DistillState, metrics: dict[str, Any], previous: DistillState,
                  ckpt: Path | None) -> None:
    """Raise DivergenceError when the iteration left a non-finite loss or tensor (the checkpoint of
    the last finite iteration is written first, when checkpoints are on)."""
    finite = math.isfinite(metrics["outer_loss"]) and all(
        bool(torch.isfinite(v).all()) for v in state.theta.values())
    if finite:
        return
    if ckpt:
        save_checkpoint(ckpt, previous, run.config.to_dict())
    lr, _, clip = run.config.resolved_outer
    optimizer = run.config.resolved_optimizer[0]
    where = f"; the checkpoint of iteration {previous.iteration} is in {ckpt}" if ckpt else ""
    raise DivergenceError(
        f"outer iteration {state.iteration} diverged: the {run.config.method_name} loss or tensors became "
        f"NaN/Inf (outer lr {lr:g}, {optimizer}, clip {'none' if math.isinf(clip) else f'{clip:g}'}){where}; "
        "lower the outer lr (--outer.lr) or set a clip (--outer.clip_norm)")


def _silent(_message: str) -> None:
    return None


def _quick_evaluation(run: DistillRun, state: DistillState) -> float:
    """Progress check: mean accuracy on the real test split of config.run.eval_networks networks of
    config.run.eval_epochs epochs trained on the current synthetic set (logged only, never used to
    pick an iteration)."""
    config = run.config
    if run.test is None:
        run.test = load_source(config.data.source, "test", download=config.data.download).with_normalization(
            run.data.normalization)
    with torch.no_grad():
        images = run.synthetic.decode(state.theta).cpu()
    recipe, targets, label_space = bank_targets(run, state.theta)
    result = evaluate_tensors(
        images, targets, recipe, run.test, label_space=label_space, networks=config.run.eval_networks,
        epochs=config.run.eval_epochs, device=run.device, seed=config.run.seed, width=config.model.width,
        progress=False)
    return result.mean


def training_recipe(config: DistillConfig) -> TrainingRecipe:
    """How to train on the distilled set: the standard protocol on the distiller's network shape;
    soft labels when learned."""
    shape = {"convnet": {"width": config.model.width, "depth": config.model.depth, "norm": config.model.norm},
             "mlp": {"width": config.model.width, "depth": config.model.depth}}.get(config.model.arch, {})
    return TrainingRecipe(
        architecture=config.model.arch,
        **shape,
        epochs=1000 if config.data.dsa else 300,
        augmentation="dsa" if config.data.dsa else "none",
        label_loss="soft_cross_entropy" if config.parameterization.learn_labels else "cross_entropy",
    )


def bank_targets(run: DistillRun, theta: dict[str, torch.Tensor]
                 ) -> tuple[TrainingRecipe, torch.Tensor, str]:
    """(recipe, labels, label_space) of the bank theta makes: hard labels or learned logits with
    the standard recipe, then whatever the objective decides (mtt: the learned lr; dwa: the
    teacher's soft labels)."""
    config = run.config
    recipe = training_recipe(config)
    if config.parameterization.learn_labels:
        labels, label_space = theta["labels"].detach(), "logits"
    else:
        labels, label_space = run.synthetic.hard_labels(), "index"
    finish = FINISHERS.get(config.objective)
    if finish is not None:
        recipe, labels, label_space = finish(run, theta, recipe, labels, label_space)
    return recipe, labels.cpu(), label_space


def _bank(config: DistillConfig, data: RealData, layout: Layout, theta: dict[str, torch.Tensor],
          labels: torch.Tensor, iterations: int, device: torch.device, recipe: TrainingRecipe,
          label_space: str, log: Callable[[str], None]) -> MemoryBank:
    """The bank of theta's float values, stored in the layout's dtypes (the decoded error of that
    storage logged and recorded in provenance["quantization"] when any is not f32)."""
    kind = layout.kind
    tensors = {k: theta[k].detach().to("cpu", torch.float32).contiguous()
               for k in get_parameterization(kind).tensor_names}
    learned = label_space != "index"
    optimised = config.method != "random-real"
    p = config.parameterization
    budget_bytes = budget_bytes_of(p.budget_ipc, data.num_classes, data.image_shape, p.budget_bytes)
    hyperparameters = config.recorded_hyperparameters()
    if kind == "memory":  # the layout the budget rule picked where the config left it open
        hyperparameters.update(n_bases=layout.n_bases, downsample=layout.downsample)
    provenance = {
        "source": {"dataset": data.name, "split": data.split, "examples": len(data)},
        "method": {"name": config.method_name, "parameterization": kind,
                   "objective": config.objective if optimised else None,
                   "addons": config.addons,
                   "hyperparameters": hyperparameters,
                   "iterations_done": iterations},
        "budget_ipc": p.budget_ipc if p.budget_bytes is None else
        round(budget_bytes / (FLOAT32_BYTES * math.prod(data.image_shape) * data.num_classes), 6),
        "budget_bytes": budget_bytes,
        "layout": {"kind": kind, "per_class": layout.per_class, "n_bases": layout.n_bases,
                   "downsample": layout.downsample, "rank": layout.rank, "floats": layout.floats,
                   "bytes": layout.bytes, "storage": {name: s.dtype for name, s in layout.storage.items()}},
        "device": str(device),
        **({"profile": config.run.profile} if config.run.profile else {}),
        "library": {"name": "compressdata", "version": __version__},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    bank = MemoryBank(
        **tensors,
        labels=labels.detach().to("cpu", torch.float32 if learned else torch.int64),
        classes=data.classes,
        image_size=data.image_shape[1:],
        normalization=data.normalization,
        recipe=recipe,
        provenance=provenance,
        label_space=label_space,
    )
    if all(s.dtype == "f32" for s in layout.storage.values()):
        return bank
    stored = stored_bank(bank, tensors, layout.storage, provenance)
    error = decoded_error(bank, stored)
    method = QUANTIZATION_AWARE if p.quant_aware else POST_TRAINING
    stored.provenance["quantization"] = quantization_record(method, layout.storage, error)
    log(f"stored as {storage_label(layout.storage)} ({method}): {stored.storage['bytes_stored']} bytes; "
        f"decoded error against the float values {error.summary()}")
    return stored
