"""The distiller: parameterizations x objectives, the outer loop, checkpoints (`distill`, `DistillConfig`).

Importing the package registers every objective and add-on with the configuration (`distill.objectives`)."""

from compressdata.distiller import objectives as objectives
