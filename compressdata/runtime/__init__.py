"""How heavy commands use the machine: the memory allocator and mixed precision."""

from compressdata.runtime.allocator import loaded_allocator, tune_glibc_malloc, use_caching_allocator
from compressdata.runtime.precision import native_bfloat16

__all__ = ["loaded_allocator", "native_bfloat16", "tune_glibc_malloc", "use_caching_allocator"]
