"""What released files cannot say, as the methods' own code fixes it: dataset presets (class names,
image shape, the mean / std the code normalises with) and method presets (the published evaluation
recipe). Sources, read in the methods' repositories (docs/interop.md cites them line by line):

- VICO-UoE/DatasetCondensation (DC, DSA, DM): utils.get_dataset (mean / std), utils.evaluate_synset
  (SGD momentum 0.9, weight decay 5e-4, lr 0.01, batch 256, lr x0.1 at half the epochs),
  main.py (DC: 300 epochs without augmentation; DSA: 1000 epochs with DSA), main_DM.py (1000 epochs,
  DSA), readme (no flip in the DSA strategy for MNIST and SVHN).
- GeorgeCazenavette/mtt-distillation (MTT) and AngusDujw/FTD-distillation (FTD): utils.get_dataset
  (CIFAR-100 normalised with CIFAR-10's mean / std; with --zca no mean / std, then kornia's
  ZCAWhitening(eps=0.1) fitted on the training images), distill.py (evaluation with the learned lr
  syn_lr, 1000 epochs, DSA color_crop_cutout_flip_scale_rotate, batch 256).
- NUS-HPC-AI-Lab/DATM: distill/evaluation.py (learned lr from lr_best.pt, soft cross-entropy on
  softmax(labels), batch 128, 1000 epochs, DSA).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from compressdata.augment import DEFAULT_STRATEGY
from compressdata.bank.metadata import TrainingRecipe
from compressdata.data.sources import PRESETS as SOURCE_PRESETS
from compressdata.interop.errors import InteropError

CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup",
    "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house",
    "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)


@dataclass(frozen=True)
class DatasetPreset:
    """A dataset as the DC-family code loads it: its name there, classes, [C, H, W], mean / std."""

    name: str
    code_name: str
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    digits: bool = False  # the DSA readme drops flip from the strategy for digit datasets

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _classes(name: str) -> tuple[str, ...]:
    return SOURCE_PRESETS[name].classes  # type: ignore[return-value]


DATASETS: dict[str, DatasetPreset] = {
    "mnist": DatasetPreset("mnist", "MNIST", _classes("mnist"), (1, 28, 28), (0.1307,), (0.3081,), digits=True),
    "fashion-mnist": DatasetPreset("fashion-mnist", "FashionMNIST", _classes("fashion-mnist"), (1, 28, 28),
                                   (0.2861,), (0.3530,)),
    "svhn": DatasetPreset("svhn", "SVHN", _classes("svhn"), (3, 32, 32), (0.4377, 0.4438, 0.4728),
                          (0.1980, 0.2010, 0.1970), digits=True),
    "cifar10": DatasetPreset("cifar10", "CIFAR10", _classes("cifar10"), (3, 32, 32),
                             (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": DatasetPreset("cifar100", "CIFAR100", CIFAR100_CLASSES, (3, 32, 32),
                              (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def dataset_preset(name: str) -> DatasetPreset:
    """A preset by our name (fashion-mnist) or the methods' (FashionMNIST); InteropError otherwise."""
    key = name.strip().lower()
    for preset in DATASETS.values():
        if key in (preset.name, preset.code_name.lower()):
            return preset
    raise InteropError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")


@dataclass(frozen=True)
class MethodPreset:
    """A distillation method's published evaluation protocol and where it is from.

    family "dc": DC-code normalisation; "mtt": MTT-code normalisation (CIFAR-100 with CIFAR-10's
    statistics) and ZCA whitening as a per-run choice on CIFAR. learned_lr: the recipe trains with
    the lr learned with the images (None when the method has a fixed lr).
    """

    name: str
    title: str
    paper: str
    code: str
    family: str
    epochs: int
    augmentation: str
    learned_lr: bool
    batch_size: int = 256
    lr: float = 0.01

    def normalization_stats(self, dataset: DatasetPreset) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) the method's code normalises `dataset` with."""
        if self.family == "mtt" and dataset.name == "cifar100":
            cifar10 = DATASETS["cifar10"]
            return cifar10.mean, cifar10.std
        return dataset.mean, dataset.std

    def zca_default(self, dataset: DatasetPreset) -> bool | None:
        """False when the method never whitens this dataset; None when a run may or may not have
        (the MTT family on CIFAR: the command must be told)."""
        return None if self.family == "mtt" and dataset.name in ("cifar10", "cifar100") else False

    def dsa_strategy(self, dataset: DatasetPreset) -> str:
        """The DSA strategy the method evaluates with on `dataset`."""
        if self.family == "dc" and dataset.digits:
            return DEFAULT_STRATEGY.replace("_flip", "")
        return DEFAULT_STRATEGY

    def deviations(self, dataset: DatasetPreset) -> list[str]:
        """Where compressdata's evaluation cannot follow the method's protocol exactly."""
        if self.name == "dc" and dataset.name == "mnist":
            return ["DC evaluates MNIST with its own crop/scale/rotate augmentation (utils.augment, "
                    "1000 epochs), which compressdata does not implement; the recipe trains without "
                    "augmentation for 300 epochs"]
        return []


_DC_CODE = "https://github.com/VICO-UoE/DatasetCondensation"
_MTT_CODE = "https://github.com/GeorgeCazenavette/mtt-distillation"
METHODS: dict[str, MethodPreset] = {
    "dc": MethodPreset("dc", "Dataset Condensation with Gradient Matching",
                       "Zhao, Mopuri, Bilen, ICLR 2021", _DC_CODE, "dc", 300, "none", False),
    "dsa": MethodPreset("dsa", "Dataset Condensation with Differentiable Siamese Augmentation",
                        "Zhao, Bilen, ICML 2021", _DC_CODE, "dc", 1000, "dsa", False),
    "dm": MethodPreset("dm", "Dataset Condensation with Distribution Matching",
                       "Zhao, Bilen, WACV 2023", _DC_CODE, "dc", 1000, "dsa", False),
    "mtt": MethodPreset("mtt", "Dataset Distillation by Matching Training Trajectories",
                        "Cazenavette, Wang, Torralba, Efros, Zhu, CVPR 2022", _MTT_CODE, "mtt", 1000, "dsa",
                        True),
    "ftd": MethodPreset("ftd", "Minimizing the Accumulated Trajectory Error to Improve Dataset Distillation",
                        "Du, Jiang, Tan, Zhou, Li, CVPR 2023", "https://github.com/AngusDujw/FTD-distillation",
                        "mtt", 1000, "dsa", True),
    "datm": MethodPreset("datm", "Towards Lossless Dataset Distillation via Difficulty-Aligned Trajectory "
                         "Matching", "Guo, Wang, Cazenavette, Li, Zhang, You, ICLR 2024",
                         "https://github.com/NUS-HPC-AI-Lab/DATM", "mtt", 1000, "dsa", True, batch_size=128),
}

GENERIC = MethodPreset("unknown", "", "", "", "dc", TrainingRecipe.epochs, "none", False)


def method_preset(name: str | None) -> MethodPreset:
    """A method preset by name (case-insensitive); GENERIC (the default protocol) for None."""
    if name is None:
        return GENERIC
    try:
        return METHODS[name.strip().lower()]
    except KeyError:
        raise InteropError(f"unknown method {name!r}; expected one of {sorted(METHODS)}") from None


_CONVNET = re.compile(r"^ConvNet(?:(?P<what>[DW])(?P<n>\d+)|(?P<norm>BN|IN|NN))?$")
_NORMS = {"BN": "batchnorm", "IN": "instancenorm", "NN": "none"}


def network(model: str) -> dict[str, Any]:
    """TrainingRecipe fields for a network named as in the DC / MTT code (ConvNet, ConvNetD4,
    ConvNetW64, ConvNetBN, ResNet18, ResNet18BN, MLP)."""
    match = _CONVNET.match(model)
    if match:
        shape: dict[str, Any] = {"architecture": "convnet", "width": 128, "depth": 3, "norm": "instancenorm"}
        if match["what"]:
            shape["depth" if match["what"] == "D" else "width"] = int(match["n"])
        if match["norm"]:
            shape["norm"] = _NORMS[match["norm"]]
        return shape
    named = {"ResNet18": {"architecture": "resnet18"}, "ResNet18BN": {"architecture": "resnet18_bn"},
             "MLP": {"architecture": "mlp", "width": 128, "depth": 3}}
    if model in named:
        return dict(named[model])
    raise InteropError(f"network {model!r} has no compressdata counterpart; expected ConvNet, ConvNetD<n>, "
                       "ConvNetW<n>, ConvNetBN, ConvNetIN, ConvNetNN, ResNet18, ResNet18BN or MLP")


def recipe(method: MethodPreset, dataset: DatasetPreset, model: str, lr: float, label_space: str) -> TrainingRecipe:
    """The method's evaluation recipe on `dataset` with network `model`, training lr `lr`."""
    extra = {"dsa_strategy": method.dsa_strategy(dataset)} if method.augmentation == "dsa" else {}
    return TrainingRecipe(
        **network(model), optimizer="sgd", lr=lr, momentum=0.9, weight_decay=5e-4, epochs=method.epochs,
        batch_size=method.batch_size, lr_schedule="step", augmentation=method.augmentation,
        label_loss="cross_entropy" if label_space == "index" else "soft_cross_entropy",
        label_temperature=1.0, extra=extra)
