"""Parameter grids for notebook sweeps: parse, validate against a notebook's ``parameters`` cell, expand.

A grid maps parameter names to values. A list value is swept (one run per element), anything else
is fixed for every run; to pass a list as one fixed value, wrap it: ``rows=[[a,b]]``. Values are
read as YAML (``true``, ``0.5``, ``[1,2]``, ``null``, ``cifar10``), on the command line
(``name=[v1,v2]``) and in a grid file (a YAML mapping ``name: [v1, v2]``).
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

#: parameters the runner sets itself for every run
RESERVED = ("out_dir",)


class _GridLoader(yaml.SafeLoader):
    """YAML without YAML 1.1's base-60 numbers (``-1:1:11`` stays a string, not -3649) and with ``1e-3``
    read as a float."""


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_GridLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_GridLoader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+|0o?[0-7_]+)$"),
                                  list("-+0123456789"))
_GridLoader.add_implicit_resolver(
    _FLOAT, re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?"
                       r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+0123456789."))


def read_value(text: str) -> Any:
    """One value as YAML (``true``, ``0.5``, ``1e-3``, ``[1, 2]``, ``null``, ``-1:1:11`` stays text)."""
    return yaml.load(text, Loader=_GridLoader)  # noqa: S506 - a SafeLoader subclass


class GridError(ValueError):
    """A grid names an unknown parameter, has a malformed entry or a value of the wrong type."""


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``["seed=[0,1]", "epochs=2"]`` -> ``{"seed": [0, 1], "epochs": 2}`` (values read as YAML)."""
    grid: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise GridError(f"grid entry {item!r} must be NAME=VALUE or NAME=[V1,V2,...], e.g. seed=[0,1,2]")
        if name in grid:
            raise GridError(f"parameter {name!r} is given twice on the command line")
        try:
            grid[name] = read_value(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise GridError(f"grid entry {item!r}: the value is not valid YAML ({exc})") from None
    return grid


def load_grid_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML mapping ``name: value-or-list`` (an empty file is an empty grid)."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid file {path} does not exist")
    try:
        data = read_value(path.read_text())
    except yaml.YAMLError as exc:
        raise GridError(f"grid file {path} is not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) and k.isidentifier() for k in data):
        raise GridError(f"grid file {path} must be a mapping of parameter names to values or lists, "
                        f"e.g. 'seed: [0, 1, 2]'")
    return dict(data)


def notebook_parameters(notebook: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The notebook's ``parameters`` cell: ``{name: {"default": value, "type": name, "help": text}}``.

    Read with papermill's ``inspect_notebook`` (no kernel is started); defaults that are Python
    literals are evaluated, others are kept as their source text.
    """
    import papermill

    path = Path(notebook)
    if not path.is_file():
        raise GridError(f"notebook {path} does not exist")
    try:
        found = papermill.inspect_notebook(str(path))
    except Exception as exc:  # noqa: BLE001 - any unreadable notebook
        raise GridError(f"notebook {path} could not be read ({exc.__class__.__name__}: {exc})") from None
    extra = _assignments(path)
    if extra is None:
        raise GridError(f"notebook {path} has no cell tagged 'parameters'; the runner needs one to know "
                        f"which parameters exist")
    out = {}
    for name, p in found.items():
        try:
            default = ast.literal_eval(p["default"])
            literal = True
        except (ValueError, SyntaxError):
            default, literal = p["default"], False
        declared = p.get("inferred_type_name") or "None"
        if declared == "None" and literal and default is not None:
            declared = type(default).__name__
        out[name] = {"default": default, "type": declared, "help": p.get("help", "")}
    # papermill's line parser skips assignments with a second '=' (e.g. a string "a=b"); papermill still
    # injects such parameters, so take them from the cell's syntax tree
    for name, default in extra.items():
        if name not in out:
            declared = type(default).__name__ if default is not None and not isinstance(default, _Source) else "None"
            out[name] = {"default": default, "type": declared, "help": ""}
    return out


class _Source(str):
    """A default that is not a literal (kept as its source text)."""


def _assignments(path: Path) -> dict[str, Any] | None:
    """Top-level assignments of the first cell tagged ``parameters`` (None when there is no such cell)."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        return None
    try:
        tree = ast.parse(cells[0].source)
    except SyntaxError:
        return {}
    out: dict[str, Any] = {}
    for node in tree.body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets if isinstance(node, ast.Assign) \
            else []
        value = getattr(node, "value", None)
        for t in targets:
            if isinstance(t, ast.Name) and value is not None:
                try:
                    out[t.id] = ast.literal_eval(value)
                except ValueError:
                    out[t.id] = _Source(ast.unparse(value))
    return out


def _type_ok(value: Any, declared: str) -> bool:
    if value is None or declared in ("None", "NoneType", ""):
        return True
    if declared == "bool":
        return isinstance(value, bool)
    if declared == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if declared == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if declared == "str":
        return isinstance(value, str)
    if declared in ("list", "tuple"):
        return True  # notebooks accept a single item where they take a list
    return True


def validate_grid(grid: Mapping[str, Any], parameters: Mapping[str, Mapping[str, Any]], notebook: str = "") -> None:
    """Reject unknown names, reserved names and values of the wrong type, before anything runs."""
    where = f" of {notebook}" if notebook else ""
    unknown = sorted(set(grid) - set(parameters))
    if unknown:
        raise GridError(f"unknown parameter(s) {unknown}{where}; the parameters cell defines: "
                        f"{', '.join(sorted(parameters))}")
    reserved = sorted(set(grid) & set(RESERVED))
    if reserved:
        raise GridError(f"parameter(s) {reserved} are set by the runner for each run (use --out for the folder)")
    for name, value in grid.items():
        declared = parameters[name]["type"]
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not value:
            raise GridError(f"parameter {name!r}: an empty list sweeps over nothing")
        for v in values:
            if isinstance(v, list) and declared not in ("list", "tuple", "None"):
                raise GridError(f"parameter {name!r}{where} takes a {declared}, got the list {v!r}")
            if not isinstance(v, list) and not _type_ok(v, declared):
                raise GridError(f"parameter {name!r}{where} takes a {declared} "
                                f"(default {parameters[name]['default']!r}), got {v!r} ({type(v).__name__})")


def swept(grid: Mapping[str, Any]) -> list[str]:
    """Names whose value is a list of more than one element (the ones that name the runs)."""
    return [k for k, v in grid.items() if isinstance(v, list) and len(v) > 1]


def expand(grid: Mapping[str, Any]) -> list[dict[str, Any]]:
    """All points of the grid (cartesian product, in the order the names were given)."""
    names = list(grid)
    choices = [v if isinstance(v, list) else [v] for v in grid.values()]
    return [dict(zip(names, combo)) for combo in itertools.product(*choices)]


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def run_id(point: Mapping[str, Any], names: Iterable[str]) -> str:
    """A readable, filesystem-safe folder name from the swept parameters (``default`` if none)."""
    names = list(names)
    if not names:
        return "default"
    text = "__".join(f"{n}={_fmt(point[n])}" for n in names)
    safe = re.sub(r"[^A-Za-z0-9._=+,-]", "-", text)
    if len(safe) > 96 or safe != text:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        safe = f"{safe[:86]}-{digest}"
    return safe


def normalized(value: Any) -> Any:
    """JSON round trip (tuples become lists, numpy scalars plain) for comparing parameters."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))
