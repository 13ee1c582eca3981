"""One error family: every error the library raises is a CompressdataError that also subclasses the
builtin it means, and the command line catches those (and OSError) and nothing broader."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import pytest

import compressdata
from compressdata import errors
from compressdata.hub import errors as hub_errors
from compressdata.interop import errors as interop_errors

PACKAGE = Path(compressdata.__file__).parent
BUILTIN_EXCEPTIONS = {name for name, value in vars(builtins).items()
                      if isinstance(value, type) and issubclass(value, BaseException)}
# the language's own protocol: __getattr__ (the package's, DistillConfig's group shorthand) raises AttributeError
PROTOCOL_RAISES = {("__init__.py", "AttributeError"), ("config.py", "AttributeError")}


def _raised_builtins() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            func = node.exc.func
            name = func.id if isinstance(func, ast.Name) else None
            if name in BUILTIN_EXCEPTIONS and (path.name, name) not in PROTOCOL_RAISES:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: raise {name}")
    return found


def test_the_library_raises_no_bare_builtin_error():
    assert _raised_builtins() == []


def _error_classes() -> list[type]:
    classes = []
    for module in (errors, hub_errors, interop_errors):
        classes += [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Exception)
                    and v.__module__ == module.__name__]
    from compressdata.data.readers.idx import IDXFormatError
    from compressdata.runtime.allocator import AllocatorError

    return [*classes, IDXFormatError, AllocatorError]


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_every_error_class_is_a_compressdata_error(cls):
    assert issubclass(cls, errors.CompressdataError)


def test_errors_subclass_the_builtin_they_mean():
    assert issubclass(hub_errors.HubFileNotFoundError, FileNotFoundError)
    assert issubclass(hub_errors.HubRepoNotFoundError, FileNotFoundError)
    assert issubclass(hub_errors.HubConnectionError, ConnectionError)
    assert issubclass(hub_errors.HubPermissionError, PermissionError)
    assert issubclass(errors.MissingFileError, FileNotFoundError)
    assert issubclass(errors.BankFormatError, ValueError) and issubclass(errors.ConfigError, ValueError)
    assert not issubclass(errors.DivergenceError, ValueError)


def test_the_old_names_stay_importable():
    from compressdata import BankFormatError, CheckpointError, DecodeMemoryError, DivergenceError, QueryError
    from compressdata.runtime.distributed import CollectiveError

    assert issubclass(CheckpointError, BankFormatError) and issubclass(DecodeMemoryError, BankFormatError)
    assert {DivergenceError, QueryError, CollectiveError} <= set(_error_classes())


def test_the_cli_shows_a_bug_as_a_traceback(monkeypatch, capsys):
    """A library error ends in one line; an error that is not the library's (a bug) propagates."""
    from compressdata import cli

    assert cli.main(["inspect", "/nonexistent/bank.safetensors"]) == 1
    assert "error:" in capsys.readouterr().err

    def broken(_args):
        raise ZeroDivisionError("a bug")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda commands=None: parser)
    parser._subparsers._group_actions[0].choices["validate"].set_defaults(func=broken)
    with pytest.raises(ZeroDivisionError):
        cli.main(["validate", "x.safetensors"])
