"""DC / DSA / DM layout (VICO-UoE/DatasetCondensation, main.py and main_DM.py): one file
`res_<method>_<dataset>_<model>_<ipc>ipc.pt` holding {"data": [[images, labels], ...] (one pair
per experiment: float [N, C, H, W] normalised images, int64 [N] labels), "accs_all_exps":
{model: [test accuracies]}}."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from compressdata.interop.errors import InteropError
from compressdata.interop.release import Release, as_tensor
from compressdata.interop.safeload import load_pt

NAME = re.compile(r"^res_(?P<method>[A-Za-z0-9]+)_(?P<dataset>[A-Za-z0-9]+)_(?P<model>[A-Za-z0-9]+)_"
                  r"(?P<ipc>\d+)ipc\.pt$")


def read(paths: Sequence[Path], experiment: int | None = None) -> Release:
    """Read one result file; `experiment` picks the [images, labels] pair (default 0)."""
    if len(paths) != 1 or paths[0].is_dir():
        raise InteropError(f"the dc layout is one res_<method>_<dataset>_<model>_<ipc>ipc.pt file; got "
                           f"{[str(p) for p in paths]}")
    path = paths[0]
    content = load_pt(path)
    if not isinstance(content, Mapping) or "data" not in content:
        got = sorted(map(str, content)) if isinstance(content, Mapping) else type(content).__name__
        raise InteropError(f"expected a dict with 'data' (a list of [images, labels] per experiment), got {got}",
                           path)
    data = content["data"]
    if not isinstance(data, list | tuple) or not data:
        raise InteropError("'data': expected a non-empty list of [images, labels] pairs", path)
    index = 0 if experiment is None else experiment
    if not 0 <= index < len(data):
        raise InteropError(f"experiment {index} does not exist: 'data' holds {len(data)} "
                           f"(choose 0..{len(data) - 1})", path)
    pair = data[index]
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        raise InteropError(f"'data'[{index}]: expected [images, labels], got {type(pair).__name__}"
                           + (f" of length {len(pair)}" if isinstance(pair, list | tuple) else ""), path)
    images = as_tensor(pair[0], f"'data'[{index}][0] (images)", path)
    labels = as_tensor(pair[1], f"'data'[{index}][1] (labels)", path)
    details: dict[str, Any] = {"experiment": index, "experiments": len(data)}
    reported = _reported(content.get("accs_all_exps"))
    if reported:
        details["reported_accuracies"] = reported
    match = NAME.match(path.name)
    hints = {}
    if match:
        hints = {"method": match["method"], "dataset": match["dataset"], "model": match["model"],
                 "ipc": int(match["ipc"])}
        details["file_name_says"] = dict(hints)
    return Release(images=images, labels=labels, files=[path], hints=hints, details=details)


def _reported(accuracies: Any) -> dict[str, list[float]]:
    """{model: [accuracy, ...]} as plain floats (the file stores numpy floats), or {} if not that."""
    if not isinstance(accuracies, Mapping):
        return {}
    out = {}
    for model, values in accuracies.items():
        if isinstance(model, str) and isinstance(values, list | tuple):
            try:
                out[model] = [float(v) for v in values]
            except (TypeError, ValueError):
                continue
    return out
