"""Seconds per outer iteration of the bptt distiller: the plain engine against each speed-up alone and
all combined, on two configurations; prints a markdown table (docs/speed.md).

Configurations (Fashion-MNIST, budget IPC 1, rtp):
  reference  the official RTP code's own: K=16 bases at ds=2 (29 addresses per class), ConvNet-128
             with instance norm, T=20 inner steps on all 29 examples per class, outer loss on 64
             real per class, inner SGD 0.01/0.9, outer SGD 0.1/0.5, clip 2, random init;
  readme     the README's first command: K=24 at ds=2, ConvNet-16, T=20 on 10 per class, 32 real
             per class, inner lr 0.03, Adam 0.01, real init.

Variants (each in a fresh process, since the allocator is chosen at process start):
  plain         the system allocator, float32, every step recomputed in the reverse pass;
  tcmalloc      the caching allocator the commands use by default (LD_PRELOAD);
  glibc-tuned   glibc without mmap or trimming (the fallback when tcmalloc is absent);
  kept-graphs   the last steps' graphs kept from the forward run (graph_memory_mb 1024);
  bf16          bfloat16 autocast (emulated, and slower, on CPUs without AVX512-BF16 or AMX);
  combined      tcmalloc + kept graphs (+ bf16 where the CPU computes it natively): same result;
  rat           combined + random truncated BPTT with W = T/2 (a different gradient estimator).

Each process times `--iterations` outer iterations after one warm-up iteration and reports the
median seconds per iteration, its CPU seconds per iteration and its peak RSS. Variants run in
rounds (all variants once, `--rounds` times) so that drift in the machine's load hits all alike;
ratios are against `plain` of the same configuration.

    python tools/bench_speed.py --configs readme reference --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {
    "reference": dict(n_bases=16, downsample=2, width=128, unroll_steps=20, inner_batch_per_class=29,
                      real_batch_per_class=64, inner_lr=0.01, inner_momentum=0.9, outer_optimizer="sgd",
                      outer_lr=0.1, outer_momentum=0.5, clip_norm=2.0, init="random"),
    "readme": dict(n_bases=24, downsample=2, width=16, unroll_steps=20, inner_batch_per_class=10,
                   real_batch_per_class=32, inner_lr=0.03, outer_optimizer="adam", outer_lr=0.01,
                   init="real"),
}
# variant -> (allocator mode, config overrides)
VARIANTS = {
    "plain": ("system", dict(graph_memory_mb=0.0)),
    "tcmalloc": ("tcmalloc", dict(graph_memory_mb=0.0)),
    "glibc-tuned": ("glibc", dict(graph_memory_mb=0.0)),
    "kept-graphs": ("system", dict(graph_memory_mb=1024.0)),
    "bf16": ("system", dict(graph_memory_mb=0.0, amp=True)),
    "combined": ("tcmalloc", dict(graph_memory_mb=1024.0)),
    "rat": ("tcmalloc", dict(graph_memory_mb=1024.0, bptt_window=10)),
}


def child(config_name: str, variant: str, iterations: int, threads: int) -> dict:
    """Run in a fresh process: time `iterations` outer iterations after a warm-up one."""
    import resource

    import torch

    from compressdata.data.sampler import ClassBalancedSampler
    from compressdata.distiller.config import DistillConfig
    from compressdata.distiller.loop import _initial_state, outer_iteration, prepare_source
    from compressdata.distiller.run import DistillRun
    from compressdata.distiller.synthetic import SyntheticSet
    from compressdata.params import layout_for_budget
    from compressdata.runtime.allocator import active_allocator, tune_glibc_malloc
    from compressdata.runtime.precision import native_bfloat16

    mode, overrides = VARIANTS[variant]
    if mode == "glibc":
        tune_glibc_malloc()
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    overrides = dict(overrides)
    if variant == "combined" and native_bfloat16(device):
        overrides["amp"] = True
    config = DistillConfig.from_flat(method="rtp", iterations=iterations + 1, **CONFIGS[config_name],
                                     **overrides).validate()
    data = prepare_source(config)
    real = ClassBalancedSampler(data.images, data.labels, data.num_classes)
    layout = layout_for_budget(config.kind, config.parameterization.budget_ipc, data.num_classes, data.image_shape,
                               n_bases=config.parameterization.n_bases,
                               downsample=config.parameterization.downsample,
                               rank=config.parameterization.rank)
    synthetic = SyntheticSet(config.kind, data.num_classes, layout.per_class, data.image_shape[1:])
    run = DistillRun(config, device, data, real, synthetic, layout)
    state = _initial_state(run, lambda _message: None)
    wall, cpu = [], []
    for i in range(iterations + 1):
        started, started_cpu = time.perf_counter(), time.process_time()
        state, _ = outer_iteration(run, state)
        if i:  # the first iteration warms up (allocator pools, graph measurement)
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"wall": statistics.median(wall), "cpu": statistics.median(cpu), "peak_mib": peak_kib / 1024,
            "allocator": active_allocator(), "amp": config.run.amp, "layout": layout.describe()}


def measure(config_name: str, variant: str, iterations: int, threads: int) -> dict:
    mode = VARIANTS[variant][0]
    env = {**os.environ, "COMPRESSDATA_ALLOCATOR": mode, "OMP_NUM_THREADS": str(threads)}
    env.pop("LD_PRELOAD", None)
    if mode in ("tcmalloc", "jemalloc"):
        from compressdata.runtime.allocator import find_allocator_library

        library = find_allocator_library(mode)
        if library is None:
            return {"error": f"{mode} not installed"}
        env["LD_PRELOAD"] = library
    out = subprocess.run([sys.executable, __file__, "--child", config_name, variant, str(iterations),
                          str(threads)], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        config_name, variant, iterations, threads = sys.argv[2:6]
        print(json.dumps(child(config_name, variant, int(iterations), int(threads))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["readme", "reference"], choices=sorted(CONFIGS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--iterations", type=int, default=None,
                        help="timed iterations per process (default: 6 for readme, 2 for reference)")
    parser.add_argument("--rounds", type=int, default=2, help="times every variant is measured")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per process")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    args = parser.parse_args()
    if "plain" not in args.variants:
        parser.error("the table's ratios need the plain variant")
    records = []
    for config_name in args.configs:
        iterations = args.iterations or (6 if config_name == "readme" else 2)
        results: dict[str, list[dict]] = {v: [] for v in args.variants}
        for _ in range(args.rounds):
            for variant in args.variants:
                result = measure(config_name, variant, iterations, args.threads)
                results[variant].append(result)
                records.append({"config": config_name, "variant": variant, **result})
                print(f"# {config_name} {variant}: {result}", file=sys.stderr, flush=True)
        print(f"\n### {config_name} ({args.threads} threads, {iterations} iterations x {args.rounds} rounds)\n")
        print("| variant | allocator | bf16 | s / iteration | CPU s / iteration | peak RSS MiB | speed-up |")
        print("|---|---|---|---|---|---|---|")
        plain = statistics.median(r["wall"] for r in results["plain"] if "wall" in r)
        for variant, rows in results.items():
            ok = [r for r in rows if "wall" in r]
            if not ok:
                print(f"| {variant} | {rows[0]['error']} | | | | | |")
                continue
            wall = statistics.median(r["wall"] for r in ok)
            cpu = statistics.median(r["cpu"] for r in ok)
            peak = max(r["peak_mib"] for r in ok)
            print(f"| {variant} | {ok[0]['allocator']} | {'yes' if ok[0]['amp'] else 'no'} | {wall:.2f} | "
                  f"{cpu:.2f} | {peak:.0f} | {plain / wall:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
