"""The downstream detector: a small UNet trained from scratch on synthetic anomalies plus normal images.

It is deliberately the same for every synthesis method (architecture, steps, seed, augmentation, batch order), so
that the only thing that differs between two rows of the results table is the synthetic data. Runs on a CPU: the
images are resized to ``side`` (128 px by default) and the network has 122 k parameters (width 8), about 1 s per
step of 8 images on one busy core.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class SegConfig:
    side: int = 128            # training and inference resolution
    width: int = 8             # channels of the first level; doubled at each of the 3 downsamplings
    steps: int = 200
    batch: int = 8
    lr: float = 2e-3
    anomaly_fraction: float = 0.5   # share of each batch drawn from the synthetic anomalies
    smoothing_sigma: float = 4.0    # Gaussian smoothing of the anomaly map (at the mask's resolution)

    def to_dict(self) -> dict:
        return asdict(self)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallUNet(nn.Module):
    """Four-level UNet (w, 2w, 4w, 8w channels), bilinear upsampling, one logit per pixel."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.enc = nn.ModuleList([_block(3, w), _block(w, 2 * w), _block(2 * w, 4 * w), _block(4 * w, 8 * w)])
        self.dec = nn.ModuleList([_block(12 * w, 4 * w), _block(6 * w, 2 * w), _block(3 * w, w)])
        self.head = nn.Conv2d(w, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for block in self.dec:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


def _to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> float (N, 3, S, S) in about [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def _augment(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Photometric jitter (brightness ±0.1, contrast ±10 %) and a shift of up to 1/16 of the side (reflected).

    No flips or rotations: on objects they turn a normal image into a "misplaced" one.
    """
    n, _, s, _ = x.shape
    brightness = (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.2
    contrast = 1.0 + (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.2
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean + brightness
    limit = max(1, s // 16)
    shifts = torch.randint(-limit, limit + 1, (n, 2), generator=g)
    xs, ys = [], []
    for i in range(n):
        dy, dx = int(shifts[i, 0]), int(shifts[i, 1])
        pad = (abs(dx), abs(dx), abs(dy), abs(dy))
        xi = F.pad(x[i:i + 1], pad, mode="reflect")
        yi = F.pad(y[i:i + 1], pad, mode="reflect")
        top, left = abs(dy) + dy, abs(dx) + dx
        xs.append(xi[..., top:top + s, left:left + s])
        ys.append(yi[..., top:top + s, left:left + s])
    return torch.cat(xs), torch.cat(ys)


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Focal loss (γ = 2) plus soft Dice on the anomaly class: the defect is a few percent of the pixels."""
    p = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pt = p * target + (1 - p) * (1 - target)
    focal = ((1 - pt) ** 2 * bce).mean()
    inter = (p * target).sum()
    dice = 1 - (2 * inter + 1) / (p.sum() + target.sum() + 1)
    return focal + dice


def train_unet(anomalies: np.ndarray, anomaly_masks: np.ndarray, normals: np.ndarray, config: SegConfig,
               seed: int, progress: Callable[[int], None] | None = None) -> tuple[SmallUNet, list[float]]:
    """Train from scratch. Inputs are already at ``config.side``: uint8 (N, S, S, 3) images, bool (N, S, S) masks.

    Each batch holds ``anomaly_fraction`` synthetic anomalies and the rest normal images with empty masks, drawn
    with a generator seeded by ``seed`` (so two runs with the same data give the same network).
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = SmallUNet(config.width)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.steps)
    xa, ya = _to_input(anomalies), torch.from_numpy(anomaly_masks.astype(np.float32))[:, None]
    xn = _to_input(normals)
    yn = torch.zeros(len(normals), 1, config.side, config.side)
    n_anom = max(1, round(config.batch * config.anomaly_fraction)) if len(xa) else 0
    losses = []
    model.train()
    for step in range(config.steps):
        ia = torch.randint(0, len(xa), (n_anom,), generator=g) if n_anom else torch.zeros(0, dtype=torch.long)
        inn = torch.randint(0, len(xn), (config.batch - n_anom,), generator=g)
        x = torch.cat([xa[ia], xn[inn]])
        y = torch.cat([ya[ia], yn[inn]])
        x, y = _augment(x, y, g)
        loss = _loss(model(x), (y > 0.5).float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress:
            progress(step + 1)
    model.eval()
    return model, losses


@torch.no_grad()
def predict_maps(model: SmallUNet, images: np.ndarray, out_size: tuple[int, int], batch: int = 16) -> np.ndarray:
    """Anomaly probability maps (N, H, W) float32 at ``out_size`` (the masks' resolution)."""
    maps = []
    for i in range(0, len(images), batch):
        logits = model(_to_input(images[i:i + batch]))
        prob = torch.sigmoid(F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False))
        maps.append(prob[:, 0].numpy())
    return np.concatenate(maps).astype(np.float32)
