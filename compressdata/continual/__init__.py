"""Continual learning with memory banks: task streams, per-task distillation into a growing bank, the runner."""
