"""How heavy commands use the machine: the memory allocator (`runtime.allocator`, no torch import,
so the command line can pick one before loading torch) and mixed precision (`runtime.precision`)."""
