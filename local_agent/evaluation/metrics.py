"""Detection and localisation metrics, named as anomalib names them (image_AUROC, pixel_AUPRO, ...).

AUROC, AP and the precision-recall curve come from scikit-learn; only what no library offers on plain arrays is
written here: F1-max (the best F1 over all thresholds of the PR curve) and AUPRO (per-region overlap integrated up
to a 30 % false-positive rate, normalised to [0, 1], as in MVTec AD's evaluation code and anomalib).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """Best F1 over every threshold (anomalib's F1Max)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(f1.max())


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3, bins: int = 2000) -> float:
    """Area under the per-region-overlap curve up to ``fpr_limit``, divided by ``fpr_limit``.

    PRO(t): mean over every connected ground-truth region (8-connectivity, per image) of the fraction of its pixels
    scoring >= t. FPR(t): fraction of normal pixels scoring >= t. Thresholds: ``bins`` quantiles of all scores plus
    +inf (the curve starts at (0, 0)); the curve is cut at ``fpr_limit`` by linear interpolation.
    """
    masks = masks.astype(bool)
    if not masks.any() or masks.all():
        raise ValueError("AUPRO needs both defect and normal pixels")
    flat = maps.reshape(-1).astype(np.float64)
    thresholds = np.unique(np.quantile(flat, np.linspace(0, 1, bins)))
    edges = np.concatenate([thresholds, [np.inf]])  # bin i holds scores in [thr_i, thr_{i+1})

    def above(values: np.ndarray) -> np.ndarray:
        """Fraction of ``values`` >= each threshold."""
        counts, _ = np.histogram(values, bins=edges)
        counts[-1] += np.count_nonzero(values == np.inf)
        return counts[::-1].cumsum()[::-1] / max(len(values), 1)

    fpr = above(maps[~masks].astype(np.float64))
    pro = np.zeros_like(fpr)
    n_regions = 0
    for mask, amap in zip(masks, maps):
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
        for r in range(1, n + 1):
            pro += above(amap[labels == r].astype(np.float64))
            n_regions += 1
    pro /= n_regions
    # Thresholds ascend, so FPR descends: reverse to integrate from FPR 0 up; prepend the t = +inf point (0, 0).
    fpr, pro = np.concatenate([[0.0], fpr[::-1]]), np.concatenate([[0.0], pro[::-1]])
    keep = fpr <= fpr_limit
    x, y = fpr[keep], pro[keep]
    if x[-1] < fpr_limit and keep.sum() < len(fpr):
        i = int(np.argmax(~keep))  # first point past the limit
        t = (fpr_limit - fpr[i - 1]) / max(fpr[i] - fpr[i - 1], 1e-12)
        x = np.append(x, fpr_limit)
        y = np.append(y, pro[i - 1] + t * (pro[i] - pro[i - 1]))
    return float(np.trapezoid(y, x) / fpr_limit)


def detection_metrics(image_labels: np.ndarray, image_scores: np.ndarray, pixel_masks: np.ndarray,
                      pixel_maps: np.ndarray, with_aupro: bool = True) -> dict[str, float]:
    """All image- and pixel-level numbers for one test set. Labels: 1 = anomalous."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(image_labels).astype(int)
    scores = np.asarray(image_scores, dtype=np.float64)
    pm = np.asarray(pixel_masks).astype(bool)
    pixel_labels = pm.reshape(-1)
    pixel_scores = np.asarray(pixel_maps, dtype=np.float32).reshape(-1)
    out = {
        "image_AUROC": float(roc_auc_score(labels, scores)),
        "image_AP": float(average_precision_score(labels, scores)),
        "image_F1Max": f1_max(labels, scores),
        "pixel_AUROC": float(roc_auc_score(pixel_labels, pixel_scores)),
        "pixel_AP": float(average_precision_score(pixel_labels, pixel_scores)),
        "pixel_F1Max": f1_max(pixel_labels, pixel_scores),
    }
    if with_aupro:
        out["pixel_AUPRO"] = aupro(pm, np.asarray(pixel_maps))
    return out


def per_type_metrics(test_types: list[str], image_scores: np.ndarray, pixel_masks: np.ndarray,
                     pixel_maps: np.ndarray) -> dict[str, dict[str, float | None]]:
    """Per defect type: its anomalous test images against every good one (``n``: how many of the type), image
    AUROC and pixel AP on that subset. A mean over types hides which kinds of real defect the synthetic samples
    teach: a method can gain on the types that resemble what it paints and lose on the others. None where the
    subset has no good image or no defect pixel."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    kinds = np.asarray(test_types)
    good = kinds == "good"
    scores = np.asarray(image_scores, dtype=np.float64)
    masks, maps = np.asarray(pixel_masks).astype(bool), np.asarray(pixel_maps)
    out: dict[str, dict[str, float | None]] = {}
    for t in sorted(set(test_types) - {"good"}):
        keep = good | (kinds == t)
        labels = (kinds[keep] == t).astype(int)
        pm = masks[keep].reshape(-1)
        out[t] = {"n": int(labels.sum()),
                  "image_AUROC": float(roc_auc_score(labels, scores[keep])) if good.any() else None,
                  "pixel_AP": float(average_precision_score(pm, maps[keep].reshape(-1))) if pm.any() else None}
    return out


def smooth_maps(maps: np.ndarray, sigma: float = 4.0) -> np.ndarray:
    """Gaussian smoothing per map (the usual post-processing before taking an image score)."""
    return np.stack([ndimage.gaussian_filter(m.astype(np.float32), sigma=sigma) for m in maps])


def image_scores(maps: np.ndarray) -> np.ndarray:
    """Image score = max of the (smoothed) anomaly map."""
    return maps.reshape(len(maps), -1).max(axis=1)
