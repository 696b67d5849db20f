"""Generative metrics as the paper reports them: Inception Score and IC-LPIPS — or clearly named substitutes.

Paper definitions (AnomalyAgent Table 1, following DFMGAN / AnomalyDiffusion):
- IS: exp(E_x KL(p(y|x) || p(y))) over the synthetic images of a defect type, Inception-v3 class posteriors;
  averaged over types.
- IC-LPIPS (intra-cluster LPIPS): the first ⌊N/3⌋ real defect images of a type are cluster centres; every synthetic
  image of that type joins the centre nearest in LPIPS; within each cluster (at most 50 images) the mean pairwise
  LPIPS is taken; averaged over clusters (clusters with fewer than two images have no pair and are left out), then
  over types. Higher = more diverse.

Networks: Inception-v3 and LPIPS have no offline weights here. They load from ``weights/`` as TorchScript files
(``weights/inception-v3/inception_v3.pt``: float N×3×299×299 in [0, 1] -> class logits;
``weights/lpips/lpips.pt``: two float N×3×H×W in [-1, 1] -> N distances), exported on a connected machine.
When absent, the same formulas run on EfficientNet-Lite0 (real ImageNet weights) and the numbers are reported as
``IS-effnet-lite0`` and ``IC-feature-dist-effnet-lite0`` (LPIPS's unweighted form: channel-normalised feature
differences at five depths) — comparable between methods, never to the paper's IS / IC-LPIPS.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

INCEPTION_FILE = Path("inception-v3") / "inception_v3.pt"
LPIPS_FILE = Path("lpips") / "lpips.pt"
LITE0_LAYERS = (0, 2, 4, 10, 15)   # last block of stages 1, 2, 3, 5, 7 (16/24/40/112/320 channels)


# ------------------------------------------------------------------------------------------ formulas
def inception_score(probs: np.ndarray) -> float:
    """exp(mean_x KL(p(y|x) || p(y))) for class posteriors ``probs`` (N, C); one split."""
    p = np.asarray(probs, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    marginal = p.mean(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(p > 0, p * (np.log(p) - np.log(marginal)), 0.0).sum(axis=1)
    return float(np.exp(kl.mean()))


def intra_cluster_distance(centre_to_fake: np.ndarray, fake_pairwise: np.ndarray, max_per_cluster: int = 50) -> float | None:
    """IC-LPIPS for one type from precomputed distances.

    ``centre_to_fake`` (K, M): distance of each synthetic image to each real centre; ``fake_pairwise`` (M, M).
    Each synthetic image joins its nearest centre (ties: the first); the first ``max_per_cluster`` members of a
    cluster count; returns the mean over clusters with at least two members of their mean pairwise distance, or
    None when no cluster has a pair.
    """
    assign = np.argmin(centre_to_fake, axis=0)
    values = []
    for k in range(centre_to_fake.shape[0]):
        members = np.nonzero(assign == k)[0][:max_per_cluster]
        if len(members) < 2:
            continue
        sub = fake_pairwise[np.ix_(members, members)]
        iu = np.triu_indices(len(members), k=1)
        values.append(float(sub[iu].mean()))
    return float(np.mean(values)) if values else None


def n_centres(n_real: int) -> int:
    return max(1, n_real // 3)


# ------------------------------------------------------------------------------------------ networks
class Lite0Features:
    """EfficientNet-Lite0 (ImageNet weights): class posteriors and multi-depth features for the substitutes."""

    is_name = "IS-effnet-lite0"
    ic_name = "IC-feature-dist-effnet-lite0"

    def __init__(self, side: int = 224):
        from .classifier import pretrained_lite0

        self.model = pretrained_lite0().eval().requires_grad_(False)
        self.side = side

    def _input(self, images: list[np.ndarray]):
        import cv2
        import torch

        arr = np.stack([cv2.resize(im, (self.side, self.side), interpolation=cv2.INTER_AREA) for im in images])
        return torch.from_numpy(arr.astype(np.float32)).permute(0, 3, 1, 2).sub(127.0).div(128.0)

    def probs(self, images: list[np.ndarray]) -> np.ndarray:
        import torch

        with torch.no_grad():
            return torch.cat([self.model(self._input(images[i:i + 16])).softmax(1)
                              for i in range(0, len(images), 16)]).numpy()

    def features(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Per image: list of unit-normalised (C, h, w) feature maps at LITE0_LAYERS (LPIPS's normalisation)."""
        import torch

        out: list[list[np.ndarray]] = [[] for _ in images]
        with torch.no_grad():
            for i in range(0, len(images), 16):
                feats = self.model.stages(self._input(images[i:i + 16]), LITE0_LAYERS)
                for f in feats:
                    f = f / (f.norm(dim=1, keepdim=True) + 1e-10)
                    for j in range(len(f)):
                        out[i + j].append(f[j].numpy())
        return out

    def distances(self, a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
        """(len(a), len(b)) LPIPS-form distances: sum over layers of spatial mean of squared differences."""
        fa, fb = self.features(a), self.features(b)
        d = np.zeros((len(a), len(b)))
        for i, x in enumerate(fa):
            for j, y in enumerate(fb):
                d[i, j] = sum(float(((u - v) ** 2).sum(0).mean()) for u, v in zip(x, y))
        return d


class TorchScriptNetworks:
    """Inception-v3 and LPIPS from TorchScript files under ``weights_dir`` (see module docstring)."""

    is_name = "IS"
    ic_name = "IC-LPIPS"

    def __init__(self, weights_dir: Path):
        import torch

        self.inception = torch.jit.load(str(weights_dir / INCEPTION_FILE), map_location="cpu").eval()
        self.lpips = torch.jit.load(str(weights_dir / LPIPS_FILE), map_location="cpu").eval()

    @staticmethod
    def available(weights_dir: Path | None) -> bool:
        return weights_dir is not None and (weights_dir / INCEPTION_FILE).is_file() and \
            (weights_dir / LPIPS_FILE).is_file()

    @staticmethod
    def _tensor(images: list[np.ndarray], side: int | None):
        import cv2
        import torch

        if side:
            images = [cv2.resize(im, (side, side), interpolation=cv2.INTER_LINEAR) for im in images]
        return torch.from_numpy(np.stack(images).astype(np.float32) / 255.0).permute(0, 3, 1, 2)

    def probs(self, images: list[np.ndarray]) -> np.ndarray:
        import torch

        with torch.no_grad():
            return torch.cat([self.inception(self._tensor(images[i:i + 16], 299)).softmax(1)
                              for i in range(0, len(images), 16)]).numpy()

    def distances(self, a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
        import torch

        ta, tb = self._tensor(a, None) * 2 - 1, self._tensor(b, None) * 2 - 1
        d = np.zeros((len(a), len(b)))
        with torch.no_grad():
            for i in range(len(a)):
                d[i] = self.lpips(ta[i:i + 1].expand(len(b), -1, -1, -1), tb).reshape(-1).numpy()
        return d


def load_networks(weights_dir: Path | None):
    """The paper's networks when their files are present, else the EfficientNet-Lite0 substitutes."""
    if TorchScriptNetworks.available(weights_dir):
        return TorchScriptNetworks(weights_dir)
    return Lite0Features()


# ------------------------------------------------------------------------------------------ per method
def generative_metrics(synthetic: dict[str, list[np.ndarray]], real: dict[str, list[np.ndarray]], networks,
                       max_per_cluster: int = 50, progress: Callable[[], None] | None = None) -> dict:
    """IS and IC distance per type and their means over types, under the networks' honest names."""
    is_per, ic_per = {}, {}
    for t, fakes in synthetic.items():
        if not fakes:
            continue
        is_per[t] = inception_score(networks.probs(fakes))
        centres = real.get(t, [])[:n_centres(len(real.get(t, [])))]
        if centres and len(fakes) >= 2:
            ic = intra_cluster_distance(networks.distances(centres, fakes), networks.distances(fakes, fakes),
                                        max_per_cluster)
            if ic is not None:
                ic_per[t] = ic
        if progress:
            progress()
    return {networks.is_name: float(np.mean(list(is_per.values()))) if is_per else None,
            networks.ic_name: float(np.mean(list(ic_per.values()))) if ic_per else None,
            "per_type": {t: {networks.is_name: is_per.get(t), networks.ic_name: ic_per.get(t)} for t in is_per},
            "networks": networks.is_name + " / " + networks.ic_name}
