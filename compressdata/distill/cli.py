"""`compressdata distill`: parse, call the library, print.

`add_distill_commands(subparsers)` registers `distill` and `experts` on the main parser (`compressdata.cli`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compressdata.distill.cli_objectives import (
    add_experts_command,
    add_objective_options,
    objective_config_kwargs,
)
from compressdata.distill.config import (
    ADAM_BETAS,
    ADAM_OUTER_LR,
    ARCHS,
    INITS,
    KINDS,
    METHODS,
    NETWORK_BATCHINGS,
    OUTER_DEFAULTS,
    DistillConfig,
)
from compressdata.distill.distributed import distributed_session
from compressdata.distill.outer import OPTIMIZERS, SCHEDULES
from compressdata.params.budget import MIN_BASES_PER_CLASS


def add_distill_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `distill` and `experts` (each sets `func`, returning an exit code)."""
    d = DistillConfig()
    p = subparsers.add_parser(
        "distill", help="distil a real dataset into a memory bank (any parameterization x objective)",
        description="Distil a labelled dataset into a bank file. Three axes combine freely: the "
                    "parameterization (--param pixels | memory | lowrank), the objective "
                    "(--objective bptt | dm | gm ...) and add-ons (--mim-weight). --method is a "
                    "preset: rtp = memory + bptt (addressable memories, the default), pixels = "
                    "pixels + bptt, random-real = a random real subset; --param/--objective override "
                    "it. Every parameterization spends the same bytes for the same budget (--budget-ipc or "
                    "--budget-bytes), at the sizes --storage-dtype gives.")
    p.add_argument("--source", default=d.source, help="real source: a preset (fashion-mnist, "
                   "mnist, cifar10, ...) or idx:/torchvision:/hf:/folder:/wds: (default %(default)s)")
    p.add_argument("--split", default=d.split, choices=("train", "test"))
    p.add_argument("--budget-ipc", type=float, default=d.budget_ipc,
                   help="storage budget in images per class: the bytes of that many float32 images per class "
                        "(default %(default)s)")
    p.add_argument("--budget-bytes", type=int, default=d.budget_bytes,
                   help="storage budget in bytes, instead of --budget-ipc (the bytes of b 8-bit images per class "
                        "are b*C*H*W*classes, 7840 for one Fashion-MNIST image per class)")
    p.add_argument("--storage-dtype", default=d.storage_dtype,
                   help="how the bank stores its tensors: f32, f16, bf16, int8 (8-bit, one scale and zero point "
                        "per tensor), int8-row (one per row), or per tensor, e.g. 'bases=f16,addresses=int8'; the "
                        "budget buys values at these sizes (default %(default)s)")
    p.add_argument("--quantization-aware", action="store_true",
                   help="train through the stored values (straight-through gradients) instead of quantising the "
                        "float result after distillation")
    p.add_argument("--method", default=d.method, choices=METHODS,
                   help="preset of parameterization + objective (default %(default)s)")
    p.add_argument("--param", default=None, choices=KINDS,
                   help="parameterization (default: the method's; rtp: memory)")
    p.add_argument("--objective", default=d.objective,
                   help=f"objective, one of {', '.join(_objective_names())} (default %(default)s)")
    p.add_argument("--out", "-o", required=True, help="bank file to write (.safetensors)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    g = p.add_argument_group("parameterization")
    g.add_argument("--n-bases", type=int, default=d.n_bases,
                   help="K memories (rtp; default: as many as half the budget holds at --downsample)")
    g.add_argument("--downsample", type=int, default=d.downsample,
                   help="bases stored at 1/ds resolution (rtp; default: the finest at which half the "
                        f"budget buys {MIN_BASES_PER_CLASS} bases per class)")
    g.add_argument("--rank", type=int, default=d.rank, help="rank per channel (lowrank)")
    g.add_argument("--init", default=None, choices=INITS,
                   help="initialisation (default: random for rtp, real for everything else); memory: real "
                        "(SVD of r real images per class), pca or kmeans (bases from a pool of real images, "
                        "least-squares addresses)")
    g.add_argument("--learn-labels", action="store_true",
                   help="learn soft labels (stored as logits; recipe soft_cross_entropy)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--iterations", type=int, default=d.iterations, help="outer iterations")
    g.add_argument("--unroll-steps", type=int, default=d.unroll_steps,
                   help="T inner SGD steps back-propagated through (default %(default)s)")
    g.add_argument("--bptt-window", type=int, default=d.bptt_window,
                   help="random truncated BPTT (bptt): unroll a length drawn from [W, T] and "
                        "differentiate only its last W steps (default: all T steps)")
    g.add_argument("--graph-memory-mb", type=float, default=d.graph_memory_mb,
                   help="memory for keeping the last inner steps' graphs from the forward run instead "
                        "of recomputing them (bptt; same result, faster; 0: always recompute; "
                        "default %(default)s)")
    g.add_argument("--inner-lr", type=float, default=d.inner_lr)
    g.add_argument("--inner-momentum", type=float, default=d.inner_momentum)
    g.add_argument("--inner-batch", type=int, default=d.inner_batch_per_class,
                   help="synthetic examples per class per inner step")
    g.add_argument("--real-batch", type=int, default=d.real_batch_per_class,
                   help="real examples per class in the outer batch")
    defaults = "; ".join(f"{name}: lr {lr:g}, momentum {mu:g}, clip {clip or 'none'}"
                         for name, (lr, mu, clip) in OUTER_DEFAULTS.items())
    g.add_argument("--outer-lr", type=float, default=None,
                   help=f"outer lr (sgd default per objective: {defaults}; lowrank: momentum 0.5; "
                        f"adam: {ADAM_OUTER_LR:g})")
    g.add_argument("--outer-momentum", type=float, default=None, help="outer SGD momentum (sgd only)")
    g.add_argument("--outer-optimizer", default=None, choices=OPTIMIZERS,
                   help="outer optimiser (default: adam for dwa, as its paper; sgd for the others)")
    g.add_argument("--outer-betas", type=float, nargs=2, default=None, metavar=("B1", "B2"),
                   help=f"Adam betas of the outer optimiser (default {ADAM_BETAS[0]:g} {ADAM_BETAS[1]:g})")
    g.add_argument("--outer-schedule", default=None, choices=SCHEDULES,
                   help="outer lr schedule: constant, or cosine lr * 0.5 * (1 + cos(pi * i / iterations)) "
                        "(default: cosine for dwa with adam, else constant)")
    g.add_argument("--clip-norm", type=float, default=None, help="outer gradient-norm clip")
    g.add_argument("--arch", default=d.arch, choices=ARCHS, help="inner network")
    g.add_argument("--width", type=int, default=d.width, help="ConvNet/MLP width")
    g.add_argument("--depth", type=int, default=d.depth, help="ConvNet/MLP depth")
    g.add_argument("--gm-outer-loop", type=int, default=None,
                   help="gm: matchings per outer iteration (default: 1 below IPC 10, else 5)")
    g.add_argument("--gm-inner-loop", type=int, default=None,
                   help="gm: network SGD steps between matchings (default: 1 below IPC 10, else 10)")
    g.add_argument("--mim-weight", type=float, default=d.mim_weight,
                   help="weight of the MIM contrastive add-on loss (0: off)")
    g.add_argument("--mim-temperature", type=float, default=d.mim_temperature,
                   help="temperature of the MIM NCE loss")
    g.add_argument("--dsa", action="store_true", help="differentiable siamese augmentation")
    g.add_argument("--dsa-strategy", default=d.dsa_strategy)
    g.add_argument("--zca", action="store_true", help="distil in ZCA-whitened space")
    g.add_argument("--zca-regularization", type=float, default=d.zca_regularization)
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    g.add_argument("--amp", action="store_true",
                   help="bfloat16 autocast (CUDA, and CPUs with AVX512-BF16 or AMX; emulated elsewhere)")
    g = p.add_argument_group("long runs")
    g.add_argument("--checkpoint-dir", default=None,
                   help="checkpoints and metrics.jsonl (default: OUT.ckpt)")
    g.add_argument("--no-checkpoints", action="store_true", help="write no checkpoints")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    g.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    g.add_argument("--eval-every", type=int, default=d.eval_every,
                   help="quick test evaluation every N iterations (0: never)")
    g.add_argument("--eval-epochs", type=int, default=d.eval_epochs)
    g.add_argument("--eval-networks", type=int, default=d.eval_networks)
    g.add_argument("--final-eval-networks", type=int, default=0,
                   help="evaluate the result with N fresh networks (its recipe) and record it")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("scale-out (docs/scaling.md; launch with torchrun for several processes)")
    g.add_argument("--networks-per-iteration", type=int, default=d.networks_per_iteration,
                   help="G fresh networks averaged per outer iteration, split over the torchrun "
                        "processes; the result does not depend on their number (default %(default)s)")
    g.add_argument("--network-batching", default=d.network_batching, choices=NETWORK_BATCHINGS,
                   help="a process's networks in a Python loop or vectorised with vmap (bptt)")
    g.add_argument("--collective-timeout", type=float, default=d.collective_timeout,
                   help="seconds a rank waits for the others before failing (default %(default)s)")
    g.add_argument("--streaming", action="store_true",
                   help="stream a wds:/hf: source instead of loading it into memory")
    g.add_argument("--stream-buffer", type=int, default=d.stream_buffer_per_class,
                   help="real examples buffered per class when streaming (default %(default)s)")
    g.add_argument("--stream-workers", type=int, default=d.stream_workers,
                   help="DataLoader worker processes reading the stream (default %(default)s)")
    add_objective_options(p)
    p.set_defaults(func=run_distill)
    add_experts_command(subparsers)


def _config(args: argparse.Namespace, out: Path) -> DistillConfig:
    checkpoint_dir = None if args.no_checkpoints else (args.checkpoint_dir or f"{out}.ckpt")
    return DistillConfig(
        source=args.source, split=args.split, method=args.method, parameterization=args.param,
        objective=args.objective, budget_ipc=args.budget_ipc, budget_bytes=args.budget_bytes,
        storage_dtype=args.storage_dtype, quant_aware=args.quantization_aware, n_bases=args.n_bases,
        downsample=args.downsample, rank=args.rank, init=args.init,
        iterations=args.iterations, unroll_steps=args.unroll_steps, bptt_window=args.bptt_window,
        graph_memory_mb=args.graph_memory_mb, inner_lr=args.inner_lr,
        inner_momentum=args.inner_momentum, inner_batch_per_class=args.inner_batch,
        real_batch_per_class=args.real_batch, outer_lr=args.outer_lr,
        outer_momentum=args.outer_momentum, clip_norm=args.clip_norm, outer_optimizer=args.outer_optimizer,
        outer_betas=None if args.outer_betas is None else tuple(args.outer_betas),
        outer_schedule=args.outer_schedule, arch=args.arch,
        width=args.width, depth=args.depth, learn_labels=args.learn_labels, dsa=args.dsa,
        gm_outer_loop=args.gm_outer_loop, gm_inner_loop=args.gm_inner_loop,
        mim_weight=args.mim_weight, mim_temperature=args.mim_temperature,
        dsa_strategy=args.dsa_strategy, zca=args.zca, zca_regularization=args.zca_regularization,
        seed=args.seed, device=args.device, amp=args.amp, checkpoint_dir=checkpoint_dir,
        checkpoint_every=args.checkpoint_every, resume=args.resume, eval_every=args.eval_every,
        eval_epochs=args.eval_epochs, eval_networks=args.eval_networks,
        networks_per_iteration=args.networks_per_iteration,
        network_batching=args.network_batching, collective_timeout=args.collective_timeout,
        streaming=args.streaming, stream_buffer_per_class=args.stream_buffer,
        stream_workers=args.stream_workers,
        **objective_config_kwargs(args),
    ).validate()


def _objective_names() -> list[str]:
    from compressdata.distill.objectives import OBJECTIVES

    return sorted(OBJECTIVES)


def _check_out(out: Path, force: bool) -> None:
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; expected a file path")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the directory {out.parent} does not exist")
    if out.exists() and not force:
        raise ValueError(f"--out {out} exists; pass --force to overwrite it")


def run_distill(args: argparse.Namespace) -> int:
    """`compressdata distill`: run (data-parallel under torchrun), write the bank on rank 0,
    optionally evaluate (networks split over the ranks) and record."""
    out = Path(args.out)
    _check_out(out, args.force)
    if args.final_eval_networks < 0:
        raise ValueError(f"--final-eval-networks must be >= 0, got {args.final_eval_networks}")
    config = _config(args, out)
    with distributed_session(config.device, config.collective_timeout) as world:
        return _distill_and_save(args, config, out, world.is_main)


def _distill_and_save(args: argparse.Namespace, config: DistillConfig, out: Path, main: bool) -> int:
    from compressdata.distill.loop import distill
    from compressdata.distill.rank_eval import evaluate_bank_over_ranks
    from compressdata.loading import save_memory_bank

    try:
        bank = distill(config, progress=not args.no_progress)
    except KeyboardInterrupt:
        print("stopped.", file=sys.stderr)
        return 130
    if args.final_eval_networks:
        from compressdata.data.sources import load_source

        result = evaluate_bank_over_ranks(
            bank, load_source(config.source, "test"), arch=config.arch,
            networks=args.final_eval_networks, device=config.device, seed=config.seed,
            width=config.width, progress=not args.no_progress)
        bank.add_evaluation(result)
        if main:
            print(result.summary())
    if not main:
        return 0
    save_memory_bank(bank, out)
    storage = bank.storage
    print(f"wrote {out}: {bank.kind} bank, {len(bank)} examples, {storage['floats_stored']} "
          f"floats (IPC {storage['ipc_equivalent']:.3f} equivalent), {storage['bytes_stored']} bytes "
          f"({storage['ipc_equivalent_uint8']:g} 8-bit images per class)")
    if not args.final_eval_networks:
        print(f"evaluate it with: compressdata evaluate {out} --test {config.source} --record")
    return 0
