"""Distil one task into a growing memory bank: new addresses (and optionally new bases) with the
bank's existing bases frozen, or fine-tuned with `finetune_bases`.

The task's real data are seen with task-local labels (a network with one output per task class);
the BPTT objective (`distill.objectives.bptt`) and the outer SGD step (`distill.loop`) are used
unchanged. `TaskSynthetic` decodes the learnable tensors through the one memory decode with the
frozen bases prepended, so the hypergradient flows only into what the task may change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from compressdata.bank.memory_bank import MemoryBank
from compressdata.continual.replay import MixedSampler, old_memories
from compressdata.data.sampler import BalancedSampler, ClassBalancedSampler
from compressdata.data.sources import RealData
from compressdata.distiller.checkpoint import DistillState
from compressdata.distiller.config import DistillConfig
from compressdata.distiller.loop import outer_iteration, resolve_device, training_recipe
from compressdata.distiller.run import DistillRun
from compressdata.distiller.synthetic import Augment, SyntheticSet
from compressdata.errors import UsageError
from compressdata.params import Layout, get_parameterization
from compressdata.runtime.transfer import to_device

# A first task's bases resolution when the config leaves ds to the budget rule: the official rtp ds.
FIRST_TASK_DOWNSAMPLE = 2


@dataclass(frozen=True)
class TaskSynthetic(SyntheticSet):
    """A task's synthetic set: theta holds `addresses` [m*r, K_old + k] and `new_bases` [k, C, h, w]
    (frozen old bases prepended), or `bases` (all, fine-tuned) and `addresses`. With `old` (replay)
    its inner minibatches also carry earlier memories (see `continual.replay`)."""

    frozen: torch.Tensor | None = field(default=None, compare=False)
    label_map: torch.Tensor | None = field(default=None, compare=False)
    old: BalancedSampler | None = field(default=None, compare=False)

    def minibatch(self, theta: dict[str, torch.Tensor], per_class: int, generator: torch.Generator,
                  augment: Augment | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Without `old`, the task's rows alone (task-local labels). With `old` (replay), the task's
        rows labelled `label_map[c]` in the seen-class space, then `per_class` earlier memories of
        every earlier class, augmented together."""
        if self.old is None:
            return super().minibatch(theta, per_class, generator, augment)
        device = next(iter(theta.values())).device
        index = to_device(self.sample_index(per_class, generator), device)
        x_old, y_old = self.old.batch(per_class, generator)
        x = torch.cat([self.decode(theta, index), to_device(x_old, device)])
        if augment is not None:
            x = augment(x, generator)
        return x, torch.cat([self.label_map.to(device)[index // self.per_class], to_device(y_old, device)])

    def decode(self, theta: dict[str, torch.Tensor], index: torch.Tensor | None = None) -> torch.Tensor:
        if "bases" in theta:
            bases = theta["bases"]
        else:
            bases = theta["new_bases"] if self.frozen is None else torch.cat([self.frozen, theta["new_bases"]])
        return get_parameterization("memory").decode({"bases": bases, "addresses": theta["addresses"]},
                                                     index, self.image_size, self.upsample)


def local_view(data: RealData, classes: list[int]) -> RealData:
    """The examples of `classes` with labels renumbered 0..len(classes)-1 and only those class names."""
    keep = torch.isin(data.labels, torch.tensor(classes))
    remap = torch.full((data.num_classes,), -1, dtype=torch.int64)
    remap[torch.tensor(classes)] = torch.arange(len(classes))
    return RealData(data.pixels[keep], remap[data.labels[keep]], [data.classes[c] for c in classes], data.name,
                    data.split, data.normalization)


def real_rows(real: ClassBalancedSampler, per_class: int, generator: torch.Generator) -> torch.Tensor:
    """`per_class` rows per class (class-major): distinct real images, and beyond a class's size
    random convex mixtures of two of its images (so no two rows start equal)."""
    rows = []
    for idx in real.by_class:
        take = idx[torch.randperm(idx.numel(), generator=generator)[:per_class]]
        images = real.images[take.to(real.images.device)].cpu()
        extra = per_class - take.numel()
        if extra > 0:
            pairs = idx[torch.randint(idx.numel(), (2, extra), generator=generator)].to(real.images.device)
            lam = torch.rand(extra, 1, 1, 1, generator=generator)
            images = torch.cat([images, lam * real.images[pairs[0]].cpu() + (1 - lam) * real.images[pairs[1]].cpu()])
        rows.append(images)
    return torch.cat(rows)


def init_task_theta(real: ClassBalancedSampler, per_class: int, frozen: torch.Tensor | None, new_bases: int,
                    downsample: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Addresses and new bases fitted to r real images per class, downsampled by ds: least squares
    onto the frozen bases, then a rank-k truncated SVD of what they leave unexplained (CPU float32)."""
    images = real_rows(real, per_class, generator)
    small = F.avg_pool2d(images.double().cpu(), downsample)
    x = small.reshape(small.shape[0], -1)
    coef = x.new_zeros(x.shape[0], 0)
    if frozen is not None:
        b = frozen.double().reshape(frozen.shape[0], -1).to(x.device)
        coef = torch.linalg.lstsq(b.T, x.T).solution.T
        x = x - coef @ b
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    if s.numel() < new_bases:
        raise UsageError(f"init needs at least {new_bases} synthetic rows for {new_bases} new bases, got {s.numel()}")
    root = s[:new_bases].sqrt()
    bases = (root.unsqueeze(1) * vh[:new_bases]).reshape(new_bases, *small.shape[1:])
    addresses = torch.cat([coef, u[:, :new_bases] * root], dim=1)
    return {"addresses": addresses.float().contiguous(), "new_bases": bases.float().contiguous()}


def task_downsample(config: DistillConfig, bank: MemoryBank | None) -> int:
    """ds of a task's new bases: the bank's own (config.parameterization.downsample, if set, must agree); for a first
    task config.parameterization.downsample, else FIRST_TASK_DOWNSAMPLE."""
    if bank is None:
        return config.parameterization.downsample or FIRST_TASK_DOWNSAMPLE
    ds = bank.image_shape[-1] // bank.tensors["bases"].shape[-1]
    if config.parameterization.downsample is not None and config.parameterization.downsample != ds:
        raise UsageError(f"downsample {config.parameterization.downsample} does not match the bank's bases, "
                         f"stored at ds={ds}")
    return ds


def distill_task(config: DistillConfig, data: RealData, classes: list[int], name: str,
                 bank: MemoryBank | None = None, *, new_bases: int, per_class: int,
                 finetune_bases: bool = False, replay_old: bool = False, progress: bool = True) -> MemoryBank:
    """`bank` grown by task `name`: `per_class` address rows for each of `classes` (indices into
    data.classes) distilled from `data` with BPTT, plus `new_bases` new bases. With no bank, the
    first bank (all its bases new). Existing bases stay frozen (bit-identical, as do old addresses)
    unless `finetune_bases`, which trains them too (old examples then change).

    `replay_old` (needs a bank): distil in the label space of all classes seen so far, with the
    bank's decoded examples (frozen) mixed class-balanced into every inner minibatch and into the
    outer batch of real task images (`continual.replay`); without it, the task's classes alone.

    Uses config's network, unroll, batch, learning-rate, downsample and seed settings.
    """
    config.validate()
    device = resolve_device(config.run.device)
    if bank is not None and bank.kind != "memory":
        raise UsageError(f"continual distillation grows a memory bank, got kind {bank.kind!r}")
    if bank is not None and bank.quantized:
        raise UsageError("continual distillation grows a float bank; this one stores 8-bit tensors (grow the "
                         "float bank, then quantise it)")
    if new_bases < (1 if bank is None else 0):
        raise UsageError(f"new_bases must be >= {1 if bank is None else 0}, got {new_bases}")
    local = local_view(data, classes)
    frozen = None if bank is None else bank.tensors["bases"].to(device, torch.float32)
    k_total = new_bases + (0 if frozen is None else frozen.shape[0])
    upsample = bank.upsample if bank is not None else "bilinear"
    real = ClassBalancedSampler(local.images.to(device), local.labels, len(classes))
    downsample = task_downsample(config, bank)
    layout = Layout("memory", per_class, k_total, downsample)
    if replay_old and bank is not None:
        if finetune_bases:
            raise UsageError("replay_old replays frozen memories; it cannot be combined with finetune_bases")
        seen = bank.classes + [n for n in local.classes if n not in bank.classes]
        label_map = torch.tensor([seen.index(n) for n in local.classes])
        old = old_memories(bank, seen, device)
        synthetic = TaskSynthetic("memory", len(classes), per_class, local.image_shape[1:], upsample, frozen,
                                  label_map, old)
        view = RealData(local.pixels, label_map[local.labels], seen, local.name, local.split, local.normalization)
        run = DistillRun(config, device, view, MixedSampler(real, label_map, old), synthetic, layout)
    else:
        synthetic = TaskSynthetic("memory", len(classes), per_class, local.image_shape[1:], upsample, frozen)
        run = DistillRun(config, device, local, real, synthetic, layout)
    generator = torch.Generator().manual_seed(config.run.seed)
    theta = init_task_theta(real, per_class, frozen, new_bases, downsample, generator)
    if finetune_bases and frozen is not None:
        theta = {"bases": torch.cat([frozen.cpu(), theta.pop("new_bases")]), **theta}
    theta = {k: v.to(device) for k, v in theta.items()}
    state = DistillState(0, theta, {k: torch.zeros_like(v) for k, v in theta.items()}, generator.get_state())
    for _ in tqdm(range(config.outer.iterations), desc=f"distill {name}", disable=not progress, leave=False):
        state, _metrics = outer_iteration(run, state)
    return _grown(config, local, layout.per_class, state.theta, classes, name, bank, data, device)


def _grown(config: DistillConfig, local: RealData, per_class: int, theta: dict[str, torch.Tensor],
           classes: list[int], name: str, bank: MemoryBank | None, data: RealData,
           device: torch.device) -> MemoryBank:
    theta = {k: v.detach().cpu() for k, v in theta.items()}
    k_old = 0 if bank is None else int(bank.tensors["bases"].shape[0])
    all_bases = theta["bases"] if "bases" in theta else None
    added = all_bases[k_old:] if all_bases is not None else theta["new_bases"]
    local_labels = torch.arange(len(classes)).repeat_interleave(per_class)
    if bank is None:
        provenance = {"source": {"dataset": data.name, "split": data.split},
                      "method": {"name": "rtp-continual", "hyperparameters": config.to_dict()},
                      "device": str(device)}
        return MemoryBank(bases=added, addresses=theta["addresses"], labels=local_labels, classes=local.classes,
                          image_size=local.image_shape[1:], normalization=local.normalization,
                          recipe=training_recipe(config), provenance=provenance,
                          tasks=[{"name": name, "classes": list(range(len(classes))),
                                  "rows": [0, int(local_labels.numel())], "bases": [0, int(added.shape[0])]}])
    names = [data.classes[c] for c in classes]
    new_names = [n for n in names if n not in bank.classes]
    order = bank.classes + new_names
    labels = torch.tensor([order.index(n) for n in names])[local_labels]
    grown = bank.extend(name, labels, classes=new_names, addresses=theta["addresses"], bases=added)
    if all_bases is None:
        return grown
    tensors = dict(grown.tensors, bases=all_bases.to(grown.tensors["bases"].dtype))
    return MemoryBank(**tensors, labels=grown.labels, classes=grown.classes, image_size=grown.image_size,
                      upsample=grown.upsample, normalization=grown.normalization, recipe=grown.recipe,
                      provenance=grown.provenance, tasks=grown.tasks, extra_metadata=grown.extra_metadata)
