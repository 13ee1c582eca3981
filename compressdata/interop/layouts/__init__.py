"""The release layouts `compressdata import --from` reads: one module per layout, one `read`
function each, `read(paths, experiment=None) -> Release`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from compressdata.interop.layouts import dc, ddranking, folder, mtt, plain
from compressdata.interop.release import Release

Reader = Callable[[Sequence[Path], int | None], Release]

LAYOUTS: dict[str, Reader] = {
    "mtt": mtt.read,
    "dc": dc.read,
    "plain": plain.read,
    "ddranking": ddranking.read,
    "folder": folder.read,
}
