"""The defect atlas: measures of REAL defects (one row per connected real defect mask), so the judge and the painter
learn what "realistic" means from data instead of hand-set thresholds (DESIGN.md, "Realism comes from real defects").

A row holds where the defect came from (category, type, kind, image) and its measures (``MEASURES``). The atlas is
plain data (a small JSON file); consumers ask for the values of one measure for one kind, a whole real row to copy
the look of, or how typical a value is (its percentile). ``for_category(category)`` is what the judge, the painter
and the prompt writer of a category read: an atlas built from benchmark test sets (``leave_out``, the shipped one)
drops the category's own rows (``without``: leave-one-category-out, so the judge and painter of C never see the real
defects C is tested on); a plant's own atlas keeps them, since its few real defects are what it was built for.

``counterfeits`` are the deliberately bad edits ``trajectories.make_failure`` builds from each real defect (faint,
moved off the object, scaled up, wrong shape), measured as the judge measures an attempt, with their ``mode``: what
the learned judge (``calibrated_judge``, ``decide: learned``) contrasts real rows with. ``without`` drops them too.
The file stores them column-wise (one list of values per counterfeit) to stay small.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Measure name -> what it is. Fractions are of the object's area (textures: the whole image) unless said otherwise.
# One row = one anomaly image's whole mask (all its parts), measured by tools/atlas_measure.py exactly as the
# calibrated judge measures an attempt; "the object" = tools.imaging.foreground_mask of the normal image.
MEASURES: dict[str, str] = {
    # where
    "dist_to_boundary": "distance from the defect's centroid to the object's boundary (the image border counts as "
                        "boundary), / sqrt(object area); negative when the centroid is off the object",
    "touches_object_edge": "1 if the defect mask reaches the object's boundary (textures: 0)",
    "touches_image_border": "1 if the defect mask reaches the image border",
    "pos_x": "centroid x within the object's bounding box, 0 (left) .. 1 (right)",
    "pos_y": "centroid y within the object's bounding box, 0 (top) .. 1 (bottom)",
    "n_parts": "connected parts of the defect mask (parts under 12 px, the mask tool's specks, not counted; at least 1)",
    "on_object": "share of the defect's area on the object (textures: 1)",
    # how big, what shape
    "area_frac_object": "defect area / object area",
    "area_frac_image": "defect area / image area",
    "bbox_w_frac": "bounding-box width / image width",
    "bbox_h_frac": "bounding-box height / image height",
    "elongation": "tools.imaging.elongation: major / minor axis of the mask's second moments, or perimeter-based "
                  "thinness for curved lines, whichever is larger (1 = round)",
    "roughness": "perimeter^2 / (4 pi area) of the mask (1 = disc)",
    # how it looks, against the reconstructed normal image
    "delta_e": "median CIELAB Delta E inside the mask, defect vs reconstructed normal",
    "visibility": "delta_e / (std of the normal's L* in a ring 2-7 px outside the defect + 1): contrast against the "
                  "surface's own texture (ΔE 8 shows on a smooth part, hides on a high-contrast grid)",
    "lightness_change": "mean L* inside, defect minus normal (negative = darker)",
    "saturation_change": "mean HSV saturation inside, defect minus normal (0-1 scale)",
    "texture_change": "(std of L* inside the defect + 1) / (std of L* in a ring 2-7 px outside it + 1)",
    "edge_sharpness": "(mean Sobel gradient of L* on the mask border + 1) / (the same in the normal + 1): the edge the "
                      "defect made, 1 where it follows the scene's own",
    # feature space
    "feature_distance": "largest distance of a defect patch (EfficientNet-Lite0, 32x32 patches at 256 px) to its nearest "
                        "patch of the normal image, / the normal patches' own nearest-neighbour spread",
}
MIN_ROWS = 5  # a kind with fewer real rows borrows from every kind (a prior from 3 defects is not a distribution)


class AtlasError(ValueError):
    """An atlas file that cannot be read (names the file)."""


@dataclass
class Atlas:
    rows: list[dict[str, Any]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)   # the folders it was built from
    meta: dict[str, Any] = field(default_factory=dict)  # how it was built (inputs fingerprint, code version)
    counterfeits: list[dict[str, Any]] = field(default_factory=list)   # bad edits of the real rows, with "mode"
    _without: dict[str, "Atlas"] = field(default_factory=dict, init=False, repr=False, compare=False)
    _kinds: dict[str, list[dict[str, Any]] | None] = field(default_factory=dict, init=False, repr=False,
                                                            compare=False)

    # ---------------------------------------------------------------- files
    @classmethod
    def load(cls, path: str | Path | None = None) -> "Atlas":
        """Read an atlas JSON file; ``None`` reads the one shipped with the package (built from ../shared/data)."""
        path = Path(path) if path is not None else default_path()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            fakes = data.get("counterfeits") or {"columns": [], "rows": []}
            return cls(rows=list(data["rows"]), sources=list(data.get("sources", [])), meta=dict(data.get("meta", {})),
                       counterfeits=[dict(zip(fakes["columns"], r)) for r in fakes["rows"]])
        except FileNotFoundError:
            raise AtlasError(f"{path}: no atlas there; build one with `local-agent atlas build DIR... --out {path}`")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise AtlasError(f"{path}: not a defect atlas ({type(e).__name__}: {e})")

    def save(self, path: str | Path) -> None:
        from local_agent.images import atomic_write_bytes

        columns = sorted({k for r in self.counterfeits for k in r})
        blob = {"measures": MEASURES, "sources": self.sources, "meta": self.meta, "rows": self.rows,
                "counterfeits": {"columns": columns, "rows": [[r.get(k) for k in columns] for r in self.counterfeits]}}
        atomic_write_bytes(Path(path), (json.dumps(blob, indent=0, sort_keys=True) + "\n").encode())

    # ---------------------------------------------------------------- selection
    @property
    def categories(self) -> list[str]:
        return sorted({r["category"] for r in self.rows})

    @property
    def leave_out(self) -> bool:
        """Whether consumers leave the synthesized category's rows out (``atlas build --leave-category-out``)."""
        return bool(self.meta.get("leave_out", False))

    def for_category(self, category: str | None) -> "Atlas":
        """The rows the tools of ``category`` may read: without the category when the atlas says ``leave_out``
        (built from test sets: zero-shot by construction), else all of them, the category's own included."""
        return self.without(category) if self.leave_out else self

    def own_rows(self, category: str | None, type_name: str | None) -> list[dict[str, Any]]:
        """The category's own real defects of a type (a plant's atlas): those under the type's name, else those of
        its kind. Empty for an atlas that leaves the category out, or when it holds none."""
        if not category or not type_name or self.leave_out:
            return []
        from .atlas_measure import atlas_kind

        cat = _norm(category)
        mine = [r for r in self.rows if _norm(r["category"]) == cat]
        own = [r for r in mine if _norm(r.get("type") or "") == _norm(type_name)]
        kind = atlas_kind(type_name)
        return own or ([r for r in mine if kind and _norm(r.get("kind") or "") == kind] if kind else [])

    def without(self, category: str | None) -> "Atlas":
        """The atlas minus one category's rows (leave-one-category-out); unchanged when it holds none of them.
        Remembered per category: the painter, the prompt writer and the judge ask for it at every attempt, and an
        atlas is not changed once built."""
        if not category:
            return self
        key = _norm(category)
        if key not in self._without:
            self._without[key] = Atlas([r for r in self.rows if _norm(r["category"]) != key], self.sources,
                                       self.meta, [r for r in self.counterfeits if _norm(r["category"]) != key])
        return self._without[key]

    def kind_rows(self, kind: str | None) -> list[dict[str, Any]] | None:
        """Rows of a kind (or of a real type name kept under its own name), None when it has too few. Remembered
        per kind, as ``without`` is: the painter and the judge ask at every attempt."""
        if not kind:
            return None
        key = _norm(kind)
        if key not in self._kinds:
            own = [r for r in self.rows if _norm(r.get("kind") or "") == key or _norm(r.get("type") or "") == key]
            self._kinds[key] = own if len(own) >= MIN_ROWS else None
        return self._kinds[key]

    def rows_for(self, kind: str | None) -> list[dict[str, Any]]:
        """Rows of a kind (or of a real type name kept under its own name); every row when the kind has too few."""
        own = self.kind_rows(kind)
        return self.rows if own is None else own

    def values(self, kind: str | None, measure: str) -> np.ndarray:
        if measure not in MEASURES:
            raise KeyError(f"unknown atlas measure {measure!r}; known: {', '.join(MEASURES)}")
        return np.array([r[measure] for r in self.rows_for(kind) if r.get(measure) is not None], dtype=float)

    def sample(self, kind: str | None, rng: np.random.Generator) -> dict[str, Any]:
        """One real defect of the kind, drawn at random: copying a whole row keeps its measures consistent
        (a large defect that is also faint stays both)."""
        rows = self.rows_for(kind)
        if not rows:
            raise AtlasError("the atlas is empty")
        return dict(rows[int(rng.integers(len(rows)))])

    def percentile(self, kind: str | None, measure: str, value: float) -> float:
        """Share (0-1) of real defects of the kind whose measure is below ``value`` (ties count half)."""
        return float(self.percentiles(kind, measure, [value])[0])

    def percentiles(self, kind: str | None, measure: str, values: Any) -> np.ndarray:
        """``percentile`` of each of ``values`` at once (0.5 each when the kind has no value of the measure)."""
        v = self.values(kind, measure)
        x = np.asarray(values, dtype=float)
        if v.size == 0:
            return np.full(x.shape, 0.5)
        return ((v < x[..., None]).sum(-1) + 0.5 * (v == x[..., None]).sum(-1)) / v.size


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def default_path() -> Path:
    """The shipped atlas; LOCAL_AGENT_ATLAS overrides it (a plant's own atlas)."""
    env = os.environ.get("LOCAL_AGENT_ATLAS")
    return Path(env) if env else Path(__file__).with_name("data") / "atlas.json"
