"""Defect-type classification: a reusable classifier (:func:`train_classifier` / :func:`predict`) and the benchmark's
type measures (:func:`type_accuracy`): whole images (the paper's Table 2 measure) and defect crops.

Two ways to train, one API:

- ``linear`` (default): frozen EfficientNet-Lite0 (real ImageNet weights) pooled at three depths, standardised,
  and a class-balanced logistic regression (scikit-learn). Deterministic, a few seconds per method on a CPU, and
  the features of the real test images are computed once per category (:func:`embed`), whatever the method or seed.
- ``finetune``: the last Lite0 stages and a new head fine-tuned with AdamW (``ClsConfig.steps``), and the paper's
  ResNet34 (:mod:`.resnet`, layer4 + fc) beside it when ``weights/resnet34/resnet34.pth`` exists.

Why measures beyond plain accuracy: a classifier that predicts one class for every real image scores exactly the
share of that class, which reads like a result. :func:`type_scores` reports balanced accuracy (scikit-learn) and
chance beside accuracy and names the collapse (:func:`collapse_reason`) so the report prints it instead of a number.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np


LITE0_MEAN, LITE0_STD = 127.0, 128.0
EMBED_BLOCKS = (4, 10, 15)      # last block of stages 3, 5, 7 (40 / 112 / 320 channels), global-average pooled
COLLAPSE_SHARE = 0.9            # one class taking this share of the predictions (or more) = collapsed


@dataclass(frozen=True)
class ClsConfig:
    side: int = 160            # below Lite0's native 224: half the cost, defects stay visible
    mode: str = "linear"       # "linear" (frozen features + logistic regression) or "finetune"
    c: float = 1.0             # linear: inverse L2 strength of the logistic regression
    steps: int = 200           # finetune only
    batch: int = 16
    lr: float = 1e-3
    frozen_blocks: int = 11    # finetune: blocks 0..10 keep their ImageNet weights; stages 6-7 and the head train
    crop_context: float = 1.5  # crops: side = context x the defect's longer bounding-box side ...
    crop_min: float = 0.125    # ... and at least this fraction of the image's shorter side

    def to_dict(self) -> dict:
        return asdict(self)


def pretrained_lite0():
    """A fresh EfficientNet-Lite0 with the ImageNet weights (a mismatch is an error)."""
    from ..inspection.backbone import pretrained_lite0 as load

    return load("the evaluation harness needs them: its detector, classifier and feature metrics run on this network")


def _to_input(images: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().sub_(LITE0_MEAN).div_(LITE0_STD)


def resize_batch(images: Sequence[np.ndarray] | np.ndarray, side: int) -> np.ndarray:
    import cv2

    out = []
    for im in images:
        im = np.asarray(im)
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=2)
        out.append(im if im.shape[:2] == (side, side) else cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA))
    return np.stack(out).astype(np.uint8) if out else np.zeros((0, side, side, 3), np.uint8)


# ------------------------------------------------------------------------------------------ crops
def defect_crop(image: np.ndarray, mask: np.ndarray, context: float = 1.5, min_fraction: float = 0.125) -> np.ndarray:
    """The square around a defect: centred on the mask's bounding box, side = ``context`` x its longer side and at
    least ``min_fraction`` of the image's shorter side, shifted to stay inside the image. One rule for synthetic
    masks (training) and ground-truth masks (testing), so the crop itself carries no hint of where it came from.
    An empty mask gives the whole image."""
    h, w = image.shape[:2]
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return image
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = int(round(max(context * max(y1 - y0, x1 - x0), min_fraction * min(h, w))))
    side = max(1, min(side, h, w))
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    top = int(np.clip(round(cy - side / 2), 0, h - side))
    left = int(np.clip(round(cx - side / 2), 0, w - side))
    return image[top:top + side, left:left + side]


# ------------------------------------------------------------------------------------------ the classifier
def embed(images: Sequence[np.ndarray] | np.ndarray, side: int = 160, model: Any = None) -> np.ndarray:
    """Frozen Lite0 features (N, 472): blocks EMBED_BLOCKS, global-average pooled; images resized to ``side``."""
    import torch

    model = model if model is not None else pretrained_lite0().eval()
    x = resize_batch(images, side)
    parts = []
    with torch.no_grad():
        for i in range(0, len(x), 32):
            outs = model.stages(_to_input(x[i:i + 32]), EMBED_BLOCKS)
            parts.append(torch.cat([o.mean(dim=(2, 3)) for o in outs], 1).numpy())
    return np.concatenate(parts) if parts else np.zeros((0, 472), np.float32)


def embed_with_mirrors(images: Sequence[np.ndarray] | np.ndarray, side: int = 160, model: Any = None) -> np.ndarray:
    """(2N, D): each image's features, then its mirror image's (the training augmentation)."""
    x = resize_batch(images, side)
    return embed(np.concatenate([x, x[:, :, ::-1]]), side, model)


@dataclass
class TypeClassifier:
    """A trained type classifier; ``classes`` are the labels it was trained with (names or ints), in order."""

    classes: list[Any]
    config: ClsConfig
    scores_fn: Callable[[np.ndarray], np.ndarray]     # uint8 images (N, S, S, 3) at config.side -> (N, K) scores
    linear: Any = None                                 # the fitted sklearn pipeline, for the linear mode

    def predict_indices(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        return self.scores_fn(resize_batch(images, self.config.side)).argmax(1)


def _fit_linear(features: np.ndarray, targets: np.ndarray, config: ClsConfig):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=config.c, max_iter=2000, class_weight="balanced"))
    return model.fit(features, targets)


def fit_linear_features(features: np.ndarray, targets: np.ndarray, n_classes: int, config: ClsConfig):
    """Linear mode on precomputed :func:`embed_with_mirrors` features (the harness reuses real-image features);
    returns a function features -> (N, n_classes) scores (classes absent from training score -inf)."""
    if len(np.unique(targets)) < 2:         # one class in the training set: it is the only possible answer
        only = int(targets[0])
        return (lambda f: np.where(np.arange(n_classes)[None] == only, 0.0, -np.inf).repeat(len(f), 0)), None
    model = _fit_linear(features, targets, config)

    def scores(f: np.ndarray) -> np.ndarray:
        out = np.full((len(f), n_classes), -np.inf)
        if len(model.classes_) == 1:
            out[:, int(model.classes_[0])] = 0.0
        else:
            out[:, model.classes_.astype(int)] = model.decision_function(f).reshape(len(f), -1) \
                if len(model.classes_) > 2 else np.stack([-model.decision_function(f), model.decision_function(f)], 1)
        return out

    return scores, model


def train_classifier(images: Sequence[np.ndarray] | np.ndarray, labels: Sequence[Any], config: ClsConfig | None = None,
                     seed: int = 0, progress: Callable[[int], None] | None = None,
                     classes: Sequence[Any] | None = None) -> TypeClassifier:
    """Train a type classifier on uint8 RGB images (any size; resized to ``config.side``) and their labels (names
    or ints). ``classes`` fixes the label order (default: sorted unique labels)."""
    config = config or ClsConfig()
    if config.mode not in ("linear", "finetune"):
        raise ValueError(f"classifier mode must be linear or finetune, got {config.mode!r}")
    classes = list(classes) if classes is not None else sorted(set(labels), key=str)
    index = {c: i for i, c in enumerate(classes)}
    unknown = [lab for lab in labels if lab not in index]
    if unknown:
        raise ValueError(f"labels {sorted(set(map(str, unknown)))} are not among the classes {classes}")
    if len(images) != len(labels) or not len(images):
        raise ValueError(f"need one label per image and at least one image, got {len(images)} images, {len(labels)} labels")
    targets = np.array([index[lab] for lab in labels], np.int64)
    x = resize_batch(images, config.side)
    if config.mode == "linear":
        model = pretrained_lite0().eval()
        feats = embed_with_mirrors(x, config.side, model)
        scores, fitted = fit_linear_features(feats, np.concatenate([targets, targets]), len(classes), config)
        return TypeClassifier(classes, config, lambda ims: scores(embed(ims, config.side, model)), fitted)
    predict_scores = finetune_lite0(x, targets, len(classes), config, seed, progress)
    return TypeClassifier(classes, config, predict_scores)


def predict(classifier: TypeClassifier, images: Sequence[np.ndarray] | np.ndarray) -> list[Any]:
    """The predicted label (one of ``classifier.classes``) of each image."""
    return [classifier.classes[int(i)] for i in classifier.predict_indices(images)]


# ------------------------------------------------------------------------------------------ fine-tuning
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
    """The training loop both fine-tuned classifiers share: AdamW, cosine schedule, seeded batches."""
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
                   progress: Callable[[int], None] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """Fine-tune the last stages and a new linear head; return images -> (N, n_classes) scores.

    Why freeze the early stages: with tens of synthetic images per method, training all 3.4 M weights overfits and
    costs minutes per method on a CPU. BatchNorm keeps its ImageNet statistics (the batches are small).
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

    def scores(test_images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return _head(model, _frozen_features(model, test_images, upto), upto).numpy()

    return scores


def finetune_resnet34(images: np.ndarray, labels: np.ndarray, n_classes: int, config: ClsConfig, seed: int,
                      weights_dir: Path | None, progress: Callable[[int], None] | None = None):
    """The paper's classifier: ImageNet ResNet34 (from ``weights/``) with layer4 and a new ``fc`` fine-tuned, the
    stem to layer3 frozen (their outputs computed once); returns images -> predicted indices."""
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

    def predict_indices(test_images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.head(trunk(test_images)).argmax(1).numpy()

    return predict_indices


# ------------------------------------------------------------------------------------------ the measures
def collapse_reason(pred: np.ndarray, n_types: int, types: Sequence[str] | None = None) -> str | None:
    """Why these predictions are not a result, or None: a single defect type ("n/a (1 type)"), or one class
    taking >= COLLAPSE_SHARE of the predictions ("collapsed: ...")."""
    if n_types < 2:
        return "n/a (1 type)"
    if len(pred) == 0:
        return "n/a (no test image)"
    values, counts = np.unique(pred, return_counts=True)
    share = counts.max() / len(pred)
    if share >= COLLAPSE_SHARE:
        top = int(values[counts.argmax()])
        name = types[top] if types is not None and top < len(types) else str(top)
        return f"collapsed ({name} for {100 * share:.0f} % of images)"
    return None


def type_scores(pred: np.ndarray, truth: np.ndarray, types: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy (scikit-learn), chance levels, per-type recall, confusion (rows = truth) and
    the collapse flag for predictions of the real anomalous test images."""
    from sklearn.metrics import balanced_accuracy_score

    n = len(types)
    pred, truth = np.asarray(pred, int), np.asarray(truth, int)
    present = np.unique(truth)
    counts = np.bincount(truth, minlength=n)
    return {"accuracy": float((pred == truth).mean()) if len(truth) else None,
            "balanced_accuracy": float(balanced_accuracy_score(truth, pred)) if len(present) > 1 else None,
            "chance_balanced": 1.0 / len(present) if len(present) else None,
            "chance_majority": float(counts.max() / len(truth)) if len(truth) else None,
            "collapsed": collapse_reason(pred, len(present), types),
            "per_type": {types[i]: float((pred[truth == i] == i).mean()) for i in present},
            "confusion": _confusion(truth, pred, n)}


def _confusion(truth: np.ndarray, pred: np.ndarray, n: int) -> list[list[int]]:
    """Rows = true type, columns = predicted type (all n types, even absent ones)."""
    import warnings

    from sklearn.metrics import confusion_matrix

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # sklearn warns when a single label is present; the matrix is right
        return confusion_matrix(truth, pred, labels=list(range(n))).tolist()


# ------------------------------------------------------------------------------------------ saving (linear mode)
def save_classifier(classifier: TypeClassifier, path: Path) -> None:
    """Write a linear-mode classifier (classes, config, scaler and logistic-regression weights) atomically as .npz
    (plain arrays, no pickle); :func:`load_classifier` reads it back."""
    import io
    import json

    from ..images import atomic_write_bytes

    if classifier.config.mode != "linear":
        raise ValueError("only linear-mode classifiers can be saved")
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps({"classes": list(classifier.classes),
                                                                  "config": classifier.config.to_dict()}))}
    if classifier.linear is not None:
        scaler, lr = classifier.linear[0], classifier.linear[-1]
        arrays.update(mean=scaler.mean_, scale=scaler.scale_, var=scaler.var_, coef=lr.coef_,
                      intercept=lr.intercept_, lr_classes=lr.classes_)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_classifier(path: Path, model: Any = None) -> TypeClassifier:
    """A classifier saved by :func:`save_classifier`; ``model``: the frozen Lite0 to embed with (default: a new one)."""
    import json

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with np.load(Path(path), allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {k: z[k] for k in z.files if k != "meta"}
    classes, config = meta["classes"], ClsConfig(**meta["config"])
    model = model if model is not None else pretrained_lite0().eval()
    n = len(classes)
    if not arrays:                                  # trained on one class: it is the only answer
        return TypeClassifier(classes, config, lambda ims: np.zeros((len(ims), n)))
    scaler, lr = StandardScaler(), LogisticRegression(class_weight="balanced")
    scaler.mean_, scaler.scale_, scaler.var_ = arrays["mean"], arrays["scale"], arrays["var"]
    scaler.n_features_in_ = lr.n_features_in_ = len(arrays["mean"])
    scaler.n_samples_seen_ = 1
    lr.coef_, lr.intercept_, lr.classes_ = arrays["coef"], arrays["intercept"], arrays["lr_classes"]
    pipeline = make_pipeline(scaler, lr)

    def scores(ims: np.ndarray) -> np.ndarray:
        out = np.full((len(ims), n), -np.inf)
        out[:, lr.classes_.astype(int)] = pipeline.predict_proba(embed(ims, config.side, model))
        return out

    return TypeClassifier(classes, config, scores, pipeline)


def class_probabilities(classifier: TypeClassifier, images: Sequence[np.ndarray] | np.ndarray,
                        model: Any = None) -> np.ndarray:
    """(N, len(classes)) probabilities of a linear-mode classifier (the logistic regression's own); a classifier
    trained on one class gives 1 for it."""
    x = resize_batch(images, classifier.config.side)
    if classifier.linear is None:
        return np.ones((len(x), len(classifier.classes))) / len(classifier.classes) \
            if len(classifier.classes) != 1 else np.ones((len(x), 1))
    lr = classifier.linear[-1]
    out = np.zeros((len(x), len(classifier.classes)))
    out[:, lr.classes_.astype(int)] = classifier.linear.predict_proba(embed(x, classifier.config.side, model))
    return out
