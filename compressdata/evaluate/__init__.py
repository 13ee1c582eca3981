"""The evaluation protocol (DC/DSA/DM/MTT): train fresh networks on a (distilled) training set under
a named protocol, test each once at the end on a real test split, report mean and std (never a
best epoch), beside fair baselines: a random real subset of the same storage and full-data
training (docs/evaluation.md).

`evaluate_bank` applies the BANK's normalisation to the test pixels, so a bank distilled in any
space (per-channel statistics, ZCA) is tested in that space.
"""

from compressdata.evaluate.baselines import random_real_baseline, real_images_per_class
from compressdata.evaluate.full_data import full_data_reference, load_full_data_reference, reference_command
from compressdata.evaluate.protocols import PROTOCOLS, RECIPE, STANDARD, Protocol, get_protocol, resolve_training
from compressdata.evaluate.run import (
    chance_warning,
    check_same_classes,
    evaluate_bank,
    evaluate_tensors,
    full_data_lookup,
)
from compressdata.evaluate.training import (
    LABEL_SPACES,
    OPTIMIZERS,
    fresh_network_accuracies,
    label_loss,
    resolve_device,
    target_distribution,
    test_accuracy,
    train_network,
)

__all__ = [
    "LABEL_SPACES", "OPTIMIZERS", "PROTOCOLS", "RECIPE", "STANDARD", "Protocol", "chance_warning",
    "check_same_classes", "evaluate_bank",
    "evaluate_tensors", "fresh_network_accuracies", "full_data_lookup", "full_data_reference", "get_protocol",
    "label_loss", "load_full_data_reference", "random_real_baseline", "real_images_per_class", "reference_command",
    "resolve_device", "resolve_training", "target_distribution", "test_accuracy", "train_network",
]
