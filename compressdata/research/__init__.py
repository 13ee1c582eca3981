"""Research experiments built on the library (not part of its API): `lowdim`, the low-dimensional
structure check of docs/lowdim.md."""
