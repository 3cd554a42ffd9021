"""Training configuration: one YAML file with every knob, dotted ``key=value`` overrides.

The schema is the tree of dataclasses below (defaults = the paper's recipe, section 5.1 and
the reference facts).  :func:`load_config` reads a YAML file, applies overrides such as
``train.epochs=3`` or ``model.options.info_rcp=false`` (values are parsed as YAML, then
coerced to the field's type), rejects unknown keys with the list of valid ones and checks
that no required value (the string ``"???"``) is left unset.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

#: a value that the user must set (e.g. teacher weight paths, dataset roots)
MISSING = "???"

CHOICES: dict[str, tuple[str, ...]] = {
    "lr_schedule.interval": ("epoch", "step"),
    "lr_schedule.cosine_length": ("remaining", "total"),
    "binarize.schedule": ("progressive", "sign", "exponential"),
    "data.eval_interpolation": ("bilinear", "bicubic"),
    "binarize.interval": ("epoch", "step"),
    "kd.ensemble": ("gap_sensitive", "mean"),
    "kd.order": ("kc", "given"),
}


class ConfigError(ValueError):
    """A configuration file or override is invalid (unknown key, bad value, required key unset)."""


@dataclass
class ModelConfig:
    """``bnext.models.create(name, width=width, **options)``."""

    name: str = "bnext18"
    width: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Dataset and augmentation (``bnext.data``); ``batch_size`` is the global batch (all processes)."""

    name: str = "digits"
    root: str | None = None
    input_size: int | None = None  # null: the dataset's default
    augment: str = "standard"  # none|standard|randaugment|mixup|cutmix|repeated and '+' combinations
    batch_size: int = 128
    eval_batch_size: int | None = None  # null: 2 * batch_size
    num_workers: int = 0
    in_memory: bool | None = None  # null: auto (digits/synthetic with none/standard/mixup/cutmix)
    split_seed: int = 0  # digits train/test split, synthetic data
    eval_crop: float = 0.875  # from 64 px, evaluation resizes to input_size / eval_crop, then center-crops
    eval_interpolation: str = "bilinear"  # bilinear|bicubic (the authors' evaluation: 0.95, bicubic)
    verify_md5: bool = False  # CIFAR: check every file against the official md5 sums


@dataclass
class TrainConfig:
    epochs: int = 256
    clip_grad: float | None = 5.0  # global gradient norm; null disables
    latent_clip: float | None = 1.5  # clamp latent binary weights to [-c, c] after each step
    label_smoothing: float = 0.0
    micro_batches: int = 1  # split each (per-process) batch into chunks, gradients accumulated
    steps_per_epoch: int | None = None  # cap optimizer steps per epoch (smoke tests)
    eval_every: int = 1
    stop_after: int | None = None  # end this invocation once this many epochs are done (resume later)
    save_every: int = 0  # also keep checkpoints/epoch_XXX.pt every k epochs (0: off)


@dataclass
class OptimConfig:
    """AdamW (paper section 5.1); weight-decay groups by :func:`bnext.train.optim.param_groups`."""

    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.99, 0.999])
    eps: float = 1e-8
    weight_decay: float = 1e-3  # BN, PReLU, biases, classifier
    binary_weight_decay: float = 1e-8  # 4-D tensors: latent binary weights, conv kernels, shifts, mix weights


@dataclass
class LRScheduleConfig:
    """Linear warm-up from ``warmup_lr`` then cosine to ``min_lr`` (torch SequentialLR)."""

    warmup_epochs: float = 5
    warmup_lr: float = 1e-5
    min_lr: float = 1e-7
    interval: str = "epoch"  # epoch|step
    cosine_length: str = "remaining"  # remaining: epochs - warm-up, ends at min_lr | total: all epochs (authors)


@dataclass
class BinarizeConfig:
    """Progressive weight binarization, see :func:`bnext.train.schedule.tau_at`."""

    schedule: str = "progressive"  # progressive|sign|exponential (the authors': tau_start * decay ** epoch)
    tau_start: float = 1.0
    tau_end: float = 1e-5  # last temperature before pure sign
    end_fraction: float = 0.3  # training progress from which the weights are exactly sign(w)
    decay: float = 0.9  # exponential: factor per epoch
    interval: str = "epoch"  # epoch|step


@dataclass
class TeacherConfig:
    """A KD teacher: a torchvision builder name + local state dict, or (``arch: null``) a workbench checkpoint."""

    arch: str | None = None
    weights: str = MISSING
    accuracy: float | None = None  # test accuracy as a fraction, for KC ordering (Eq. 3)
    num_classes: int | None = None  # null: the dataset's class count


@dataclass
class KDConfig:
    """Diversified consecutive KD (paper section 4.2, Algorithm 1, Eq. 4)."""

    enabled: bool = False
    strong: TeacherConfig | None = None
    assistants: list[TeacherConfig] = field(default_factory=list)
    temperature: float = 1.0
    hard_weight: float = 0.0  # weight of the hard-label cross-entropy added to the KD loss
    ensemble: str = "gap_sensitive"  # gap_sensitive (Eq. 4) | mean
    order: str = "kc"  # assistants in increasing Knowledge Complexity (Eq. 3) | given
    amp: bool = True  # teachers under torch.autocast on CUDA (Algorithm 1's Q)


@dataclass
class TrajectoryConfig:
    every: int = 0  # save the weights every k epochs into runs/<name>/trajectory.h5 (0: off)


@dataclass
class QuantConfig:
    """Post-training quantization (``bnext.quant``, paper section 7.5).

    With ``spec`` set, the run quantizes the model after ``init_checkpoint``, calibrates the
    activation ranges on ``calibrate_batches`` training batches, freezes the binary layers, keeps
    the loaded binarization temperature and fine-tunes for ``finetune_epochs`` with AdamW
    (betas 0.99/0.999, ``lr``, no weight decay, constant learning rate).
    """

    spec: Any = None
    finetune_epochs: int = 0
    lr: float = 1e-7
    calibrate_batches: int = 8


@dataclass
class DistributedConfig:
    backend: str | None = None  # null: nccl on CUDA, gloo on CPU
    sync_bn: bool = False  # SyncBatchNorm (CUDA only)


@dataclass
class Config:
    """A whole training run.  ``output_dir`` defaults to ``runs/<name>``."""

    name: str | None = None
    output_dir: str | None = None
    seed: int = 0
    device: str = "auto"  # auto|cpu|cuda|cuda:N
    threads: int | None = None  # torch.set_num_threads for the run (restored after)
    deterministic: bool = False
    channels_last: bool = False
    progress: bool = True
    resume: bool = False
    init_checkpoint: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lr_schedule: LRScheduleConfig = field(default_factory=LRScheduleConfig)
    binarize: BinarizeConfig = field(default_factory=BinarizeConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON serializable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Build and validate a config from a (partial) nested dict; defaults fill the rest."""
        cfg = _build(cls, data, "")
        validate(cfg)
        return cfg

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / str(self.name)

    def save(self, path: str | Path) -> Path:
        """Write the resolved config as YAML."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


# -- building and coercion ------------------------------------------------------------
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def valid_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema (sections expanded), e.g. ``train.epochs``."""
    keys = []
    for name, tp in _hints(cls).items():
        key = f"{prefix}{name}"
        if typing.get_origin(tp) in (Union, types.UnionType):  # Optional[section]
            inner = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = inner[0] if len(inner) == 1 else tp
        if dataclasses.is_dataclass(tp):
            keys += valid_keys(tp, key + ".")
        else:
            keys.append(key)
    return keys


def _build(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section {path or '<root>'!r} must be a mapping, got {data!r}")
    hints = _hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        where = f"in section {path.rstrip('.')!r}" if path else "at the top level"
        raise ConfigError(
            f"unknown config key(s) {[path + str(k) for k in unknown]} {where}; valid keys: {', '.join(hints)}"
        )
    kwargs = {name: _coerce(data[name], hints[name], f"{path}{name}") for name in hints if name in data}
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            return None
        return _coerce(value, args[0], path)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path + ".")
    if value == MISSING:
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key {path!r} expects a list, got {value!r}")
        return [_coerce(v, item, f"{path}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {path!r} expects a mapping, got {value!r}")
        return dict(value)
    try:
        if tp is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("true", "yes", "on", "1"):
                    return True
                if low in ("false", "no", "off", "0"):
                    return False
                raise ValueError
            if isinstance(value, int | float) and value in (0, 1):
                return bool(value)
            if not isinstance(value, bool):
                raise ValueError
            return value
        if tp is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value) if not isinstance(value, str) else int(float(value))
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            if isinstance(value, dict | list):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {path!r} expects {getattr(tp, '__name__', tp)}, got {value!r}") from None
    return value


# -- overrides ---------------------------------------------------------------------------
def parse_override(text: str) -> tuple[list[str], Any]:
    """``'a.b.c=value'`` -> (``['a', 'b', 'c']``, YAML-parsed value)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. train.epochs=3)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_override(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set a dotted key in a nested dict (creating sections; integer keys index lists)."""
    node: Any = data
    for i, k in enumerate(keys[:-1]):
        if isinstance(node, list):
            node = node[_index(node, k, keys[: i + 1])]
            continue
        nxt = node.get(k)
        if nxt is None or nxt == MISSING:
            nxt = node[k] = {}
        elif not isinstance(nxt, dict | list):
            raise ConfigError(f"cannot set {'.'.join(keys)}: {'.'.join(keys[: i + 1])} is a value, not a section")
        node = nxt
    last = keys[-1]
    if isinstance(node, list):
        node[_index(node, last, keys)] = value
    else:
        node[last] = value


def _index(node: list, k: str, keys: list[str]) -> int:
    try:
        i = int(k)
        node[i]
    except (ValueError, IndexError):
        raise ConfigError(f"{'.'.join(keys)}: {k!r} is not an index of a list of length {len(node)}") from None
    return i


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), *,
                allow_missing: bool = False) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply ``key=value`` overrides.

    ``name`` defaults to the file stem and ``output_dir`` to ``runs/<name>``.  Raises
    :class:`ConfigError` on unknown keys, bad values and (unless ``allow_missing``) required
    keys still set to ``"???"``.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        raw = loaded or {}
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(raw, keys, value)
    if not raw.get("name"):
        raw["name"] = path.stem if path is not None else "run"
    cfg = _build(Config, raw, "")
    validate(cfg, allow_missing=allow_missing)
    return cfg


def missing_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose value is still ``"???"``."""
    out = []
    if dataclasses.is_dataclass(cfg):
        items = [(f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)]
    elif isinstance(cfg, dict):
        items = list(cfg.items())
    elif isinstance(cfg, list):
        items = list(enumerate(cfg))
    else:
        return out
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, str) and v == MISSING:
            out.append(key)
        else:
            out += missing_keys(v, key + ".")
    return out


def validate(cfg: Config, *, allow_missing: bool = False) -> None:
    """Check choices and ranges; raise :class:`ConfigError` naming the key and what is expected."""
    if not allow_missing:
        missing = missing_keys(cfg)
        if missing:
            hints = {"weights": "a local file path", "root": "the dataset folder"}
            detail = ", ".join(f"{k} ({hints.get(k.rsplit('.', 1)[-1], 'a value')})" for k in missing)
            raise ConfigError(f"required config key(s) not set: {detail}; set them in the YAML file or on the "
                              f"command line as key=value, e.g. {missing[0]}=/path")
    for key, choices in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in choices:
            raise ConfigError(f"config key {key!r} must be one of {list(choices)}, got {value!r}")
    checks = [
        ("train.epochs", cfg.train.epochs >= 1, ">= 1 (a run of 0 epochs trains and writes nothing)"),
        ("data.batch_size", cfg.data.batch_size >= 1, ">= 1"),
        ("train.micro_batches", cfg.train.micro_batches >= 1, ">= 1"),
        ("train.eval_every", cfg.train.eval_every >= 1, ">= 1"),
        ("train.save_every", cfg.train.save_every >= 0, ">= 0"),
        ("binarize.end_fraction", 0.0 <= cfg.binarize.end_fraction <= 1.0, "in [0, 1]"),
        ("binarize.tau_start", cfg.binarize.tau_start > 0, "> 0"),
        ("binarize.tau_end", 0 < cfg.binarize.tau_end <= cfg.binarize.tau_start, "in (0, tau_start]"),
        ("binarize.decay", 0 < cfg.binarize.decay < 1, "in (0, 1)"),
        ("data.eval_crop", 0 < cfg.data.eval_crop <= 1, "in (0, 1]"),
        ("lr_schedule.warmup_epochs", cfg.lr_schedule.warmup_epochs >= 0, ">= 0"),
        ("optim.lr", cfg.optim.lr > 0, "> 0"),
        ("optim.betas", len(cfg.optim.betas) == 2, "a list of two floats"),
        ("kd.temperature", cfg.kd.temperature > 0, "> 0"),
        ("trajectory.every", cfg.trajectory.every >= 0, ">= 0"),
        ("quant.finetune_epochs", cfg.quant.finetune_epochs >= (0 if cfg.quant.spec is None else 1),
         ">= 1 when quant.spec is set (a run of 0 epochs writes no checkpoint)"),
    ]
    for key, ok, expected in checks:
        if not ok:
            raise ConfigError(f"config key {key!r} must be {expected}")
    from ..models import list_models

    if cfg.model.name not in list_models():
        raise ConfigError(f"config key 'model.name': unknown model {cfg.model.name!r}; "
                          f"registered: {', '.join(list_models())}")
    if cfg.kd.enabled and cfg.kd.strong is None:
        raise ConfigError("kd.enabled is true but kd.strong is not set (a teacher with 'arch' and 'weights')")
    teachers = ([("kd.strong", cfg.kd.strong)] if cfg.kd.strong else []) + [
        (f"kd.assistants.{i}", t) for i, t in enumerate(cfg.kd.assistants)
    ]
    if cfg.kd.enabled and teachers:
        from ..kd.teachers import WORKBENCH, classification_builders

        builders = classification_builders()
        for key, t in teachers:
            if t.arch is not None and t.arch not in WORKBENCH and t.arch not in builders:
                raise ConfigError(f"config key '{key}.arch': {t.arch!r} is not a torchvision classification "
                                  "builder (e.g. resnet34, efficientnet_b0, convnext_tiny); use null for a "
                                  "workbench checkpoint")
    from ..data import dataset_info, parse_augment

    try:
        dataset_info(cfg.data.name)
        parse_augment(cfg.data.augment)
    except ValueError as e:
        raise ConfigError(f"config section 'data': {e}") from None


__all__ = [
    "MISSING",
    "Config",
    "ConfigError",
    "apply_override",
    "load_config",
    "missing_keys",
    "parse_override",
    "valid_keys",
    "validate",
]
