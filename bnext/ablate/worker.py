"""One papermill execution in this process: ``python -m bnext.ablate.worker SPEC.json``.

Started by :mod:`bnext.ablate.runner`, one process per grid point. The spec names the notebook,
the output notebook, the parameters, the kernel's working directory and the failure file. Exit
status 0 when the notebook ran to the end; 1 with ``failure.json`` written when a cell raised or
papermill could not run it. When the spec names ``parent_pid`` the worker (with its kernel) ends
as soon as that process does (:func:`bnext.ablate.guard.die_with_parent`).
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from pathlib import Path

from .results import atomic_write_json

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _plain(text: str) -> str:
    return _ANSI.sub("", text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m bnext.ablate.worker SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    if spec.get("parent_pid"):
        from .guard import die_with_parent

        die_with_parent(int(spec["parent_pid"]))  # a killed runner takes this worker and its kernel along
    import papermill
    from papermill.exceptions import PapermillExecutionError

    failure_path = Path(spec["failure"])
    try:
        papermill.execute_notebook(
            spec["notebook"], spec["output"], parameters=spec["parameters"], kernel_name=spec["kernel_name"],
            cwd=spec["cwd"], progress_bar=False, log_output=True,
        )
    except PapermillExecutionError as exc:
        atomic_write_json(failure_path, {
            "status": "failed",
            "cell_index": exc.cell_index,  # index in the executed notebook (the injected-parameters cell counts)
            "exec_count": exc.exec_count,
            "cell_source": exc.source,
            "error": exc.ename,
            "message": _plain(str(exc.evalue)),
            "traceback": _plain("\n".join(exc.traceback)),
        })
        print(f"notebook failed in cell {exc.cell_index}: {exc.ename}: {_plain(str(exc.evalue))}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - kernel start failures, unreadable notebooks, ...
        atomic_write_json(failure_path, {
            "status": "error",
            "error": exc.__class__.__name__,
            "message": str(exc),
            "traceback": traceback.format_exc(),
        })
        print(f"papermill could not run the notebook: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
