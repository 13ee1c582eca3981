"""compressdata: distil a labelled dataset into a small addressable memory bank and serve it back."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from compressdata.version import __version__

# Public names and the modules that define them, imported on first use (PEP 562) so that the
# command line starts without loading torch for commands that never need it.
_EXPORTS = {
    "distill": "compressdata.distiller.loop",
    "DistillConfig": "compressdata.distiller.config",
    "evaluate_bank": "compressdata.evaluate.run",
    "CompressdataError": "compressdata.errors",
    "ConfigError": "compressdata.errors",
    "push_to_hub": "compressdata.hub.publish",
    "to_hf_dataset": "compressdata.serving.export",
    "export_webdataset": "compressdata.serving.export",
    "BankFormatError": "compressdata.errors",
    "CheckpointError": "compressdata.errors",
    "DecodeMemoryError": "compressdata.errors",
    "DivergenceError": "compressdata.errors",
    "QueryError": "compressdata.errors",
    "InteropError": "compressdata.interop.errors",
    "UnsafeFileError": "compressdata.interop.errors",
    "import_bank": "compressdata.interop.importer",
    "export_release": "compressdata.interop.export",
    "EvaluationResult": "compressdata.bank",
    "MemoryBank": "compressdata.bank",
    "Normalization": "compressdata.bank",
    "TrainingRecipe": "compressdata.bank",
    "MemoryDataset": "compressdata.dataset.memory_dataset",
    "load_memory_bank": "compressdata.loading",
    "save_memory_bank": "compressdata.loading",
}

if TYPE_CHECKING:
    from compressdata.bank import EvaluationResult, MemoryBank, Normalization, TrainingRecipe
    from compressdata.dataset.memory_dataset import MemoryDataset
    from compressdata.distiller.config import DistillConfig
    from compressdata.distiller.loop import distill
    from compressdata.errors import (
        BankFormatError,
        CheckpointError,
        CompressdataError,
        ConfigError,
        DecodeMemoryError,
        DivergenceError,
        QueryError,
    )
    from compressdata.evaluate.run import evaluate_bank
    from compressdata.hub.publish import push_to_hub
    from compressdata.interop.errors import InteropError, UnsafeFileError
    from compressdata.interop.export import export_release
    from compressdata.interop.importer import import_bank
    from compressdata.loading import load_memory_bank, save_memory_bank
    from compressdata.serving.export import export_webdataset, to_hf_dataset


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'compressdata' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "CompressdataError",
    "ConfigError",
    "DistillConfig",
    "distill",
    "evaluate_bank",
    "export_webdataset",
    "push_to_hub",
    "to_hf_dataset",
    "BankFormatError",
    "CheckpointError",
    "DecodeMemoryError",
    "DivergenceError",
    "EvaluationResult",
    "InteropError",
    "MemoryBank",
    "MemoryDataset",
    "Normalization",
    "QueryError",
    "TrainingRecipe",
    "UnsafeFileError",
    "__version__",
    "export_release",
    "import_bank",
    "load_memory_bank",
    "save_memory_bank",
]
