"""Benchmarks of the distiller; prints markdown tables (see docs/benchmarks.md for the protocols).

(a) `--part memory`: peak memory and time of ONE outer iteration's hypergradient, reverse pass
    (`reverse_hypergradient`) vs plain autograd through the unroll (`naive_unroll_hypergradient`),
    at several unroll lengths T, on Fashion-MNIST shapes. Every measurement runs in a fresh
    subprocess. Peak memory: on CUDA torch.cuda.max_memory_allocated; on CPU the process's peak
    RSS (VmHWM of /proc/self/status, reset through /proc/self/clear_refs just before the
    hypergradient, so data loading does not count) minus its RSS then. Also reported on both:
    the peak bytes held by autograd graphs (saved tensors, counted through
    torch.autograd.graph.saved_tensors_hooks, each storage once) plus the reverse pass's stored
    weight copies.
(b) `--part protocol`: Fashion-MNIST at budget IPC 1 and 10 for random-real, pixels and rtp; each
    bank is evaluated on fresh networks and the rows are printed as they finish. The default is
    the CPU protocol (narrow ConvNet, short unrolls, few iterations); `--full` is the GPU protocol.
(c) `--part methods`: objectives x parameterizations at equal storage, with and without the mim
    add-on, on the small CPU protocol of `METHODS_PROTOCOL` (docs/methods.md); each bank is
    evaluated on `--networks` fresh networks, rows printed as they finish.

    python tools/bench_distill.py --part memory --unroll 50 150
    python tools/bench_distill.py --part protocol --ipc 1 --methods random-real pixels rtp
    python tools/bench_distill.py --part methods --ipc 1 --objectives bptt dm gm --mim 0 1
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call

from compressdata.bank.memory_bank import MemoryBank
from compressdata.data.sources import load_source
from compressdata.distill.bptt import naive_unroll_hypergradient, reverse_hypergradient, step_graph_bytes
from compressdata.distill.config import DistillConfig
from compressdata.distill.loop import distill, training_recipe
from compressdata.distill.methods import RealSampler, SyntheticSet, init_theta
from compressdata.distill.run import fresh_network
from compressdata.evaluate import evaluate_bank
from compressdata.params import layout_for_budget

# reverse: every step recomputed; kept: the last steps' graphs kept (DistillConfig.graph_memory_mb)
ENGINES = {"reverse": reverse_hypergradient, "kept": reverse_hypergradient, "naive": naive_unroll_hypergradient}

# CPU protocol: what fits in <= ~30 minutes a row on two cores. The outer lr is far above the
# official 0.1 because hypergradient norms here are ~0.03-0.1 (the clip at 2 never binds) and a
# few hundred iterations at 0.1 barely move the data (docs/benchmarks.md has the sweep).
CPU_PROTOCOL = dict(width=16, unroll_steps=20, iterations=200, inner_batch_per_class=10,
                    real_batch_per_class=32, init="real", outer_lr=30.0, downsample=2)
# GPU protocol: ConvNet-128, long unrolls, thousands of iterations (REFERENCE section 1).
FULL_PROTOCOL = dict(width=128, unroll_steps=150, iterations=5000, inner_batch_per_class=32,
                     real_batch_per_class=64, init="random", outer_lr=0.1, downsample=2)
N_BASES = {1: 16, 10: 64, 50: 64}  # other budgets: None, the library's budget rule
# (c) methods: shared settings, then per objective what fits a few minutes a row on one CPU thread.
METHODS_COMMON = dict(width=16, inner_batch_per_class=10, real_batch_per_class=32, init="real",
                      downsample=2)
METHODS_PROTOCOL = {
    "bptt": dict(iterations=30, unroll_steps=10, outer_lr=30.0),
    "dm": dict(iterations=150),
    "gm": dict(iterations=60),
}


class SavedTensorMeter:
    """Peak bytes of tensors held by autograd graphs while active (each storage counted once)."""

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self._refs: dict[int, int] = {}

    def _release(self, key: int, nbytes: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self.live -= nbytes

    def pack(self, t: torch.Tensor):
        storage = t.untyped_storage()
        key, nbytes = storage.data_ptr(), storage.nbytes()
        if key not in self._refs:
            self._refs[key] = 0
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        self._refs[key] += 1
        return _Held(t, lambda: self._release(key, nbytes))

    @staticmethod
    def unpack(held):
        return held.tensor

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


class _Held:
    __slots__ = ("tensor", "_on_free")

    def __init__(self, tensor: torch.Tensor, on_free) -> None:
        self.tensor = tensor
        self._on_free = on_free

    def __del__(self) -> None:
        self._on_free()


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+) kB", f.read()).group(1))


def _reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux /proc/PID/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _memory_child(engine: str, steps: int, width: int, per_class: int, device: str) -> dict:
    """One measurement (runs in a fresh process): time, peak memory, graph bytes."""
    dev = torch.device(device)
    data = load_source("fashion-mnist", "train")
    layout = layout_for_budget("memory", 1, data.num_classes, data.image_shape,
                               n_bases=N_BASES[1], downsample=CPU_PROTOCOL["downsample"])
    synthetic = SyntheticSet("memory", data.num_classes, layout.per_class, data.image_shape[1:])
    gen = torch.Generator().manual_seed(0)
    theta = {k: v.to(dev) for k, v in
             init_theta(synthetic, layout, "random", None, gen, data.image_shape).items()}
    real = RealSampler(data.images, data.labels, data.num_classes)
    x_real, y_real = (t.to(dev) for t in real.batch(64, gen))
    del data, real
    config = DistillConfig(width=width)
    module, params = fresh_network(config, (1, 28, 28), 10, 0, dev)
    seeds = list(range(steps))

    def outer(w):
        return F.cross_entropy(functional_call(module, w, (x_real,)), y_real)

    def batch_fn(th, t, g):
        return synthetic.minibatch(th, per_class, g)

    options = {}
    if engine == "kept":  # the reverse pass keeping as many graphs as the default budget holds
        x0, y0 = batch_fn(theta, 0, torch.Generator().manual_seed(seeds[0]))
        per_step = step_graph_bytes(module, params, x0, y0)
        options["kept_graphs"] = int(DistillConfig.graph_memory_mb * 2**20 // per_step)

    def run():
        return ENGINES[engine](module, params, theta, batch_fn, outer, steps=steps, seeds=seeds, **options)

    param_bytes = sum(p.numel() * p.element_size() for p in params.values())
    if dev.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        gc.collect()
        _reset_peak_rss()
        base = _status_kib("VmRSS") * 1024
    started = time.perf_counter()
    result = run()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _status_kib("VmHWM") * 1024 - base
    seconds = time.perf_counter() - started
    meter = SavedTensorMeter()
    with meter.hooks():
        run()
    stored = param_bytes * (steps - options.get("kept_graphs", 0)) if engine != "naive" else 0
    return {"engine": engine, "steps": steps, "seconds": seconds, "peak_bytes": peak,
            "graph_bytes": meter.peak, "stored_bytes": stored, "loss": float(result.loss),
            "grad_norm": float(sum(g.double().pow(2).sum() for g in result.grads.values()) ** 0.5),
            "device": str(dev), "memory_measure": "cuda max_memory_allocated" if dev.type ==
            "cuda" else "peak RSS (VmHWM, reset before) - RSS before"}


def memory_table(args: argparse.Namespace) -> list[dict]:
    rows = []
    for steps in args.unroll:
        for engine in ENGINES:
            cmd = [sys.executable, __file__, "--child", engine, str(steps), str(args.width),
                   str(args.inner_batch), args.device, "--threads", str(args.threads or 0)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                rows.append({"engine": engine, "steps": steps, "error": out.stderr.strip()[-300:]})
            else:
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            _print_memory_row(rows[-1], header=len(rows) == 1, args=args)
    return rows


def _mib(b: float) -> str:
    return f"{b / 2**20:.1f}"


def _print_memory_row(r: dict, header: bool, args: argparse.Namespace) -> None:
    if header:
        print(f"\n(a) one hypergradient, rtp IPC 1 (290 examples), ConvNet width {args.width}, "
              f"{args.inner_batch} synthetic/class/step, real batch 640, device {args.device}\n")
        print("| T | engine | seconds | peak memory MiB | graph MiB | stored weights MiB |")
        print("|---|---|---|---|---|---|")
    if "error" in r:
        print(f"| {r['steps']} | {r['engine']} | failed: {r['error']} | | | |")
    else:
        print(f"| {r['steps']} | {r['engine']} | {r['seconds']:.1f} | {_mib(r['peak_bytes'])} | "
              f"{_mib(r['graph_bytes'])} | {_mib(r['stored_bytes'])} |", flush=True)


def protocol_table(args: argparse.Namespace) -> list[dict]:
    settings = dict(FULL_PROTOCOL if args.full else CPU_PROTOCOL)
    for key in ("width", "unroll_steps", "iterations", "outer_lr", "inner_lr", "init",
                "outer_optimizer", "outer_schedule", "outer_betas", "learn_labels", "dsa",
                "dsa_strategy", "networks_per_iteration", "downsample", "zca"):
        if getattr(args, key) is not None:
            value = getattr(args, key)
            settings[key] = tuple(value) if isinstance(value, list) else value
    if args.inner_batch is not None:
        settings["inner_batch_per_class"] = args.inner_batch
    if args.real_batch is not None:
        settings["real_batch_per_class"] = args.real_batch
    if args.outer_optimizer == "adam" and args.outer_lr is None:
        raise SystemExit("--outer-optimizer adam needs --outer-lr: the protocol's outer lr is an SGD "
                         f"lr ({settings['outer_lr']})")
    train = load_source("fashion-mnist", "train")
    test = load_source("fashion-mnist", "test")
    print(f"\n(b) Fashion-MNIST protocol ({'full GPU' if args.full else 'CPU'}): {settings}, "
          f"evaluation: {args.networks} fresh ConvNet-{settings['width']} per bank, "
          f"{args.eval_epochs or 'recipe (300, 1000 with DSA)'} epochs, full test split\n")
    print("| IPC | method | layout | examples | floats | distill s | accuracy % (mean +- std) |")
    print("|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for ipc in args.ipc:
        for method in args.methods:
            config = DistillConfig(method=method, budget_ipc=ipc, seed=args.seed,
                                   n_bases=args.n_bases or N_BASES.get(ipc), device=args.device,
                                   eval_every=args.eval_every, **{
                                       k: v for k, v in settings.items()
                                       if method != "random-real" or k in ("width",)})
            if method == "random-real":
                config = replace(config, iterations=1)
            if args.checkpoint_root:
                config = replace(config, checkpoint_dir=str(
                    Path(args.checkpoint_root) / f"ipc{ipc}-{method}"), resume=args.resume)
            started = time.perf_counter()
            bank = distill(config, train, progress=args.progress, log=lambda s: None)
            seconds = time.perf_counter() - started
            result = evaluate_bank(bank, test, networks=args.networks, epochs=args.eval_epochs,
                                   width=settings["width"], device=args.device, seed=args.seed,
                                   progress=args.progress)
            bank.add_evaluation(result)
            if args.out_dir:
                Path(args.out_dir).mkdir(parents=True, exist_ok=True)
                bank.save(Path(args.out_dir) / f"fmnist-ipc{ipc}-{method}.safetensors")
            layout = bank.provenance["layout"]
            desc = (f"K={layout['n_bases']} ds={layout['downsample']} r={layout['per_class']}"
                    if bank.kind == "memory" else f"{layout['per_class']}/class")
            row = {"ipc": ipc, "method": method, "layout": desc, "examples": len(bank),
                   "floats": bank.storage["floats_stored"], "distill_seconds": seconds,
                   "accuracies": result.accuracies, "mean": result.mean, "std": result.std}
            rows.append(row)
            print(f"| {ipc} | {method} | {desc} | {len(bank)} | {row['floats']} | "
                  f"{seconds:.0f} | {100 * result.mean:.2f} +- {100 * result.std:.2f} |",
                  flush=True)
    return rows


def methods_table(args: argparse.Namespace) -> list[dict]:
    train = load_source("fashion-mnist", "train")
    test = load_source("fashion-mnist", "test")
    if args.test_examples:
        test = test.subset(torch.arange(args.test_examples))
    print(f"\n(c) Fashion-MNIST methods (CPU): {METHODS_COMMON}, per objective {METHODS_PROTOCOL}, "
          f"mim temperature {args.mim_temperature}; evaluation: {args.networks} fresh "
          f"ConvNet-{METHODS_COMMON['width']} per bank, {args.eval_epochs or 300} epochs, "
          f"{len(test)} test images\n")
    print("| IPC | objective | param | mim | examples | floats | distill s | accuracy % (mean +- std) |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for ipc in args.ipc:
        if args.baseline:
            config = DistillConfig(method="random-real", budget_ipc=ipc, seed=args.seed,
                                   device=args.device, width=METHODS_COMMON["width"])
            rows.append(_methods_row(config, train, test, args))
            for kind in (k for k in args.params if k != "pixels"):  # pixels' init IS random-real
                config = DistillConfig(parameterization=kind, budget_ipc=ipc, seed=args.seed,
                                       n_bases=N_BASES.get(ipc), **METHODS_COMMON)
                rows.append(_methods_row(config, train, test, args, init_only=True))
        for objective in args.objectives:
            for kind in args.params:
                for mim in args.mim:
                    config = DistillConfig(
                        objective=objective, parameterization=kind, budget_ipc=ipc, seed=args.seed,
                        n_bases=N_BASES.get(ipc), device=args.device, mim_weight=mim,
                        mim_temperature=args.mim_temperature,
                        **{**METHODS_COMMON, **METHODS_PROTOCOL[objective]})
                    rows.append(_methods_row(config, train, test, args))
    return rows


def _init_bank(config: DistillConfig, train) -> MemoryBank:
    """The bank of the initialisation alone (no distillation step): what every objective starts
    from with init real (pixels: random real images; memory, lowrank: truncated SVDs of them)."""
    layout = layout_for_budget(config.kind, config.budget_ipc, train.num_classes, train.image_shape,
                               n_bases=config.n_bases, downsample=config.downsample, rank=config.rank)
    synthetic = SyntheticSet(config.kind, train.num_classes, layout.per_class, train.image_shape[1:])
    real = RealSampler(train.images, train.labels, train.num_classes)
    theta = init_theta(synthetic, layout, config.resolved_init, real,
                       torch.Generator().manual_seed(config.seed), train.image_shape)
    return MemoryBank(**theta, labels=synthetic.hard_labels(), classes=train.classes,
                      image_size=train.image_shape[1:], normalization=train.normalization,
                      recipe=training_recipe(config))


def _methods_row(config: DistillConfig, train, test, args: argparse.Namespace,
                 init_only: bool = False) -> dict:
    started = time.perf_counter()
    bank = _init_bank(config, train) if init_only else distill(config, train, progress=args.progress,
                                                                log=lambda s: None)
    seconds = time.perf_counter() - started
    result = evaluate_bank(bank, test, networks=args.networks, epochs=args.eval_epochs,
                           width=config.width, device=args.device, seed=args.seed,
                           progress=args.progress)
    if args.out_dir:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        bank.add_evaluation(result)
        name = f"init-{config.kind}" if init_only else config.method_name
        bank.save(Path(args.out_dir) / f"fmnist-ipc{config.budget_ipc:g}-{name}.safetensors")
    objective = "init only" if init_only else "-" if config.method == "random-real" else config.objective
    row = {"ipc": config.budget_ipc, "objective": objective, "param": config.kind,
           "mim": config.mim_weight, "examples": len(bank), "floats": bank.storage["floats_stored"],
           "distill_seconds": seconds, "accuracies": result.accuracies, "mean": result.mean,
           "std": result.std}
    print(f"| {row['ipc']:g} | {objective} | {row['param']} | {row['mim']:g} | "
          f"{row['examples']} | {row['floats']} | {seconds:.0f} | {100 * result.mean:.2f} +- "
          f"{100 * result.std:.2f} |", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--part", choices=("memory", "protocol", "methods", "all"), default="all")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="also write all rows to this JSON file")
    g = p.add_argument_group("(a) memory")
    g.add_argument("--unroll", type=int, nargs="+", default=[50, 150])
    g.add_argument("--width", type=int, default=None, help="ConvNet width ((a) default 16)")
    g.add_argument("--inner-batch", type=int, default=None,
                   help="synthetic per class per step ((a) default 10; (b) the protocol's)")
    g = p.add_argument_group("(b) protocol")
    g.add_argument("--full", action="store_true", help="the GPU protocol (ConvNet-128, T=150)")
    g.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    g.add_argument("--methods", nargs="+", default=["random-real", "pixels", "rtp"],
                   choices=("random-real", "pixels", "rtp"))
    g.add_argument("--iterations", type=int, default=None)
    g.add_argument("--unroll-steps", type=int, default=None)
    g.add_argument("--real-batch", type=int, default=None,
                   help="real examples per class in the outer loss (CPU protocol "
                        f"{CPU_PROTOCOL['real_batch_per_class']}, GPU {FULL_PROTOCOL['real_batch_per_class']})")
    g.add_argument("--outer-lr", type=float, default=None)
    g.add_argument("--inner-lr", type=float, default=None, help="inner SGD lr (default 0.01)")
    g.add_argument("--outer-optimizer", choices=("sgd", "adam"), default=None,
                   help="outer optimiser (default sgd; adam needs --outer-lr, e.g. 0.01)")
    g.add_argument("--outer-schedule", choices=("constant", "cosine"), default=None)
    g.add_argument("--outer-betas", type=float, nargs=2, default=None, help="Adam's betas")
    g.add_argument("--learn-labels", action="store_true", default=None,
                   help="learn soft labels along with the examples")
    g.add_argument("--dsa", action="store_true", default=None,
                   help="DSA while distilling; evaluation then trains with DSA for 1000 epochs")
    g.add_argument("--dsa-strategy", default=None, help="DSA ops while distilling (default flip_rotate)")
    g.add_argument("--networks-per-iteration", type=int, default=None,
                   help="fresh networks whose hypergradients are averaged each iteration (default 1)")
    g.add_argument("--n-bases", type=int, default=None,
                   help=f"rtp bases K (default by IPC: {N_BASES}, else as many as half the budget holds)")
    g.add_argument("--downsample", type=int, default=None,
                   help=f"rtp bases' downsampling ds (default {CPU_PROTOCOL['downsample']})")
    g.add_argument("--zca", action="store_true", default=None,
                   help="distil and evaluate in ZCA-whitened space "
                        f"(regularization {DistillConfig.zca_regularization})")
    g.add_argument("--init", choices=("random", "real"), default=None)
    g.add_argument("--networks", type=int, default=5)
    g.add_argument("--eval-epochs", type=int, default=None,
                   help="default: the bank recipe's (300; 1000 with DSA)")
    g.add_argument("--eval-every", type=int, default=0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out-dir", default=None, help="save the evaluated banks here")
    g.add_argument("--checkpoint-root", default=None, help="checkpoint each row here")
    g.add_argument("--resume", action="store_true", help="resume rows from --checkpoint-root")
    g.add_argument("--progress", action="store_true")
    g = p.add_argument_group("(c) methods (also uses --ipc, --networks, --eval-epochs, --seed)")
    g.add_argument("--baseline", action="store_true",
                   help="also per IPC a random-real row and an init-only row per --params")
    g.add_argument("--objectives", nargs="*", default=["bptt", "dm", "gm"],
                   choices=tuple(METHODS_PROTOCOL))
    g.add_argument("--params", nargs="+", default=["pixels", "memory", "lowrank"],
                   choices=("pixels", "memory", "lowrank"))
    g.add_argument("--mim", type=float, nargs="+", default=[0.0, 1.0], help="mim weights (0: off)")
    g.add_argument("--mim-temperature", type=float, default=0.1)
    g.add_argument("--test-examples", type=int, default=0, help="first N test images (0: all)")
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        engine, steps, width, per_class, device = args.child
        print(json.dumps(_memory_child(engine, int(steps), int(width), int(per_class), device)))
        return 0
    rows: dict[str, list[dict]] = {}
    if args.part in ("memory", "all"):
        rows["memory"] = memory_table(with_memory_defaults(args))
    if args.part in ("protocol", "all"):
        rows["protocol"] = protocol_table(args)
    if args.part in ("methods", "all"):
        rows["methods"] = methods_table(args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def with_memory_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """A copy of args with part (a)'s own defaults for the options it shares with (b): width 16,
    10 synthetic examples per class per step."""
    copy = argparse.Namespace(**vars(args))
    copy.width = args.width or 16
    copy.inner_batch = args.inner_batch or 10
    return copy


if __name__ == "__main__":
    sys.exit(main())
