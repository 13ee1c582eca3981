"""Networks for distillation and evaluation: ConvNet-3 (DC/DSA/DM), ResNet-18 and an MLP.

Forward passes update no state except batch-norm running statistics, so the instance-norm and
norm-free variants can be driven by `torch.func.functional_call(model, params, (x,))`.
"""

from __future__ import annotations

import torch
from torch import nn

from compressdata.errors import UsageError

ARCHITECTURES = ("convnet", "resnet18", "resnet18_bn", "mlp")
NORMS = ("instancenorm", "batchnorm", "none")


def build_model(
    arch: str,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int] | int,
    width: int = 128,
    depth: int = 3,
    norm: str = "instancenorm",
) -> nn.Module:
    """A freshly initialised network (the global torch RNG draws the weights).

    convnet: `depth` blocks of [conv 3x3, `norm`, ReLU, avg-pool 2x2] with `width` channels, then a
    linear classifier; 28x28 inputs get padding 3 in the first conv so they act as 32x32.
    resnet18 / resnet18_bn: the CIFAR-style ResNet-18 (widths 64-512) with instance norm / batch
    norm; `width`, `depth` and `norm` do not apply. mlp: `depth` linear layers (ReLU between), the
    hidden ones `width` wide; `norm` does not apply.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2:
        raise UsageError(f"image_size must be an int or (height, width); got {image_size!r}")
    h, w = size
    for what, value in (("in_channels", in_channels), ("num_classes", num_classes), ("height", h),
                        ("width of the image", w), ("width", width), ("depth", depth)):
        if not isinstance(value, int) or value < 1:
            raise UsageError(f"{what} must be a positive int; got {value!r}")
    if norm not in NORMS:
        raise UsageError(f"unknown norm {norm!r}; expected one of {NORMS}")
    if arch == "convnet":
        return ConvNet(in_channels, num_classes, (h, w), width, depth, norm)
    if arch == "resnet18":
        return ResNet18(in_channels, num_classes, "instancenorm")
    if arch == "resnet18_bn":
        return ResNet18(in_channels, num_classes, "batchnorm")
    if arch == "mlp":
        return MLP(in_channels * h * w, num_classes, width, depth)
    raise UsageError(f"unknown architecture {arch!r}; expected one of {ARCHITECTURES}")


def _norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class ConvNet(nn.Module):
    """ConvNet-D of the DC/DSA/DM codebases (ConvNet-3 at the defaults)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int],
                 width: int = 128, depth: int = 3, norm: str = "instancenorm"):
        super().__init__()
        h, w = image_size
        layers: list[nn.Module] = []
        channels = in_channels
        for d in range(depth):
            pad = 3 if d == 0 and (h, w) == (28, 28) else 1
            layers += [nn.Conv2d(channels, width, kernel_size=3, padding=pad),
                       _norm_layer(norm, width), nn.ReLU(), nn.AvgPool2d(2, 2)]
            channels = width
            h, w = (h + 2 * pad - 2) // 2, (w + 2 * pad - 2) // 2
            if h < 1 or w < 1:
                raise UsageError(f"image {image_size} is too small for a depth-{depth} ConvNet")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * h * w, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features before the classifier (used by distribution matching)."""
        return self.features(x).flatten(1)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every block [conv, norm, ReLU, pool] (the last one is `embed` unflattened);
        used by layer-wise losses such as MIM."""
        maps = []
        for block in range(len(self.features) // 4):
            x = self.features[4 * block: 4 * block + 4](x)
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a (projected when needed) identity shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.norm2 = _norm_layer(norm, planes)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), _norm_layer(norm, planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for small images: 3x3 stem at stride 1, four stages of two blocks, global pool."""

    def __init__(self, in_channels: int, num_classes: int, norm: str = "instancenorm"):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False),
                                  _norm_layer(norm, 64), nn.ReLU())
        blocks: list[nn.Module] = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(in_planes, planes, stride, norm), BasicBlock(planes, planes, 1, norm)]
            in_planes = planes
        self.layers = nn.Sequential(*blocks)
        self.classifier = nn.Linear(512, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled features before the classifier."""
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class MLP(nn.Module):
    """`depth` linear layers on the flattened image, ReLU between them."""

    def __init__(self, in_features: int, num_classes: int, width: int = 128, depth: int = 3):
        super().__init__()
        sizes = [in_features] + [width] * (depth - 1)
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.hidden = nn.Sequential(nn.Flatten(), *layers)
        self.classifier = nn.Linear(sizes[-1], num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations."""
        return self.hidden(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
