"""The errors compressdata raises: one family under `CompressdataError`.

Every error the library raises is a `CompressdataError`, so `except CompressdataError` catches the
library's own failures and nothing else (a bug shows its traceback). Each class also subclasses the
builtin it means (`ValueError` for bad values, `FileNotFoundError` for a missing file, ...), as
huggingface_hub's errors do, so code written against the builtins keeps working. The Hub's errors
live in `compressdata.hub.errors`, the importer's in `compressdata.interop.errors`; both derive from
these.
"""

from __future__ import annotations


class CompressdataError(Exception):
    """Base of every error compressdata raises.

    hint: what to do next, appended to the message; cli_hint: the same advice in command-line terms
    (flags instead of Python arguments), which the `compressdata` command shows instead
    (`command_line_message`)."""

    def __init__(self, *args: object, hint: str | None = None, cli_hint: str | None = None):
        super().__init__(*args)
        self.hint = hint
        self.cli_hint = cli_hint

    def __str__(self) -> str:
        return self._with_hint(self.hint)

    def command_line_message(self) -> str:
        """The message with the hint for the command line (the Python one when there is no other)."""
        return self._with_hint(self.cli_hint or self.hint)

    def _with_hint(self, hint: str | None) -> str:
        text = super().__str__()
        return f"{text}; {hint}" if hint else text


class UsageError(CompressdataError, ValueError):
    """The library was called with an invalid argument; the message names it, what was expected and
    what was given."""


class ConfigError(UsageError):
    """A configuration (of a distillation run, an expert set, an evaluation, a continual run) holds an
    invalid option; the message names the option, what was expected and what was given."""


class SourceError(CompressdataError, ValueError):
    """Real data cannot be read as labelled images: the message names the source (file, column,
    sample) and what is wrong."""


class MissingFileError(CompressdataError, FileNotFoundError):
    """A file or folder the library was asked to read does not exist."""


class OutputExistsError(CompressdataError, FileExistsError):
    """An output folder already exists and is not empty."""


class MissingDependencyError(CompressdataError, ImportError):
    """An optional package this feature needs is not installed; the message says how to install it."""


class IndexOutOfRangeError(CompressdataError, IndexError):
    """An example index outside the bank (also ends the legacy iteration protocol of a dataset)."""


class UnknownNameError(CompressdataError, KeyError):
    """A name (a task of a bank, ...) that does not exist; the message lists the known ones."""

    def _with_hint(self, hint: str | None) -> str:  # KeyError would show the message quoted
        text = str(self.args[0]) if self.args else ""
        return f"{text}; {hint}" if hint else text


class FileFormatError(CompressdataError, ValueError):
    """A file compressdata reads breaks its format. The message names the file (when there is one)
    and what is wrong: field, expected, got."""

    def __init__(self, problem: str = "", path: str | None = None, *, hint: str | None = None,
                 cli_hint: str | None = None):
        self.problem = problem
        self.path = path
        super().__init__(f"{path}: {problem}" if path else problem, hint=hint, cli_hint=cli_hint)


class BankFormatError(FileFormatError):
    """A memory-bank file (or an in-memory bank) violates the format specification."""


class DecodeMemoryError(BankFormatError):
    """Decoding what was asked for would need more memory than the decode limit allows (the bank's
    stated decode memory, spec section 4.7). The message gives the bytes needed, the limit, and how
    many examples one batch may hold."""


class CheckpointError(BankFormatError):
    """A file of a distillation run (its checkpoint, an MTT expert trajectory, a DWA teacher) is
    unreadable or does not fit the run's configuration. The message names the file and the field."""


class QueryError(CompressdataError, ValueError):
    """A generalised query cannot be answered: bad label vectors, more rows asked for than the
    classes have, or a bank kind without addresses. The message says what was given and expected."""


class DivergenceError(CompressdataError):
    """A distillation run diverged: an outer iteration produced a non-finite loss or non-finite
    learnable tensors. The message names the iteration and the outer lr, and how to go on."""


class CollectiveError(CompressdataError, RuntimeError):
    """A collective operation with the other ranks of a distributed run failed or timed out."""
