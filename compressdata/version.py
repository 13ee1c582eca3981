"""The library's version, recorded in the provenance of every file it writes."""

__version__ = "0.1.0"
