"""The rows of docs/results.md: distil Fashion-MNIST with a method at a budget, evaluate the bank
under the standard protocol (ConvNet-3 width 128, docs/evaluation.md) with its baselines, print a
markdown row with the exact commands.

Every row runs the command line a user would run, as subprocesses, and reads the evaluation the
second command records into the bank:

    compressdata distill ROW_OPTIONS --budget-ipc IPC --seed S --out OUT
    compressdata evaluate OUT --test fashion-mnist --protocol standard --networks N --seed S --record

    python tools/bench_results.py --rows rtp pixels random-real --ipc 1 --seeds 0 1
    python tools/bench_results.py --rows rtp --ipc 10 --networks 5 --out-dir runs/results
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from safetensors import safe_open

# The CPU settings of each row (each distillation fits <= 60 minutes on 2 cores; docs/results.md).
ROWS: dict[str, list[str]] = {
    "random-real": ["--method", "random-real"],
    "pixels": ["--method", "pixels", "--width", "16", "--unroll-steps", "20", "--iterations", "200",
               "--inner-batch", "10", "--real-batch", "32", "--inner-lr", "0.03", "--outer-lr", "30"],
    # the README's first command
    "rtp-readme": ["--method", "rtp", "--n-bases", "24", "--width", "16", "--unroll-steps", "20",
                   "--iterations", "200", "--inner-batch", "10", "--real-batch", "32", "--init", "real",
                   "--inner-lr", "0.03", "--outer-optimizer", "adam", "--outer-lr", "0.01"],
    # the best CPU setting of docs/benchmarks.md ("Best settings"): T = 30, two networks per iteration
    "rtp": ["--method", "rtp", "--n-bases", "24", "--downsample", "2", "--width", "16", "--unroll-steps", "30",
            "--iterations", "200", "--inner-batch", "10", "--real-batch", "32", "--init", "real",
            "--inner-lr", "0.03", "--outer-optimizer", "adam", "--outer-lr", "0.02", "--outer-betas", "0.9",
            "0.999", "--networks-per-iteration", "2"],
    "dm": ["--objective", "dm", "--param", "pixels", "--width", "16", "--iterations", "1000",
           "--real-batch", "64", "--init", "real"],
    "lowrank": ["--objective", "dm", "--param", "lowrank", "--width", "16", "--iterations", "1000",
                "--real-batch", "64", "--init", "real"],
}


def _run(command: list[str], log: Path) -> float:
    """Run `command`, appending its output to `log`; seconds taken (raises on failure)."""
    started = time.perf_counter()
    with log.open("a") as out:
        out.write(f"$ {shlex.join(command)}\n")
        out.flush()
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {shlex.join(command)}; see {log}")
    return time.perf_counter() - started


def _last_evaluation(bank: Path) -> dict:
    with safe_open(str(bank), "pt") as f:
        metadata = json.loads(f.metadata()["compressdata"])
    return metadata["evaluations"][-1]


def _percent(evaluation: dict | None) -> str:
    if evaluation is None:
        return "-"
    return f"{100 * evaluation['mean']:.2f} +- {100 * evaluation['std']:.2f}"


def run_row(name: str, ipc: float, seed: int, networks: int, out_dir: Path, extra: list[str],
            evaluate_extra: list[str]) -> dict:
    """Distil and evaluate one row; returns its figures and commands."""
    out = out_dir / f"{name}-ipc{ipc:g}-seed{seed}.safetensors"
    log = out.with_suffix(".log")
    distill = ["compressdata", "distill", "--source", "fashion-mnist", "--budget-ipc", f"{ipc:g}", *ROWS[name],
               *extra, "--seed", str(seed), "--out", str(out), "--force", "--no-progress", "--no-checkpoints"]
    evaluate = ["compressdata", "evaluate", str(out), "--test", "fashion-mnist", "--protocol", "standard",
                "--networks", str(networks), "--seed", str(seed), "--record", "--no-progress", *evaluate_extra]
    distill_s = _run(distill, log)
    evaluate_s = _run(evaluate, log)
    evaluation = _last_evaluation(out)
    baselines = evaluation.get("baselines", {})
    return {"row": name, "ipc": ipc, "seed": seed, "distill_s": distill_s, "evaluate_s": evaluate_s,
            "evaluation": evaluation, "random_real": baselines.get("random_real"),
            "full_data": baselines.get("full_data"), "commands": [shlex.join(distill), shlex.join(evaluate)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--ipc", type=float, nargs="+", default=[1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--networks", type=int, default=5, help="evaluation networks per bank")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/results"))
    parser.add_argument("--extra", default="", help="more distill options for every row, as one string")
    parser.add_argument("--evaluate-extra", default="",
                        help="more evaluate options for every row, as one string (e.g. --no-baselines when the "
                             "random-real row is in the table)")
    parser.add_argument("--json", type=Path, default=None, help="append every row's record here (JSON lines)")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print("| IPC | method | seed | distill s | evaluate s | accuracy % | random real % | full data % |")
    print("|---|---|---|---|---|---|---|---|")
    for ipc in args.ipc:
        for name in args.rows:
            for seed in args.seeds:
                row = run_row(name, ipc, seed, args.networks, args.out_dir, shlex.split(args.extra),
                              shlex.split(args.evaluate_extra))
                print(f"| {ipc:g} | {name} | {seed} | {row['distill_s']:.0f} | {row['evaluate_s']:.0f} | "
                      f"{_percent(row['evaluation'])} | {_percent(row['random_real'])} | "
                      f"{_percent(row['full_data'])} |", flush=True)
                print(f"<!-- {row['commands'][0]} && {row['commands'][1]} -->", flush=True)
                if args.json:
                    with args.json.open("a") as f:
                        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
