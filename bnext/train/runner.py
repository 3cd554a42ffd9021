"""``run(config)``: a whole training run, its files under ``runs/<name>/`` and ``--resume``.

Files (rank 0 writes): ``config.yaml`` (resolved), ``metrics.jsonl`` (one JSON line per epoch),
``checkpoints/last.pt`` (every epoch: model + optimizer, scheduler, RNG states, best metric)
``checkpoints/best.pt`` (best test top-1) and, with ``train.save_every: k``,
``checkpoints/epoch_XXX.pt`` every k epochs, all written atomically by
:func:`bnext.models.save` (loadable by :func:`bnext.models.load` and ``weights_only=True``),
optional ``trajectory.h5``, and at the end ``result.json`` and ``curves.png``/``.pdf``
(:mod:`bnext.train.curves`).

Exact resume on CPU: the data order and augmentation are functions of ``(seed, epoch)``, the
progressive-binarization temperature a function of progress, and the torch / NumPy / Python RNG
states are restored, so an interrupted run resumed from ``last.pt`` ends with the same weights,
bit for bit, as an uninterrupted one (same seed and thread count).

One writer per run folder: rank 0 holds ``<output_dir>/.lock`` (``bnext.io.lock_folder``) for the
whole run, so a second training with the same ``output_dir`` stops at once naming the holder's PID;
temporaries of killed writers (``.<name>.<pid>...tmp``) are removed when the next run starts.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io import atomic_open, lock_folder, remove_stale_temporaries
from ..models import CheckpointError, create, read_checkpoint, save
from ..models.checkpoint import check_consistent
from ..nn import get_tau, set_tau
from .config import Config, ConfigError, missing_keys
from .data import build_data
from .distributed import DistContext, all_reduce_metrics, cleanup, setup
from .engine import cross_entropy, evaluate, train_one_epoch
from .optim import build_optimizer
from .schedule import build_lr_scheduler, tau_at
from .trajectory import TrajectoryWriter

__all__ = ["get_rng_state", "run", "set_rng_state"]

CHECKPOINT_DIR = "checkpoints"


# -- RNG state as plain types / tensors (weights_only-loadable) --------------------------
def get_rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), NumPy and Python RNG states as tensors and plain types."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, pystate, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(pystate, dtype=torch.int64), "gauss": gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -- pieces ------------------------------------------------------------------------------------
def _build_model(cfg: Config, num_classes: int, input_size: int) -> nn.Module:
    options = dict(cfg.model.options)
    options.setdefault("width", cfg.model.width)
    try:
        return create(cfg.model.name, num_classes=num_classes, input_size=input_size, **options)
    except ValueError as e:
        raise ConfigError(f"model: {e}") from None


def _load_init_checkpoint(model: nn.Module, path: str) -> None:
    ckpt = read_checkpoint(path)
    check_consistent(path, ckpt)  # the file's options against its own tensors, as bnext.models.load checks
    if ckpt["model"] != model.spec["name"]:
        raise ConfigError(f"init_checkpoint {path} holds model {ckpt['model']!r}, the config builds "
                          f"{model.spec['name']!r}")
    try:
        missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ConfigError(f"init_checkpoint {path} does not fit {model.spec['name']} with options "
                          f"{model.spec['options']}: {str(e).strip().splitlines()[-1].strip()}") from None
    if missing or unexpected:
        raise ConfigError(f"init_checkpoint {path} does not fit {model.spec['name']} with options "
                          f"{model.spec['options']}: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _quantize(model: nn.Module, spec: Any) -> nn.Module:
    try:
        from .. import quant  # optional package, written separately
    except ImportError as e:
        raise ConfigError(f"quant.spec is set ({spec!r}) but bnext.quant cannot be imported ({e}); "
                          "unset quant.spec or install the quantization package") from None
    if not hasattr(quant, "quantize"):
        raise ConfigError("quant.spec is set but bnext.quant has no quantize(model, spec) function")
    out = quant.quantize(model, spec)
    return model if out is None else out


def _build_distiller(cfg: Config, num_classes: int, device: torch.device, epochs: int) -> Any:
    from ..kd import Distiller, build_teacher

    kd = cfg.kd

    cache: dict[tuple, Any] = {}  # BNext-L uses ConvNeXt-T as strong teacher and assistant: build it once

    def teacher(t: Any) -> Any:
        key = (t.arch, str(t.weights), t.num_classes, t.accuracy)
        if key not in cache:
            cache[key] = build_teacher(t.arch, t.weights, num_classes=t.num_classes or num_classes,
                                       accuracy=t.accuracy, device=device, channels_last=cfg.channels_last)
        return cache[key]

    try:
        strong = teacher(kd.strong)
        assistants = [teacher(a) for a in kd.assistants]
        return Distiller(strong, assistants, epochs=epochs, temperature=kd.temperature,
                         hard_weight=kd.hard_weight, ensemble=kd.ensemble, order=kd.order, amp=kd.amp)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"kd: {e}") from None


def _jsonable(x: Any) -> Any:
    if isinstance(x, float | int | str | bool) or x is None:
        return x
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return str(x)


def _rewrite_metrics(path: Path, upto_epoch: int) -> None:
    """Keep only the metrics lines of epochs ``<= upto_epoch`` (a resumed run rewrites the rest)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("epoch", 0) <= upto_epoch:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    path.write_text("".join(k + "\n" for k in keep))


def _set_threads(threads: int | None) -> int:
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    return before


# -- the run ------------------------------------------------------------------------------------
def run(config: Config | dict[str, Any]) -> dict[str, Any]:
    """Train as configured (see :mod:`bnext.train.config`); returns the ``result.json`` dict.

    Under ``torchrun`` (``WORLD_SIZE > 1``) it runs DistributedDataParallel; rank 0 writes the files.
    ``config.resume`` continues from ``<output_dir>/checkpoints/last.pt`` when it exists.
    """
    cfg = config if isinstance(config, Config) else Config.from_dict(config)
    missing = missing_keys(cfg)
    if missing:
        raise ConfigError(f"required config key(s) not set: {', '.join(missing)}")
    threads_before = _set_threads(cfg.threads)
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    ctx = setup(cfg.device, cfg.distributed.backend)
    try:
        with lock_folder(cfg.run_dir) if ctx.is_main else contextlib.nullcontext():
            if ctx.is_main:
                for folder in (cfg.run_dir, cfg.run_dir / CHECKPOINT_DIR):
                    for stale in remove_stale_temporaries(folder):
                        print(f"[bnext.train] removed {stale} (left by a killed writer)", file=sys.stderr)
            return _run(cfg, ctx)
    finally:
        cleanup(ctx)
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(deterministic_before)


def _run(cfg: Config, ctx: DistContext) -> dict[str, Any]:
    t_start = time.perf_counter()
    device = ctx.device
    out = cfg.run_dir
    ckpt_dir = out / CHECKPOINT_DIR
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    _seed_all(cfg.seed)

    data = build_data(cfg, world_size=ctx.world_size, rank=ctx.rank, pin_memory=device.type == "cuda")
    model = _build_model(cfg, data.num_classes, data.input_size)
    if cfg.init_checkpoint:
        _load_init_checkpoint(model, cfg.init_checkpoint)
    epochs = cfg.train.epochs
    spec = model.spec
    if cfg.quant.spec is not None:
        model = _quantize(model, cfg.quant.spec)
        if getattr(model, "spec", None) is None:
            model.spec = spec
        epochs = cfg.quant.finetune_epochs
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in model.parameters())

    steps_per_epoch = len(data.train)
    if cfg.train.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.train.steps_per_epoch)
    total_steps = max(epochs * steps_per_epoch, 1)
    per_step = cfg.lr_schedule.interval == "step"
    unit = steps_per_epoch if per_step else 1
    quant_finetune = cfg.quant.spec is not None
    if quant_finetune:  # section 7.5: binary layers frozen, AdamW(0.99, 0.999), lr 1e-7, no decay
        from .. import quant

        quant.calibrate(model, data.train.epoch(0), device=device, max_batches=cfg.quant.calibrate_batches)
        quant.freeze_binary_layers(model)
        optimizer = quant.make_optimizer(model, lr=cfg.quant.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    else:
        optimizer = build_optimizer(model, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
                                    wd_real=cfg.optim.weight_decay, wd_binary=cfg.optim.binary_weight_decay)
        scheduler = build_lr_scheduler(optimizer, total_steps=max(epochs, 1) * unit,
                                       warmup_steps=round(cfg.lr_schedule.warmup_epochs * unit),
                                       warmup_lr=cfg.lr_schedule.warmup_lr, min_lr=cfg.lr_schedule.min_lr,
                                       cosine_length=cfg.lr_schedule.cosine_length)
    distiller = _build_distiller(cfg, data.num_classes, device, epochs) if cfg.kd.enabled else None
    b = cfg.binarize

    def tau_for(progress: float) -> float:
        return tau_at(progress, tau_start=b.tau_start, tau_end=b.tau_end, end_fraction=b.end_fraction,
                      schedule=b.schedule, decay=b.decay, epochs=max(epochs, 1))

    # -- resume --------------------------------------------------------------------------
    start_epoch, best_top1, best_epoch, elapsed = 0, -1.0, 0, 0.0
    resumed = False
    if cfg.resume and last_path.exists():
        ckpt = read_checkpoint(last_path)
        extra = ckpt["extra"]
        if ckpt["model"] != spec["name"] or extra.get("total_epochs") != epochs:
            raise ConfigError(f"cannot resume from {last_path}: it holds {ckpt['model']} for "
                              f"{extra.get('total_epochs')} epochs, the config {spec['name']} for {epochs}")
        try:
            model.load_state_dict(ckpt["state_dict"])
            optimizer.load_state_dict(extra["optimizer"])
            scheduler.load_state_dict(extra["scheduler"])
            start_epoch = int(extra["epoch"])
            best_top1, best_epoch = float(extra["best_top1"]), int(extra["best_epoch"])
            elapsed = float(extra.get("seconds", 0.0))
            set_rng_state(extra["rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            detail = str(e).strip().splitlines()[-1].strip() if str(e).strip() else type(e).__name__
            raise CheckpointError(f"cannot resume from {last_path}: it does not fit this config's model and "
                                  f"optimizer ({type(e).__name__}: {detail}); use another output_dir or drop "
                                  "--resume") from None
        resumed = True
    elif cfg.resume and ctx.is_main:
        print(f"[bnext.train] --resume: no {last_path}, starting from scratch", file=sys.stderr)

    train_model: nn.Module = model
    if ctx.distributed:
        if cfg.distributed.sync_bn and device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            model.spec = spec
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    metrics_path = out / "metrics.jsonl"
    traj = None
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.yaml")
        if resumed:
            _rewrite_metrics(metrics_path, start_epoch)
        elif metrics_path.exists():
            metrics_path.unlink()
        if cfg.trajectory.every:
            traj = TrajectoryWriter(out / "trajectory.h5", model, keep_until=start_epoch if resumed else None)
            if not resumed:
                traj.append(model, 0)

    loss_fn = partial(cross_entropy, label_smoothing=cfg.train.label_smoothing)
    stop = min(epochs, cfg.train.stop_after) if cfg.train.stop_after is not None else epochs
    last_metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, stop):
        t0 = time.perf_counter()
        step_cb = None
        if b.interval == "step" and not quant_finetune:
            def step_cb(step: int, _e: int = epoch) -> None:
                set_tau(model, tau_for((_e * steps_per_epoch + step) / total_steps))
        if not quant_finetune:  # fine-tuning keeps the loaded (binary) temperature
            set_tau(model, tau_for(epoch / max(epochs, 1)))
        tau = get_tau(model)
        lr = optimizer.param_groups[0]["lr"]
        tr = train_one_epoch(
            train_model, data.train.epoch(epoch), optimizer, loss_fn=loss_fn, device=device, epoch=epoch,
            scheduler=scheduler if per_step else None, clip_grad=cfg.train.clip_grad,
            batch_transform=data.batch_transform, distiller=distiller, step_callback=step_cb,
            latent_clip=cfg.train.latent_clip, micro_batches=cfg.train.micro_batches,
            channels_last=cfg.channels_last, progress=cfg.progress and ctx.is_main, total=steps_per_epoch,
            max_steps=cfg.train.steps_per_epoch,
        )
        if not per_step:
            scheduler.step()
        tr = all_reduce_metrics(tr, ctx)
        done = epoch + 1
        row: dict[str, Any] = {"epoch": done, "train_loss": tr["loss"], "train_top1": tr["top1"],
                               "train_top5": tr["top5"]}
        if "kd_loss" in tr:
            row["kd_loss"] = tr["kd_loss"]
            row["assistant"] = distiller.assistant
        if ctx.distributed:  # evaluate (and save) with rank 0's BatchNorm statistics on every process
            for buf in model.buffers():
                torch.distributed.broadcast(buf, 0)
        if done % cfg.train.eval_every == 0 or done == epochs:
            te = all_reduce_metrics(evaluate(model, data.test, device=device, channels_last=cfg.channels_last), ctx)
            row.update(test_loss=te["loss"], test_top1=te["top1"], test_top5=te["top5"])
            if te["top1"] > best_top1:
                best_top1, best_epoch = te["top1"], done
                if ctx.is_main:
                    save(model, best_path, epoch=done, best_top1=best_top1, test_top1=te["top1"],
                         config=cfg.to_dict())
        seconds = time.perf_counter() - t0
        elapsed += seconds
        row.update(lr=lr, tau=tau, seconds=seconds)
        last_metrics = row
        if ctx.is_main:
            with metrics_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            if traj is not None and (done % cfg.trajectory.every == 0 or done == epochs):
                traj.append(model, done)
            save(model, last_path, epoch=done, total_epochs=epochs, best_top1=best_top1, best_epoch=best_epoch,
                 optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), rng=get_rng_state(),
                 seconds=elapsed, config=cfg.to_dict())
            if cfg.train.save_every and done % cfg.train.save_every == 0:  # for interpolation between epochs
                save(model, ckpt_dir / f"epoch_{done:03d}.pt", epoch=done, total_epochs=epochs,
                     test_top1=row.get("test_top1"), config=cfg.to_dict())
            if cfg.progress:
                msg = f"epoch {done}/{epochs} loss {tr['loss']:.4f} top1 {tr['top1']:.2f}"
                if "test_top1" in row:
                    msg += f" | test {row['test_top1']:.2f}"
                print(f"[{cfg.name}] {msg} | {seconds:.1f}s", file=sys.stderr)
        if ctx.distributed:
            torch.distributed.barrier()

    finished = stop >= epochs
    if not last_metrics and metrics_path.exists():  # nothing left to train (resumed a finished run)
        lines = metrics_path.read_text().splitlines()
        last_metrics = json.loads(lines[-1]) if lines else {}
    result = {
        "name": cfg.name,
        "model": spec["name"],
        "model_options": spec["options"],
        "dataset": cfg.data.name,
        "epochs": epochs,
        "epochs_done": max(stop, start_epoch),
        "finished": finished,
        "final_top1": last_metrics.get("test_top1"),
        "final_top5": last_metrics.get("test_top5"),
        "final_test_loss": last_metrics.get("test_loss"),
        "best_top1": best_top1 if best_top1 >= 0 else None,
        "best_epoch": best_epoch,
        "params": n_params,
        "tau": get_tau(model),
        "seconds": elapsed,
        "wall_seconds_this_invocation": time.perf_counter() - t_start,
        "world_size": ctx.world_size,
        "device": str(device),
        "output_dir": str(out),
    }
    if ctx.is_main and finished:
        with atomic_open(out / "result.json", "w") as f:
            f.write(json.dumps(_jsonable(result), indent=2) + "\n")
    if ctx.is_main and metrics_path.exists():
        try:  # curves.png/.pdf; a figure must never fail a run
            from .curves import write_run_curves

            write_run_curves(out)
        except Exception as exc:  # noqa: BLE001
            print(f"[{cfg.name}] training curves not drawn: {exc}", file=sys.stderr)
    return result
