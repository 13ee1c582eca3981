"""The full-data reference: fresh networks trained on the whole real training split with a protocol's
network and optimiser, measured once per dataset, protocol and network, and cached.

Training ConvNet-128 on 60000 images for a protocol's 300 epochs is far beyond a CPU, so the
reference trains `DEFAULT_EPOCHS` epochs of the same recipe (lr x0.1 at half of them) without
augmentation, as the field's whole-dataset figures come from a few tens of epochs of ordinary
training (docs/evaluation.md). The record says exactly what ran and the command that made it.

The cache holds one file per (dataset, protocol, network) under `cache_root()`: $COMPRESSDATA_CACHE,
else $XDG_CACHE_HOME/compressdata, else ~/.cache/compressdata. A file (the library's one container,
`compressdata.container`) holds the accuracies (float64) and, in its metadata, the whole record.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import shlex
import time
from pathlib import Path

import torch

from compressdata.bank.metadata import EvaluationResult, TrainingRecipe
from compressdata.container import FileKind, read_file, write_file
from compressdata.data.sources import RealData
from compressdata.errors import FileFormatError, UsageError
from compressdata.evaluate.protocols import STANDARD, ResolvedTraining, get_protocol, resolve_training
from compressdata.evaluate.training import fresh_network_accuracies, resolve_device
from compressdata.version import __version__

CACHE_ENV = "COMPRESSDATA_CACHE"
FORMAT = "compressdata.full-data-reference"
VERSION = 1
DEFAULT_EPOCHS = 20
DEFAULT_NETWORKS = 2
FULL_DATA_FILE = FileKind(what="full-data reference", key=FORMAT, format=FORMAT, version=VERSION)


def cache_root() -> Path:
    """$COMPRESSDATA_CACHE, else $XDG_CACHE_HOME/compressdata, else ~/.cache/compressdata."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "compressdata"


def reference_path(dataset: str, protocol: str, network: str) -> Path:
    """The cache file of the full-data reference of `dataset` under `protocol` with `network`."""
    return cache_root() / "full-data" / f"{_slug(dataset)}--{_slug(protocol)}--{_slug(network)}.safetensors"


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "_"
    return slug if slug == name else f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _check_fixed(protocol: str) -> None:
    if get_protocol(protocol).recipe is None:
        raise UsageError(f"the {protocol!r} protocol trains with each bank's own recipe, so it has no single "
                         f"full-data reference; use a fixed protocol such as {STANDARD!r}")


def reference_training(protocol: str = STANDARD, *, epochs: int = DEFAULT_EPOCHS, width: int | None = None
                       ) -> ResolvedTraining:
    """The recipe the full-data reference of `protocol` trains with (hard labels, no augmentation)."""
    _check_fixed(protocol)
    return resolve_training(TrainingRecipe(), protocol, width=width, epochs=epochs, augmentation="none")


def reference_command(dataset: str, protocol: str, *, epochs: int = DEFAULT_EPOCHS,
                      networks: int = DEFAULT_NETWORKS, width: int | None = None, seed: int = 0) -> str:
    """The `compressdata baseline full` command that computes this reference."""
    args = ["compressdata", "baseline", "full", "--test", dataset, "--protocol", protocol, "--epochs", str(epochs),
            "--networks", str(networks)]
    if width is not None:
        args += ["--width", str(width)]
    if seed:
        args += ["--seed", str(seed)]
    return shlex.join(args)


def load_full_data_reference(dataset: str, protocol: str, network: str) -> EvaluationResult | None:
    """The cached reference of (dataset, protocol, network), or None when none is cached.

    Raises FileFormatError naming the file when it exists but is not a reference of that key."""
    path = reference_path(dataset, protocol, network)
    if not path.is_file():
        return None
    hint = "; delete it or recompute it with --force"
    try:
        tensors, meta = read_file(path, FULL_DATA_FILE)
    except FileFormatError as e:
        raise FileFormatError(f"not a compressdata full-data reference ({e.problem}){hint}", str(path)) from None
    expected = {"dataset": dataset, "protocol": protocol, "network": network}
    for key, value in expected.items():
        if meta.get(key) != value:
            raise FileFormatError(f"field {key!r} is {meta.get(key)!r:.100}, expected {value!r}{hint}", str(path))
    try:
        result = EvaluationResult.from_dict(meta["result"])
    except (KeyError, TypeError, ValueError) as e:
        raise FileFormatError(f"field 'result': not an evaluation record ({e}){hint}", str(path)) from None
    accuracies = tensors.get("accuracies")
    if accuracies is None or result.accuracies != accuracies.tolist():
        raise FileFormatError(f"the metadata's accuracies differ from its tensor 'accuracies'{hint}", str(path))
    return result


def full_data_reference(
    train: RealData,
    test: RealData,
    protocol: str = STANDARD,
    *,
    epochs: int = DEFAULT_EPOCHS,
    networks: int = DEFAULT_NETWORKS,
    width: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    force: bool = False,
    compile_networks: bool = False,
) -> tuple[EvaluationResult, Path, bool]:
    """(reference, cache file, whether it was computed now): the cached reference of
    (test.name, protocol, network) when there is one and not `force`, else `networks` fresh
    networks (seeds seed..) trained on all of `train` for `epochs` epochs of the protocol's recipe
    and tested on `test`, written to the cache. The record's `command` is the CLI run that makes
    it, exact when `train` and `test` are the source's whole splits (`train_examples` and
    `test_examples` say what was used)."""
    training = reference_training(protocol, epochs=epochs, width=width)
    if networks < 1:
        raise UsageError(f"networks must be >= 1; got {networks}")
    if train.name != test.name or train.classes != test.classes:
        raise UsageError(f"the training split is {train.name!r} and the test split {test.name!r}: a full-data "
                         f"reference trains and tests on two splits of one dataset")
    network = training.network_key()
    path = reference_path(test.name, protocol, network)
    if not force:
        cached = load_full_data_reference(test.name, protocol, network)
        if cached is not None:
            return cached, path, False
    seeds = [seed + k for k in range(networks)]
    test = test.with_normalization(train.normalization)
    start = time.perf_counter()
    accuracies = fresh_network_accuracies(train.images, train.labels, training.recipe, test, seeds,
                                          device=device, progress=progress, desc="full-data reference",
                                          epoch_progress=progress, compile_networks=compile_networks)
    result = EvaluationResult(
        architecture=training.recipe.architecture, accuracies=accuracies, test=f"{test.name}/{test.split}",
        epochs=epochs, protocol=protocol,
        extra={"network": network, "recipe": training.recipe.to_dict(), "seeds": seeds,
               "train_examples": len(train), "test_examples": len(test),
               "command": reference_command(test.name, protocol, epochs=epochs, networks=networks, width=width,
                                            seed=seed),
               "seconds": round(time.perf_counter() - start, 1), "device": str(resolve_device(device)),
               "threads": torch.get_num_threads(), "compiled": compile_networks,
               "library": __version__,
               "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    meta = {"format": FORMAT, "version": VERSION, "dataset": test.name, "protocol": protocol, "network": network,
            "result": result.to_dict()}
    write_file(path, FULL_DATA_FILE, {"accuracies": torch.tensor(accuracies, dtype=torch.float64)}, meta)
    return result, path, True
