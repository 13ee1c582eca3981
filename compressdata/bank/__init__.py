"""The memory-bank format: validation, file I/O, checksum and the `MemoryBank` class."""

from compressdata.bank.format import FORMAT_NAME, FORMAT_VERSION, check_bank
from compressdata.bank.io import read_bank_file, write_bank_file
from compressdata.bank.memory_bank import MemoryBank
from compressdata.bank.metadata import EvaluationResult, Normalization, TrainingRecipe

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "EvaluationResult",
    "MemoryBank",
    "Normalization",
    "TrainingRecipe",
    "check_bank",
    "read_bank_file",
    "write_bank_file",
]
