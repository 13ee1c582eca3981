"""Typed errors of the import of released distilled datasets.

Both subclass `ValueError`, so the command line reports them as bad input; the message names the
file and what is wrong with it.
"""

from __future__ import annotations

import os

from compressdata.errors import CompressdataError


class InteropError(CompressdataError, ValueError):
    """A released file or folder cannot be turned into a bank: wrong layout, shapes, labels, or
    information missing that the command must be given (dataset, method, lr, ZCA)."""

    def __init__(self, problem: str, path: str | os.PathLike | None = None, *, hint: str | None = None,
                 cli_hint: str | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {problem}" if self.path else problem, hint=hint, cli_hint=cli_hint)


class UnsafeFileError(InteropError):
    """A `.pt` file holds more than tensors and plain containers: reading it would need full
    unpickling, which can run arbitrary code, so it is refused and nothing in it runs."""
