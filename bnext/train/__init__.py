"""Training (paper section 5.1, Algorithm 1): config, engine, optimizer groups, schedules, runs.

* :func:`load_config` / :class:`Config` - YAML + dotted ``key=value`` overrides.
* :func:`run` - a whole run writing ``runs/<name>/`` (also ``python -m bnext.train``).
* :mod:`bnext.train.engine` - ``train_one_epoch`` and ``evaluate``.
* :mod:`bnext.train.optim` - AdamW weight-decay groups; :mod:`bnext.train.schedule` - ``tau_at``, LR.
"""

from .config import Config, ConfigError, load_config
from .engine import evaluate, train_one_epoch
from .optim import build_optimizer, param_groups
from .runner import run
from .schedule import build_lr_scheduler, tau_at

__all__ = [
    "Config",
    "ConfigError",
    "build_lr_scheduler",
    "build_optimizer",
    "evaluate",
    "load_config",
    "param_groups",
    "run",
    "tau_at",
    "train_one_epoch",
]
