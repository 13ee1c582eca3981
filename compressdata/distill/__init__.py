"""The distiller: parameterizations x objectives, the outer loop, checkpoints."""
