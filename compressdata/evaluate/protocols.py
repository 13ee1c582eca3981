"""Named evaluation protocols: how the fresh networks that measure a bank are trained.

`recipe` trains with the bank's own training recipe (network, optimiser, epochs, augmentation).
`standard` is the DC/DSA protocol behind every published Fashion-MNIST distillation figure
(docs/evaluation.md gives its sources): ConvNet-3 of width 128 with instance norm and average
pooling, SGD lr 0.01 with momentum 0.9 and weight decay 5e-4, lr x0.1 at half the epochs, batch
256, 300 epochs (1000 with DSA), at least 5 networks. It overrides the bank's network and
optimiser and takes from the bank only what describes the data: its labels and label loss
(soft labels stay soft), its normalisation (evaluate_bank tests in the bank's space) and whether
it was distilled for DSA (`recipe.augmentation`, as DSA-distilled sets are evaluated with DSA).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from compressdata.bank.metadata import TrainingRecipe
from compressdata.errors import ConfigError

RECIPE = "recipe"
STANDARD = "standard"
SHAPED_ARCHITECTURES = ("convnet", "mlp")  # architectures that take width / depth (/ norm)


@dataclass(frozen=True)
class Protocol:
    """A named way to train evaluation networks.

    recipe: the fixed training settings (None: the bank's recipe); epochs / dsa_epochs: epochs
    without / with DSA augmentation; min_networks: fewer networks is recorded as an override.
    """

    name: str
    description: str
    recipe: TrainingRecipe | None = None
    epochs: int | None = None
    dsa_epochs: int | None = None
    min_networks: int = 1


PROTOCOLS: dict[str, Protocol] = {
    RECIPE: Protocol(RECIPE, "the bank's own training recipe"),
    STANDARD: Protocol(
        STANDARD,
        "the DC/DSA protocol of the published figures: ConvNet-3 width 128, instance norm, avg-pool; SGD "
        "lr 0.01, momentum 0.9, weight decay 5e-4, lr x0.1 at half the epochs, batch 256; 300 epochs "
        "(1000 with DSA); >= 5 networks",
        recipe=TrainingRecipe(architecture="convnet", optimizer="sgd", lr=0.01, momentum=0.9,
                              weight_decay=5e-4, batch_size=256, lr_schedule="step", width=128, depth=3,
                              norm="instancenorm"),
        epochs=300, dsa_epochs=1000, min_networks=5),
}


def get_protocol(name: str) -> Protocol:
    """The protocol called `name` (ValueError naming the known ones otherwise)."""
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown evaluation protocol {name!r}; expected one of {tuple(PROTOCOLS)}")
    return PROTOCOLS[name]


@dataclass(frozen=True)
class ResolvedTraining:
    """What every evaluation network is trained with: the recipe (network shape included in its
    width / depth / norm), the protocol's name, and the settings the caller overrode."""

    recipe: TrainingRecipe
    protocol: str
    overrides: dict[str, Any]

    def network_key(self) -> str:
        """The network as a short name, e.g. `convnet-w128-d3-instancenorm` (cache keys)."""
        options = self.recipe.network_options()
        parts = [self.recipe.architecture] + [f"{k[0]}{v}" if k != "norm" else str(v)
                                              for k, v in options.items()]
        return "-".join(parts)


def resolve_training(
    bank_recipe: TrainingRecipe,
    protocol: str = RECIPE,
    *,
    arch: str | None = None,
    width: int | None = None,
    epochs: int | None = None,
    augmentation: str | None = None,
    lr: float | None = None,
    networks: int | None = None,
) -> ResolvedTraining:
    """The training recipe of `protocol` for a bank whose recipe is `bank_recipe`, with the
    caller's overrides applied and recorded.

    `recipe`: the bank's recipe; its width / depth / norm apply to its own architecture only (an
    `arch` override trains that architecture at its defaults). `standard`: the protocol's network
    and optimiser; label loss, label temperature, augmentation and DSA strategy from the bank; 300
    epochs, or 1000 when the augmentation (the bank's or `augmentation`) is DSA.
    """
    spec = get_protocol(protocol)
    given = {"arch": arch, "width": width, "epochs": epochs, "augmentation": augmentation, "lr": lr}
    overrides = {k: v for k, v in given.items() if v is not None}
    if networks is not None and networks < spec.min_networks:
        overrides["networks"] = networks
    if spec.recipe is None:
        base = bank_recipe
        shape = bank_recipe.network_options() if arch in (None, bank_recipe.architecture) else {}
    else:
        base = replace(spec.recipe, label_loss=bank_recipe.label_loss,
                       label_temperature=bank_recipe.label_temperature,
                       augmentation=bank_recipe.augmentation,
                       extra={k: v for k, v in bank_recipe.extra.items() if k == "dsa_strategy"})
        shape = spec.recipe.network_options() if arch in (None, spec.recipe.architecture) else {}
    architecture = arch or base.architecture
    if width is not None:
        shape["width"] = width
    if architecture not in SHAPED_ARCHITECTURES:
        shape = {}
    elif architecture == "mlp":
        shape.pop("norm", None)
    aug = augmentation or base.augmentation
    if epochs is None:
        epochs = base.epochs if spec.epochs is None else (spec.dsa_epochs if aug == "dsa" else spec.epochs)
    recipe = replace(base, architecture=architecture, epochs=epochs, augmentation=aug,
                     lr=base.lr if lr is None else lr, width=shape.get("width"), depth=shape.get("depth"),
                     norm=shape.get("norm"))
    return ResolvedTraining(recipe, spec.name, overrides)
