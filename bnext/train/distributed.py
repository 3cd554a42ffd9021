"""DistributedDataParallel set-up from torchrun's or submitit's environment (nccl on CUDA, gloo on CPU).

Under ``torchrun`` the rank variables are already set. Inside a submitit job with several tasks
(``--executor slurm`` of ``python -m bnext.ablate``: one task per GPU, on one or more nodes)
:func:`export_submitit_env` derives them from submitit's ``JobEnvironment`` (global rank, number
of tasks, local rank, the first host of the job as master, a port drawn from the job id), so the
same training code joins one process group across the job's nodes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistContext", "all_reduce_metrics", "cleanup", "export_submitit_env", "setup"]


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use device: auto or cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def export_submitit_env() -> dict[str, str]:
    """Inside a submitit job of several tasks, set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
    ``MASTER_ADDR`` and ``MASTER_PORT`` from its ``JobEnvironment`` (kept when torchrun set them already).

    Returns the variables set (empty outside a submitit job, for a one-task job, or under torchrun).
    Child processes started afterwards (a notebook kernel) inherit them.
    """
    if "WORLD_SIZE" in os.environ or not os.environ.get("SUBMITIT_EXECUTOR"):
        return {}
    try:
        from submitit import JobEnvironment
        from submitit.helpers import TorchDistributedEnvironment

        if JobEnvironment().num_tasks <= 1:
            return {}
        env = TorchDistributedEnvironment()
    except (ImportError, RuntimeError, KeyError, ValueError):
        return {}
    values = {"RANK": str(env.rank), "WORLD_SIZE": str(env.world_size), "LOCAL_RANK": str(env.local_rank),
              "LOCAL_WORLD_SIZE": str(env.local_world_size), "MASTER_ADDR": str(env.master_addr),
              "MASTER_PORT": str(env.master_port)}
    os.environ.update(values)
    return values


def setup(device: str = "auto", backend: str | None = None) -> DistContext:
    """Join the process group when launched by torchrun or in a several-task submitit job (``WORLD_SIZE > 1``);
    otherwise single process."""
    export_submitit_env()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistContext(device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    here = False
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if dev.type == "cuda" else "gloo"))
        here = True
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, here)


def cleanup(ctx: DistContext) -> None:
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_metrics(metrics: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Combine per-process metric dicts weighted by ``count`` (loss/top1/top5/kd_loss) across processes."""
    if not ctx.distributed:
        return metrics
    keys = [k for k in ("loss", "top1", "top5", "kd_loss") if k in metrics]
    n = float(metrics.get("count", 0))
    t = torch.tensor([n] + [metrics[k] * n for k in keys], dtype=torch.float64,
                     device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    total = max(float(t[0]), 1.0)
    out = dict(metrics)
    out["count"] = int(t[0])
    for i, k in enumerate(keys):
        out[k] = float(t[i + 1]) / total
    return out
