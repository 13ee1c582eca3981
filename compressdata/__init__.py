"""compressdata: distil a labelled dataset into a small addressable memory bank and serve it back."""

from compressdata.bank import EvaluationResult, MemoryBank, Normalization, TrainingRecipe
from compressdata.data.memory_dataset import MemoryDataset
from compressdata.errors import BankFormatError, DivergenceError, QueryError
from compressdata.interop import InteropError, UnsafeFileError, export_release, import_bank
from compressdata.loading import load_memory_bank, save_memory_bank

__version__ = "0.1.0"

__all__ = [
    "BankFormatError",
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
