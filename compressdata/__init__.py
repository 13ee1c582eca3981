"""compressdata: distil a labelled dataset into a small addressable memory bank and serve it back."""

from compressdata.bank import EvaluationResult, MemoryBank, Normalization, TrainingRecipe
from compressdata.data.memory_dataset import MemoryDataset
from compressdata.errors import BankFormatError, CheckpointError, DecodeMemoryError, DivergenceError, QueryError
from compressdata.loading import load_memory_bank, save_memory_bank

__version__ = "0.1.0"

__all__ = [
    "BankFormatError",
    "CheckpointError",
    "DecodeMemoryError",
    "DivergenceError",
    "EvaluationResult",
    "MemoryBank",
    "MemoryDataset",
    "Normalization",
    "QueryError",
    "TrainingRecipe",
    "__version__",
    "load_memory_bank",
    "save_memory_bank",
]
