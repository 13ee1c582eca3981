"""Typed errors raised by compressdata."""

from __future__ import annotations


class BankFormatError(ValueError):
    """A memory-bank file (or an in-memory bank) violates the format specification.

    The message names the file (when there is one) and what is wrong: field, expected, got.
    """

    def __init__(self, problem: str, path: str | None = None):
        self.problem = problem
        self.path = path
        super().__init__(f"{path}: {problem}" if path else problem)


class QueryError(ValueError):
    """A generalised query cannot be answered: bad label vectors, more rows asked for than the
    classes have, or a bank kind without addresses. The message says what was given and expected."""


class DivergenceError(ValueError):
    """A distillation run diverged: an outer iteration produced a non-finite loss or non-finite
    learnable tensors. The message names the iteration and the outer lr, and how to go on."""


class DecodeMemoryError(BankFormatError):
    """Decoding what was asked for would need more memory than the decode limit allows (the bank's
    stated decode memory, spec section 4.7). The message gives the bytes needed, the limit, and how
    many examples one batch may hold."""


class CheckpointError(BankFormatError):
    """A file of a distillation run (its checkpoint, an MTT expert trajectory, a DWA teacher) is
    unreadable or does not fit the run's configuration. The message names the file and the field."""
