"""Readers of real labelled images, one module per kind, behind one interface (`Reader`): a prefix
(`idx:`, `torchvision:`, `hf:`, `folder:`, `wds:`) names the reader, the rest of the source name is
its `spec`, and every reader returns `RealData`."""

from __future__ import annotations

import os
from typing import Protocol

from compressdata.data.readers import folder, hf, idx, torchvision, webdataset
from compressdata.data.real import RealData


class Reader(Protocol):
    """read(spec, split, root=, download=, name=) -> RealData; nothing is downloaded unless download."""

    def __call__(self, spec: str, split: str, *, root: str | os.PathLike | None = None, download: bool = False,
                 name: str | None = None) -> RealData: ...


READERS: dict[str, Reader] = {"idx:": idx.read, "torchvision:": torchvision.read, "hf:": hf.read,
                              "folder:": folder.read, "wds:": webdataset.read}
