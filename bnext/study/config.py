"""A study's settings (``configs/studies/*.yaml``): variants x training seeds x direction seeds x data subsets.

Schema (every key but ``name`` and ``variants`` has a default)::

    name: fig2_digits
    out: runs/studies/fig2_digits        # default runs/studies/<name>
    variants: [resnet18, binarynet18]    # keys of bnext.ablate.figures.FIG2_MODELS, or mappings
                                         # {key, model, label, options} for other variants
    train_seeds: [0, 1, 2]               # one trained model each
    direction_seeds: [0, 1, 2, 3, 4]     # one random plane each, per trained model
    data_seeds: [0]                      # seeded image subsets the surfaces are evaluated on
    train: {base: configs/digits_demo.yaml, width: 0.25, input_size: 16, epochs: 5, ...}
                                         # bnext.ablate.tasks.train_config arguments
    landscape: {grid: "-1:1:11", samples: 200, normalization: filter, bias_bn: ignore, device: cpu}
    curvature: {samples: 64, lanczos_iter: 20, lanczos_tol: 1.0e-3, trace_target: 0.05, trace_cap: 60,
                sharpness_epsilon: 1.0e-3, sharpness_steps: 5}   # sharpness_epsilon: null skips it
    stats: {bootstrap: 2000, confidence: 0.95, alpha: 0.05, permutations: 20000, seed: 0,
            test: permutation}            # or welch: Welch's t-test on the training-seed means
    reference: resnet18                  # the table's significance markers compare with this variant
    claims:                              # orderings the verdicts test
      - {smoother: bireal18, than: binarynet18, metric: roughness, text: "..."}
    slurm: {partition: gpu, ...}         # for --executor slurm (bnext.ablate.slurm)

The compute settings (:meth:`StudyConfig.fingerprint`) are part of every point's parameters, so a
changed recipe is never mixed with stored results (``--overwrite`` recomputes; trained models and
finished surfaces with unchanged settings are reused).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: metrics of one surface (one value per training seed x direction seed x data subset)
SURFACE_METRICS = ("roughness", "convexity_share", "basin_width_x", "basin_width_y", "basin_diameter",
                   "loss_centre")
#: metrics of one trained model (one value per training seed)
MODEL_METRICS = ("top1", "top_eig", "trace", "sharpness")
METRICS = (*SURFACE_METRICS, *MODEL_METRICS)
#: True where a lower value means a smoother / flatter landscape (the direction a "smoother" claim tests)
LOWER_IS_SMOOTHER = {"roughness": True, "convexity_share": False, "basin_width_x": False, "basin_width_y": False,
                     "basin_diameter": False, "loss_centre": True, "top1": False, "top_eig": True, "trace": True,
                     "sharpness": True}
METRIC_LABELS = {"roughness": "roughness", "convexity_share": "convexity share", "basin_width_x": "basin width x",
                 "basin_width_y": "basin width y", "basin_diameter": "basin diameter", "loss_centre": "loss at centre",
                 "top1": "test top-1 (%)", "top_eig": "top Hessian eigenvalue", "trace": "Hessian trace",
                 "sharpness": "eps-sharpness (Keskar)"}

DEFAULT_TRAIN: dict[str, Any] = {"base": "configs/digits_demo.yaml", "width": 0.25, "input_size": 16, "epochs": 5,
                                 "batch_size": 64, "data": "digits", "overrides": ["trajectory.every=0"]}
DEFAULT_LANDSCAPE: dict[str, Any] = {"grid": "-1:1:11", "samples": 200, "normalization": "filter",
                                     "bias_bn": "ignore", "device": "cpu", "forward": "torch"}
DEFAULT_CURVATURE: dict[str, Any] = {"samples": 64, "lanczos_iter": 20, "lanczos_tol": 1e-3, "trace_target": 0.05,
                                     "trace_cap": 60, "sharpness_epsilon": 1e-3, "sharpness_steps": 5}
DEFAULT_STATS: dict[str, Any] = {"bootstrap": 2000, "confidence": 0.95, "alpha": 0.05, "permutations": 20000,
                                 "seed": 0, "test": "permutation"}


class StudyConfigError(ValueError):
    """A study config that cannot be run (the message names the key and what was expected)."""


@dataclass(frozen=True)
class VariantSpec:
    key: str
    label: str
    model: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    """"``smoother`` has a smoother landscape than ``than`` by ``metric``" (paper text in ``text``)."""

    smoother: str
    than: str
    metric: str = "roughness"
    text: str = ""


@dataclass
class StudyConfig:
    name: str
    variants: list[VariantSpec]
    train_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    direction_seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    data_seeds: list[int] = field(default_factory=lambda: [0])
    train: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_TRAIN))
    landscape: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_LANDSCAPE))
    curvature: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_CURVATURE))
    stats: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_STATS))
    reference: str | None = None
    claims: list[Claim] = field(default_factory=list)
    out: str | None = None
    slurm: dict[str, Any] | None = None
    path: str | None = None  # the YAML file it was read from

    @property
    def out_dir(self) -> Path:
        return Path(self.out or Path("runs") / "studies" / self.name)

    def variant(self, key: str) -> VariantSpec:
        for v in self.variants:
            if v.key == key:
                return v
        raise StudyConfigError(f"unknown variant {key!r}; the study has {[v.key for v in self.variants]}")

    def compute_settings(self) -> dict[str, Any]:
        """What the stored results depend on (not the statistics, claims or output folder)."""
        return {"train": self.train, "landscape": self.landscape, "curvature": self.curvature,
                "direction_seeds": self.direction_seeds, "data_seeds": self.data_seeds,
                "variants": {v.key: {"model": v.model, "options": dict(v.options)} for v in self.variants}}

    def fingerprint(self) -> str:
        text = json.dumps(self.compute_settings(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _seeds(raw: Any, key: str) -> list[int]:
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = list(range(raw))  # "train_seeds: 3" means 0, 1, 2
    if not isinstance(raw, list) or not raw or not all(isinstance(s, int) and not isinstance(s, bool) for s in raw):
        raise StudyConfigError(f"{key} must be a non-empty list of integers (or a count), got {raw!r}")
    if len(set(raw)) != len(raw):
        raise StudyConfigError(f"{key} has repeated seeds: {raw}")
    return list(raw)


def _merge(defaults: Mapping[str, Any], raw: Any, key: str) -> dict[str, Any]:
    if raw is None:
        return dict(defaults)
    if not isinstance(raw, Mapping):
        raise StudyConfigError(f"{key} must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(defaults)) if key != "train" else []
    if unknown:
        raise StudyConfigError(f"unknown {key} key(s) {unknown}; expected some of {sorted(defaults)}")
    return {**defaults, **dict(raw)}


def _variants(raw: Any) -> list[VariantSpec]:
    from bnext.ablate.figures import FIG2_MODELS

    known = {v.key: v for v in FIG2_MODELS}
    if not isinstance(raw, list) or not raw:
        raise StudyConfigError(f"variants must be a non-empty list of keys {list(known)} or mappings, got {raw!r}")
    out = []
    for item in raw:
        if isinstance(item, str):
            if item not in known:
                raise StudyConfigError(f"unknown variant {item!r}; known keys {list(known)} (or give a mapping "
                                       "{key, model, label, options})")
            v = known[item]
            out.append(VariantSpec(v.key, v.label, v.model, dict(v.options)))
        elif isinstance(item, Mapping) and "key" in item and "model" in item:
            out.append(VariantSpec(str(item["key"]), str(item.get("label", item["key"])), str(item["model"]),
                                   dict(item.get("options") or {})))
        else:
            raise StudyConfigError(f"a variant must be a key or a mapping with 'key' and 'model', got {item!r}")
    keys = [v.key for v in out]
    if len(set(keys)) != len(keys):
        raise StudyConfigError(f"variant keys repeat: {keys}")
    return out


def from_dict(d: Mapping[str, Any], path: str | None = None) -> StudyConfig:
    """A validated :class:`StudyConfig` from a parsed YAML mapping."""
    allowed = {"name", "variants", "train_seeds", "direction_seeds", "data_seeds", "train", "landscape", "curvature",
               "stats", "reference", "claims", "out", "slurm"}
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise StudyConfigError(f"unknown key(s) {unknown}; expected some of {sorted(allowed)}")
    if not isinstance(d.get("name"), str) or not d["name"]:
        raise StudyConfigError("name must be a non-empty string")
    cfg = StudyConfig(
        name=d["name"], variants=_variants(d.get("variants")),
        train_seeds=_seeds(d.get("train_seeds", [0, 1, 2]), "train_seeds"),
        direction_seeds=_seeds(d.get("direction_seeds", [0, 1, 2, 3, 4]), "direction_seeds"),
        data_seeds=_seeds(d.get("data_seeds", [0]), "data_seeds"),
        train=_merge(DEFAULT_TRAIN, d.get("train"), "train"),
        landscape=_merge(DEFAULT_LANDSCAPE, d.get("landscape"), "landscape"),
        curvature=_merge(DEFAULT_CURVATURE, d.get("curvature"), "curvature"),
        stats=_merge(DEFAULT_STATS, d.get("stats"), "stats"),
        reference=d.get("reference"), out=d.get("out"), slurm=d.get("slurm"), path=path,
    )
    keys = {v.key for v in cfg.variants}
    if cfg.reference is not None and cfg.reference not in keys:
        raise StudyConfigError(f"reference {cfg.reference!r} is not one of the variants {sorted(keys)}")
    claims = d.get("claims") or []
    if not isinstance(claims, list):
        raise StudyConfigError("claims must be a list of {smoother, than, metric, text}")
    for c in claims:
        if not isinstance(c, Mapping) or "smoother" not in c or "than" not in c:
            raise StudyConfigError(f"a claim needs 'smoother' and 'than' variant keys, got {c!r}")
        claim = Claim(str(c["smoother"]), str(c["than"]), str(c.get("metric", "roughness")), str(c.get("text", "")))
        for k in (claim.smoother, claim.than):
            if k not in keys:
                raise StudyConfigError(f"claim {claim.smoother} vs {claim.than}: {k!r} is not a variant {sorted(keys)}")
        if claim.metric not in LOWER_IS_SMOOTHER:
            raise StudyConfigError(f"claim metric {claim.metric!r} unknown; choose from {list(LOWER_IS_SMOOTHER)}")
        cfg.claims.append(claim)
    c = cfg.curvature
    if c["trace_cap"] is not None and int(c["trace_cap"]) < 2:
        raise StudyConfigError(f"curvature.trace_cap must be >= 2 (or null to skip the trace), got {c['trace_cap']}")
    s = cfg.stats
    if not 0 < float(s["confidence"]) < 1 or not 0 < float(s["alpha"]) < 1:
        raise StudyConfigError("stats.confidence and stats.alpha must lie in (0, 1)")
    if s["test"] not in ("permutation", "welch"):
        raise StudyConfigError(f"stats.test must be 'permutation' or 'welch', got {s['test']!r}")
    return cfg


def load(path: str | os.PathLike[str]) -> StudyConfig:
    """Read and validate a study YAML file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise StudyConfigError(f"study config {str(p)!r} not found (expected a YAML file such as "
                               "configs/studies/fig2_digits.yaml)")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise StudyConfigError(f"{p}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(d, Mapping):
        raise StudyConfigError(f"{p}: expected a mapping at the top level")
    return from_dict(d, str(p))
