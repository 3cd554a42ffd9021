"""``python -m bnext.train --config FILE.yaml [key=value ...] [--resume]`` (also under torchrun).

``python -m bnext.train plot RUN_DIR...`` draws the training curves of one or more runs.
"""

from __future__ import annotations

import json
import sys

import yaml

from ..cli import ArgumentParser
from .config import ConfigError, load_config, valid_keys


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the config, train; returns the exit status (2 for config errors)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["plot"]:  # python -m bnext.train plot RUN_DIR...: training curves
        from .curves import main as plot_main

        return plot_main(argv[1:])
    parser = ArgumentParser(
        prog="python -m bnext.train",
        description="Train a workbench model (BNext recipe, paper section 5.1). Under torchrun: DDP.",
        epilog="Overrides are dotted keys, e.g. train.epochs=3 model.options.info_rcp=false data.batch_size=64. "
               "Training curves of finished or running runs: python -m bnext.train plot RUN_DIR... (see plot --help).",
    )
    parser.add_argument("--config", help="YAML config file (see configs/); required unless --list-keys")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoints/last.pt")
    parser.add_argument("--threads", type=int, metavar="N", help="torch threads (the override threads=N)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--list-keys", action="store_true", help="list every config key and exit")
    args = parser.parse_args(argv)
    if args.list_keys:
        print("\n".join(valid_keys()))
        return 0
    if not args.config:
        parser.error("--config FILE.yaml is required")
    try:
        overrides = (list(args.overrides) + (["resume=true"] if args.resume else [])
                     + ([f"threads={args.threads}"] if args.threads is not None else []))
        cfg = load_config(args.config, overrides, allow_missing=args.print_config)
        if args.print_config:
            print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
            return 0
        from .runner import run

        result = run(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - user errors become one line, bugs keep their traceback
        message = _user_error(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(json.dumps({k: result[k] for k in ("name", "final_top1", "best_top1", "seconds", "output_dir")}))
    return 0


def _user_error(e: Exception) -> str | None:
    """One line for the errors a user can fix (data, checkpoints, locks, disk), else None."""
    from ..data import DatasetLayoutError
    from ..io import FileWriteError, FolderLockedError, describe_write_error
    from ..models import CheckpointError

    if isinstance(e, DatasetLayoutError | CheckpointError | FolderLockedError | FileWriteError):
        return str(e)
    if isinstance(e, OSError):  # disk full, read-only folder, ... while writing config.yaml or metrics.jsonl
        return describe_write_error(e.filename or "a run file", e)
    return None


if __name__ == "__main__":
    sys.exit(main())
