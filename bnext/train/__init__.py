"""Training (paper section 5.1, Algorithm 1): config, engine, optimizer groups, schedules, runs.

* :func:`load_config` / :class:`Config` - YAML + dotted ``key=value`` overrides.
* :func:`run` - a whole run writing ``runs/<name>/`` (also ``python -m bnext.train``).
* :mod:`bnext.train.engine` - ``train_one_epoch`` and ``evaluate``.
* :mod:`bnext.train.optim` - AdamW weight-decay groups; :mod:`bnext.train.schedule` - ``tau_at``, LR.
"""

from .._lazy import lazy_exports

# imported on first use (``python -m bnext.train --help`` stays free of torch)
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".config": ["Config", "ConfigError", "load_config"],
    ".engine": ["evaluate", "train_one_epoch"],
    ".optim": ["build_optimizer", "param_groups"],
    ".runner": ["run"],
    ".schedule": ["build_lr_scheduler", "tau_at"],
})
