"""Differentiable siamese augmentation (DSA, Zhao & Bilen 2021), reimplemented from its description.

A strategy is ops joined by "_" from color, crop, cutout, flip, scale, rotate. Each call picks ONE
op of the strategy at random and applies it (color = brightness, saturation, contrast in turn).
Every op is differentiable w.r.t. the images (and twice, for hypergradients).

Siamese use: sample once, apply to both the real and the synthetic batch, or call `dsa` twice with
the same `seed`. With `shared=True` (the seeded mode) one draw serves the whole batch, so batches
of different sizes get the same transform; with `shared=False` every image gets its own draw (the
mode used when training evaluation networks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from compressdata.errors import UsageError
from compressdata.runtime.transfer import to_device

OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
FLIP_ROTATE = "flip_rotate"


@dataclass(frozen=True)
class DSAParams:
    """Magnitudes of the DSA ops (the DSA paper's values by default)."""

    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0  # degrees
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5


@dataclass(frozen=True)
class DSASample:
    """One sampled augmentation: the op and its random draws ([1] when shared, else [n] each)."""

    op: str
    draws: dict[str, torch.Tensor]
    params: DSAParams

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Apply this augmentation to images [n, C, H, W] (differentiable w.r.t. x)."""
        if x.ndim != 4:
            raise UsageError(f"DSA needs images [n, C, H, W]; got shape {tuple(x.shape)}")
        n = next(iter(self.draws.values())).shape[0]
        if n not in (1, x.shape[0]):
            raise UsageError(f"this sample holds {n} per-image draws; the batch has {x.shape[0]} "
                             f"images (sample with shared=True to apply one draw to any batch)")
        d = {k: to_device(v, x.device) for k, v in self.draws.items()}
        return _APPLY[self.op](x, d, self.params)


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """The ops of a strategy string; ValueError naming unknown ops."""
    ops = tuple(s for s in strategy.split("_") if s)
    unknown = [s for s in ops if s not in OPS]
    if not ops or unknown:
        raise UsageError(f"bad DSA strategy {strategy!r}: unknown ops {unknown}; "
                         f"join ops from {OPS} with '_'")
    return ops


def sample_dsa(
    strategy: str,
    batch: int,
    image_size: tuple[int, int],
    generator: torch.Generator | None = None,
    params: DSAParams | None = None,
    shared: bool = True,
) -> DSASample:
    """Draw one op of `strategy` and its parameters (one draw when `shared`, else `batch`)."""
    params = params or DSAParams()
    ops = parse_strategy(strategy)
    op = ops[int(torch.randint(len(ops), (1,), generator=generator))]
    n = 1 if shared else batch
    h, w = image_size

    def uniform() -> torch.Tensor:
        return torch.rand(n, generator=generator)

    if op == "color":
        draws = {"brightness": uniform(), "saturation": uniform(), "contrast": uniform()}
    elif op == "crop":
        sh, sw = int(h * params.ratio_crop_pad + 0.5), int(w * params.ratio_crop_pad + 0.5)
        draws = {"dy": torch.randint(-sh, sh + 1, (n,), generator=generator),
                 "dx": torch.randint(-sw, sw + 1, (n,), generator=generator)}
    elif op == "cutout":
        ch, cw = int(h * params.ratio_cutout + 0.5), int(w * params.ratio_cutout + 0.5)
        draws = {"cy": torch.randint(0, h + (1 - ch % 2), (n,), generator=generator),
                 "cx": torch.randint(0, w + (1 - cw % 2), (n,), generator=generator)}
    elif op == "flip":
        draws = {"flip": uniform()}
    elif op == "scale":
        r = params.ratio_scale
        draws = {"sy": uniform() * (r - 1 / r) + 1 / r, "sx": uniform() * (r - 1 / r) + 1 / r}
    else:  # rotate
        draws = {"angle": (uniform() - 0.5) * 2 * params.ratio_rotate / 180 * math.pi}
    return DSASample(op, draws, params)


def dsa(
    x: torch.Tensor,
    strategy: str = DEFAULT_STRATEGY,
    generator: torch.Generator | None = None,
    *,
    seed: int | None = None,
    params: DSAParams | None = None,
) -> torch.Tensor:
    """Apply one randomly chosen op of `strategy` to images [n, C, H, W].

    With `seed`, the draw comes from a fresh generator seeded with it and is shared by the whole
    batch: two calls with the same seed transform their batches identically (siamese). Without,
    every image gets its own draw from `generator` (the global RNG when None).
    """
    if x.ndim != 4:
        raise UsageError(f"DSA needs images [n, C, H, W]; got shape {tuple(x.shape)}")
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    sample = sample_dsa(strategy, x.shape[0], tuple(x.shape[-2:]), generator, params,
                        shared=seed is not None)
    return sample.apply(x)


def flip_rotate(x: torch.Tensor, generator: torch.Generator | None = None, *,
                seed: int | None = None, params: DSAParams | None = None) -> torch.Tensor:
    """DSA restricted to flip and rotate (the RTP code's augmentation)."""
    return dsa(x, FLIP_ROTATE, generator, seed=seed, params=params)


def _col(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(x.dtype).view(-1, 1, 1, 1)


def _color(x: torch.Tensor, d: dict[str, torch.Tensor], p: DSAParams) -> torch.Tensor:
    x = x + (_col(d["brightness"], x) - 0.5) * p.brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_col(d["saturation"], x) * p.saturation) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_col(d["contrast"], x) + p.contrast) + mean


def _crop(x: torch.Tensor, d: dict[str, torch.Tensor], p: DSAParams) -> torch.Tensor:
    """Translate by (dy, dx) pixels, filling with zeros (pad 1, shift, clamp into the pad)."""
    n, c, h, w = x.shape
    padded = F.pad(x, [1, 1, 1, 1])
    rows = (torch.arange(h, device=x.device) + d["dy"].view(-1, 1) + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device) + d["dx"].view(-1, 1) + 1).clamp(0, w + 1)
    rows = rows.expand(n, h).view(n, 1, h, 1).expand(n, c, h, w + 2)
    out = padded.gather(2, rows)
    cols = cols.expand(n, w).view(n, 1, 1, w).expand(n, c, h, w)
    return out.gather(3, cols)


def _cutout(x: torch.Tensor, d: dict[str, torch.Tensor], p: DSAParams) -> torch.Tensor:
    """Zero a (ratio*H) x (ratio*W) square centred at (cy, cx), clipped to the image."""
    _, _, h, w = x.shape
    ch, cw = int(h * p.ratio_cutout + 0.5), int(w * p.ratio_cutout + 0.5)
    top = (d["cy"] - ch // 2).view(-1, 1)
    left = (d["cx"] - cw // 2).view(-1, 1)
    r = torch.arange(h, device=x.device)
    s = torch.arange(w, device=x.device)
    in_rows = (r >= top) & (r < top + ch)  # [n, h]
    in_cols = (s >= left) & (s < left + cw)  # [n, w]
    hole = in_rows[:, None, :, None] & in_cols[:, None, None, :]
    return x * (~hole).to(x.dtype)


def _flip(x: torch.Tensor, d: dict[str, torch.Tensor], p: DSAParams) -> torch.Tensor:
    return torch.where(_col(d["flip"], x) < p.prob_flip, x.flip(3), x)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    theta = theta.to(x.dtype).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def _scale(x: torch.Tensor, d: dict[str, torch.Tensor], p: DSAParams) -> torch.Tensor:
    sy, sx = d["sy"], d["sx"]
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, zero], 1), torch.stack([zero, sy, zero], 1)], 1)
    return _affine(x, theta)


def _rotate(x: torch.Tensor, d: dict[str, torch.Tensor], p: DSAParams) -> torch.Tensor:
    a = d["angle"]
    cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, sin, zero], 1), torch.stack([-sin, cos, zero], 1)], 1)
    return _affine(x, theta)


_APPLY = {"color": _color, "crop": _crop, "cutout": _cutout, "flip": _flip, "scale": _scale,
          "rotate": _rotate}
