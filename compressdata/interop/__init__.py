"""The field's released distilled datasets in and out of banks: `import_bank` reads the common
release layouts (MTT / FTD / DATM, DC / DSA / DM, plain tuples, DD-Ranking's inputs, image folders)
with `torch.load(weights_only=True)` only; `export_release` writes a bank's decoded examples in the
files DD-Ranking and MTT-style evaluation code read. See docs/interop.md."""

from compressdata.interop.errors import InteropError, UnsafeFileError
from compressdata.interop.export import RELEASE_FORMATS, export_release
from compressdata.interop.importer import import_bank
from compressdata.interop.layouts import LAYOUTS
from compressdata.interop.presets import DATASETS, METHODS

__all__ = [
    "DATASETS",
    "LAYOUTS",
    "METHODS",
    "RELEASE_FORMATS",
    "InteropError",
    "UnsafeFileError",
    "export_release",
    "import_bank",
]
