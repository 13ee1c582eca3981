"""How fast the command line answers: wall time of `compressdata --help` (and `--version`, and a
command's own `--help`) in fresh processes, and the slowest imports of `--help` by `python -X importtime`.

    python tools/bench_cli.py [--runs 5]

Prints one row per command line (median and slowest of the runs, seconds), then the modules whose
import (with what they import) took longest under `compressdata --help`, and whether torch was among them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMAND_LINES = (["--help"], ["--version"], ["inspect", "--help"], ["evaluate", "--help"])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def wall_seconds(args: list[str], runs: int) -> list[float]:
    """Seconds of `python -m compressdata ARGS` in `runs` fresh processes."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "compressdata", *args], env=_env(), capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return times


def imports(args: list[str]) -> list[tuple[float, str]]:
    """(cumulative seconds, module) of every import of `python -m compressdata ARGS` (`-X importtime`),
    slowest first."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "compressdata", *args], env=_env(),
                            capture_output=True, text=True, check=True)
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        rows.append((int(cumulative) / 1e6, name))
    return sorted(rows, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    print("| command line | median s | slowest s |\n|---|---|---|")
    for command in COMMAND_LINES:
        times = wall_seconds(command, args.runs)
        print(f"| `compressdata {' '.join(command)}` | {statistics.median(times):.3f} | {max(times):.3f} |")
    loaded = imports(["--help"])
    print("\nslowest imports of `compressdata --help` (cumulative s): "
          + ", ".join(f"{name} {seconds:.3f}" for seconds, name in loaded[:args.top]))
    print(f"modules imported: {len(loaded)}; torch among them: {any(name == 'torch' for _, name in loaded)}")


if __name__ == "__main__":
    main()
