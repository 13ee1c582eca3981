"""The one container of every file compressdata writes (banks, checkpoints, MTT expert trajectories,
DWA teachers, the full-data reference cache): safetensors + one `__metadata__` entry of canonical JSON,
written atomically, read header first and checked before anything is trusted (`container.io`)."""

from compressdata.container.framing import MAX_HEADER_BYTES, MAX_JSON_DEPTH, canonical_json
from compressdata.container.io import FileKind, Header, file_bytes, read_file, read_header, read_tensors, write_file

__all__ = ["MAX_HEADER_BYTES", "MAX_JSON_DEPTH", "FileKind", "Header", "canonical_json", "file_bytes", "read_file",
           "read_header", "read_tensors", "write_file"]
