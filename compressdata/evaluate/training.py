"""Training one fresh network on a (distilled) training set with a recipe, and testing it once at the
end on a real test split (never a best epoch): the loop every evaluation and baseline runs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from compressdata.augment import DEFAULT_STRATEGY, dsa
from compressdata.bank.metadata import (
    AUGMENTATIONS,
    LABEL_LOSSES,
    LR_SCHEDULES,
    TrainingRecipe,
)
from compressdata.data.sources import RealData
from compressdata.errors import UsageError
from compressdata.models import build_model
from compressdata.runtime.transfer import to_device

LABEL_SPACES = ("index", "probabilities", "logits")
OPTIMIZERS = ("sgd", "adam", "adamw")


def resolve_device(device: torch.device | str | None) -> torch.device:
    """`device`, or CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def target_distribution(targets: torch.Tensor, label_space: str, num_classes: int,
                        temperature: float = 1.0) -> torch.Tensor:
    """Targets as distributions [N, num_classes]: one-hot for index labels, the probabilities as
    given, softmax(logits / temperature) for logits (the bank's `soft_targets` rule)."""
    if label_space == "index":
        return F.one_hot(targets, num_classes).to(torch.float32)
    if label_space == "probabilities":
        return targets.to(torch.float32)
    return torch.softmax(targets.to(torch.float32) / temperature, dim=1)


def label_loss(logits: torch.Tensor, targets: torch.Tensor, label_space: str, loss: str,
               temperature: float = 1.0) -> torch.Tensor:
    """Mean loss of network `logits` [n, K] against `targets` per `TrainingRecipe.label_loss`.

    cross_entropy: index targets only. soft_cross_entropy: -sum q * log_softmax(logits) with q the
    target distribution. kl_divergence: KL(q || softmax(logits / T)) * T^2, where q is
    softmax(targets / T) for logits, the given probabilities, or one-hot for index targets.
    """
    if loss == "cross_entropy":
        if label_space != "index":
            raise UsageError(f"label_loss 'cross_entropy' needs index labels; got {label_space!r} "
                             f"labels (use 'soft_cross_entropy' or 'kl_divergence')")
        return F.cross_entropy(logits, targets)
    q = target_distribution(targets, label_space, logits.shape[1], temperature)
    if loss == "soft_cross_entropy":
        return -(q * F.log_softmax(logits, dim=1)).sum(1).mean()
    if loss == "kl_divergence":
        log_p = F.log_softmax(logits / temperature, dim=1)
        return F.kl_div(log_p, q, reduction="batchmean") * temperature ** 2
    raise UsageError(f"unknown label_loss {loss!r}; expected one of {LABEL_LOSSES}")


def _check_inputs(images: torch.Tensor, targets: torch.Tensor, label_space: str,
                  recipe: TrainingRecipe) -> None:
    if images.ndim != 4 or images.shape[0] == 0:
        raise UsageError(f"images must be a non-empty tensor [N, C, H, W]; got "
                         f"{tuple(images.shape)}")
    if label_space not in LABEL_SPACES:
        raise UsageError(f"unknown label_space {label_space!r}; expected one of {LABEL_SPACES}")
    expected = 1 if label_space == "index" else 2
    if targets.ndim != expected or targets.shape[0] != images.shape[0]:
        raise UsageError(f"{label_space} targets must have shape "
                         f"{'[N]' if expected == 1 else '[N, num_classes]'} with N = "
                         f"{images.shape[0]}; got {tuple(targets.shape)}")
    if label_space == "index" and targets.is_floating_point():
        raise UsageError(f"index targets must be integers; got {targets.dtype}")
    checks = (("optimizer", recipe.optimizer, OPTIMIZERS), ("lr_schedule", recipe.lr_schedule,
              LR_SCHEDULES), ("augmentation", recipe.augmentation, AUGMENTATIONS),
              ("label_loss", recipe.label_loss, LABEL_LOSSES))
    for field, value, allowed in checks:
        if value not in allowed:
            raise UsageError(f"recipe.{field} {value!r} is not supported; expected one of {allowed}")
    if recipe.label_loss == "cross_entropy" and label_space != "index":
        raise UsageError(f"recipe.label_loss 'cross_entropy' needs index labels; got "
                         f"{label_space!r} labels")
    if recipe.epochs < 1 or recipe.batch_size < 1:
        raise UsageError(f"recipe.epochs and recipe.batch_size must be >= 1; got "
                         f"{recipe.epochs} and {recipe.batch_size}")
    if not (math.isfinite(recipe.lr) and recipe.lr > 0):
        raise UsageError(f"recipe.lr must be a positive number, got {recipe.lr}")


def _optimizer(model: nn.Module, recipe: TrainingRecipe) -> torch.optim.Optimizer:
    params = model.parameters()
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    cls = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def _epoch_lr(recipe: TrainingRecipe, epoch: int) -> float:
    if recipe.lr_schedule == "step":
        return recipe.lr * (0.1 if epoch >= recipe.epochs // 2 else 1.0)
    if recipe.lr_schedule == "cosine":
        return recipe.lr * 0.5 * (1 + math.cos(math.pi * epoch / recipe.epochs))
    return recipe.lr


def train_network(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    recipe: TrainingRecipe,
    label_space: str = "index",
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: bool = False,
) -> nn.Module:
    """Train `model` on (images, targets) with `recipe`; returns it on `device` in eval mode.

    Mini-batches of `recipe.batch_size` in a fresh seeded order every epoch (the last one may be
    smaller); lr per `recipe.lr_schedule` ("step": x0.1 from half the epochs on); with augmentation
    "dsa" every batch gets DSA with per-image draws (strategy `recipe.extra["dsa_strategy"]`,
    default all six ops). Shuffling and augmentation draw from a generator seeded with `seed`.
    """
    _check_inputs(images, targets, label_space, recipe)
    device = resolve_device(device)
    model = model.to(device).train()
    x_all = images.detach().to(device, torch.float32)
    y_all = targets.detach().to(device)
    if label_space != "index":
        y_all = y_all.to(torch.float32)
    generator = torch.Generator().manual_seed(seed)
    strategy = recipe.extra.get("dsa_strategy", DEFAULT_STRATEGY)
    optimizer = _optimizer(model, recipe)
    n = x_all.shape[0]
    for epoch in tqdm(range(recipe.epochs), desc="epochs", leave=False, disable=not progress):
        for group in optimizer.param_groups:
            group["lr"] = _epoch_lr(recipe, epoch)
        order = to_device(torch.randperm(n, generator=generator), device)  # no host sync on CUDA
        for start in range(0, n, recipe.batch_size):
            batch = order[start:start + recipe.batch_size]
            x = x_all[batch]
            if recipe.augmentation == "dsa":
                x = dsa(x, strategy, generator)
            loss = label_loss(model(x), y_all[batch], label_space, recipe.label_loss,
                              recipe.label_temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def test_accuracy(model: nn.Module, test: RealData, device: torch.device | str | None = None,
                  batch_size: int = 1024) -> float:
    """Fraction of `test` (in its own normalisation) that `model` classifies correctly (counted on
    `device`, read back once)."""
    device = resolve_device(device)
    model = model.to(device).eval()
    images, labels = test.images, test.labels
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, len(test), batch_size):
        x = to_device(images[start:start + batch_size], device)
        y = to_device(labels[start:start + batch_size], device)
        correct += (model(x).argmax(dim=1) == y).sum()
    return int(correct) / max(len(test), 1)


test_accuracy.__test__ = False  # a library function, not a pytest test, wherever it is imported


def fresh_network_accuracies(
    images: torch.Tensor,
    targets: torch.Tensor,
    recipe: TrainingRecipe,
    test: RealData,
    seeds: Sequence[int],
    *,
    label_space: str = "index",
    device: torch.device | str | None = None,
    progress: bool = False,
    desc: str = "networks",
    epoch_progress: bool = False,
    compile_networks: bool = False,
) -> list[float]:
    """Test accuracy of one fresh `recipe.architecture` network per seed (shape from
    `recipe.network_options()`), trained on (images, targets) with `recipe` and tested once at the
    end on `test`. Weights are drawn from the seed inside a forked RNG, so the caller's global RNG
    state is untouched; on CPU a seed gives identical results. `epoch_progress`: a bar per network
    over its epochs too (long runs). `compile_networks`: run each network through `torch.compile`
    (docs/evaluation.md: faster from IPC 10 on after a one-time compile; the same training up to
    floating-point rounding, so not bit-identical to the eager run)."""
    c, h, w = test.image_shape
    accuracies = []
    for seed in tqdm(list(seeds), desc=desc, disable=not progress):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(recipe.architecture, c, test.num_classes, (h, w), **recipe.network_options())
        if compile_networks:
            model = torch.compile(model)
        train_network(model, images, targets, recipe, label_space, device, seed=seed, progress=epoch_progress)
        accuracies.append(test_accuracy(model, test, device))
    return accuracies
