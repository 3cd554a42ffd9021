"""Slurm settings and submitit executors shared by ``python -m bnext.ablate`` and ``python -m landscape compute``.

Settings come from a ``slurm:`` block in a grid file and from ``--slurm-*`` options (the command
line wins)::

    slurm:
      partition: gpu
      gpus_per_node: 4        # one task (one training process) per GPU
      nodes: 2
      time: "12:00:00"        # minutes, HH:MM:SS or D-HH:MM:SS
      mem: 64G
      array_parallelism: 8    # at most this many points/shards at once
      cpus_per_task: 8        # any other submitit SlurmExecutor parameter passes through
      account: my-project

Jobs are submitted through `submitit <https://github.com/facebookincubator/submitit>`_ (the
launcher of DeiT and ConvNeXt). ``cluster="local"`` runs the very same job objects as processes on
this machine (submitit's LocalExecutor): that is how the tests cover the path.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: the ``--slurm-*`` options (name in the grid file's ``slurm:`` block -> help)
OPTIONS = {
    "partition": "Slurm partition",
    "gpus_per_node": "GPUs per node; one task (training process) is started per GPU",
    "nodes": "nodes per job (trainings span them under torch.distributed)",
    "time": "time limit per job: minutes, HH:MM:SS or D-HH:MM:SS",
    "mem": "memory per node, e.g. 64G",
    "array_parallelism": "at most this many jobs of the array at once",
}
CLUSTERS = ("slurm", "local")


class SlurmSettingsError(ValueError):
    """A ``slurm:`` block or ``--slurm-*`` option is malformed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--slurm-partition``, ``--slurm-gpus-per-node``, ... and ``--submitit-cluster``."""
    g = parser.add_argument_group("cluster (with --executor slurm)")
    for name, text in OPTIONS.items():
        g.add_argument(f"--slurm-{name.replace('_', '-')}", dest=f"slurm_{name}", default=None, help=text)
    g.add_argument("--submitit-cluster", choices=CLUSTERS, default="slurm",
                   help="slurm (default); local runs the same jobs as processes on this machine through submitit "
                        "(for trying a sweep without a cluster)")


def parse_time(value: Any) -> int:
    """Minutes from ``90``, ``"90"``, ``"01:30:00"``, ``"1-00:00:00"`` (Slurm's formats)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    text = str(value).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{1,2})(?::(\d{1,2}))?", text)
    if text.isdigit() and int(text) > 0:
        return int(text)
    if m:
        days, a, b, c = m.groups()
        hours, minutes, seconds = (int(a), int(b), int(c)) if c is not None else (int(a), int(b), 0)
        total = int(days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)
        if total > 0:
            return total
    raise SlurmSettingsError(f"slurm time {value!r} must be minutes or HH:MM:SS or D-HH:MM:SS, e.g. 12:00:00")


def parse_mem(value: Any) -> str:
    """Slurm memory text (``64G`` -> ``64GB``, ``500M`` -> ``500MB``, plain numbers are GB)."""
    text = str(value).strip().upper()
    m = re.fullmatch(r"(\d+)\s*([KMGT]?)B?", text)
    if not m:
        raise SlurmSettingsError(f"slurm mem {value!r} must be a size like 64G or 500M")
    return f"{m.group(1)}{m.group(2) or 'G'}B"


def _positive_int(name: str, value: Any) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or (isinstance(value, float) and value != n) or isinstance(value, bool):
        raise SlurmSettingsError(f"slurm {name} must be a positive integer, got {value!r}")
    return n


def settings(block: Mapping[str, Any] | None, args: argparse.Namespace | None = None) -> dict[str, Any]:
    """The grid file's ``slurm:`` block updated by the ``--slurm-*`` options that were given."""
    if block is not None and not isinstance(block, Mapping):
        raise SlurmSettingsError("the grid file's 'slurm:' entry must be a mapping, e.g. {partition: gpu, nodes: 1}")
    out = dict(block or {})
    for name in OPTIONS:
        value = getattr(args, f"slurm_{name}", None) if args is not None else None
        if value is not None:
            out[name] = value
    return out


def executor_parameters(conf: Mapping[str, Any], *, name: str) -> dict[str, Any]:
    """submitit ``SlurmExecutor`` parameters (the names of ``_make_sbatch_string``) for ``conf``."""
    conf = dict(conf)
    gpus = _positive_int("gpus_per_node", conf.pop("gpus_per_node")) if conf.get("gpus_per_node") else 0
    params: dict[str, Any] = {
        "job_name": name,
        "time": parse_time(conf.pop("time", 60)),
        "nodes": _positive_int("nodes", conf.pop("nodes", 1)),
        "ntasks_per_node": max(gpus, 1),
    }
    conf.pop("gpus_per_node", None)
    if gpus:
        params["gpus_per_node"] = gpus
    if conf.get("mem") is not None:
        params["mem"] = parse_mem(conf.pop("mem"))
    if conf.get("array_parallelism") is not None:
        params["array_parallelism"] = _positive_int("array_parallelism", conf.pop("array_parallelism"))
    params.update({k: v for k, v in conf.items() if v is not None})
    from submitit.slurm.slurm import _get_default_parameters

    unknown = sorted(set(params) - set(_get_default_parameters()))
    if unknown:
        raise SlurmSettingsError(f"unknown slurm setting(s) {unknown}; known: {', '.join(sorted(OPTIONS))} and "
                                 f"submitit's {', '.join(sorted(_get_default_parameters()))}")
    return params


def sbatch_script(conf: Mapping[str, Any], folder: str | os.PathLike[str], *, name: str,
                  array: int | None = None) -> str:
    """The sbatch file submitit writes for these settings (what ``sbatch`` would receive)."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = executor_parameters(conf, name=name)
    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    return _make_sbatch_string(command=command, folder=folder, map_count=array, **params)


def make_executor(folder: str | os.PathLike[str], conf: Mapping[str, Any], *, name: str,
                  cluster: str = "slurm") -> Any:
    """A submitit executor writing its job files under ``folder``.

    ``slurm``: ``SlurmExecutor`` with :func:`executor_parameters` (needs ``srun``/``sbatch``);
    ``local``: ``LocalExecutor`` (jobs run as processes here, tasks = GPUs per node or 1).
    """
    import submitit

    folder = Path(folder)
    params = executor_parameters(conf, name=name)
    if cluster == "slurm":
        try:
            ex = submitit.SlurmExecutor(folder)
        except RuntimeError as exc:
            raise SlurmSettingsError(f"--executor slurm: {exc} (no Slurm here; --submitit-cluster local runs the "
                                     f"jobs on this machine)") from None
        try:
            ex.update_parameters(**params)
        except (ValueError, TypeError) as exc:
            raise SlurmSettingsError(f"slurm settings rejected by submitit: {str(exc).splitlines()[0]}") from None
        return ex
    if cluster == "local":
        ex = submitit.LocalExecutor(folder)
        ex.update_parameters(timeout_min=params["time"], tasks_per_node=params["ntasks_per_node"],
                             gpus_per_node=params.get("gpus_per_node", 0))
        return ex
    raise SlurmSettingsError(f"unknown submitit cluster {cluster!r}; expected one of {', '.join(CLUSTERS)}")
