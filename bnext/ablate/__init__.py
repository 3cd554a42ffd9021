"""Ablations: papermill batch runs of the notebooks, result collection, and the glue the notebooks call.

* :mod:`bnext.ablate.grid` — parameter grids (parse, validate against a notebook, expand).
* :mod:`bnext.ablate.runner` — ``run_sweep``: one papermill process per grid point, timeouts,
  failures recorded, completed points skipped; ``python -m bnext.ablate`` is its CLI.
* :mod:`bnext.ablate.summary` — ``summary.csv``, a paper-style Markdown table (mean ± std over
  seeds) and a figure from the ``result.json`` files of a sweep.
* :mod:`bnext.ablate.results` — the ``result.json`` schema every notebook writes.
* :mod:`bnext.ablate.tasks` — train a model from a config, compute and plot a landscape for a
  checkpoint, evaluate, quantize, distill: the few lines each notebook cell calls.

``bnext.ablate`` (and :mod:`bnext.demo`) are the application layer on top of the library: they
may import :mod:`landscape` (lazily, inside functions); the core packages (``bnext.nn``,
``models``, ``data``, ``train``, ...) never do.
"""

from .grid import GridError, expand, load_grid_file, notebook_parameters, parse_assignments, validate_grid
from .results import as_list, atomic_write_json, default_out_dir, markdown_table, read_result, write_result
from .runner import RunOutcome, SweepReport, is_complete, run_sweep
from .summary import collect, write_summary

__all__ = [
    "GridError",
    "RunOutcome",
    "SweepReport",
    "as_list",
    "atomic_write_json",
    "collect",
    "default_out_dir",
    "expand",
    "is_complete",
    "load_grid_file",
    "markdown_table",
    "notebook_parameters",
    "parse_assignments",
    "read_result",
    "run_sweep",
    "validate_grid",
    "write_result",
    "write_summary",
]
