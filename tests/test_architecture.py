"""The arrows point one way: no two modules import each other, and ``landscape`` (except its CLI
glue) never imports ``bnext``. Read from the source with ``ast`` (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bnext", "landscape")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Modules of our packages that ``path`` imports (at any depth, lazily or not)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # ``from . import style``
    return {m for m in found if m.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    return {name: {m for m in _imports(p) if m in modules and m != name} for name, p in modules.items()}


def test_no_two_modules_import_each_other():
    graph = _graph()
    pairs = sorted({tuple(sorted((a, b))) for a, deps in graph.items() for b in deps
                    if a in graph.get(b, ()) and not (a.startswith(b + ".") or b.startswith(a + "."))})
    assert not pairs, f"modules that import each other: {pairs}"


@pytest.mark.parametrize("package", ["landscape"])
def test_landscape_never_imports_bnext_outside_its_cli(package):
    offenders = sorted(name for name, deps in _graph().items()
                       if name.startswith("landscape") and not name.startswith("landscape.cli")
                       and name != "landscape.__main__" and any(d.startswith("bnext") for d in deps))
    assert not offenders, f"landscape modules importing bnext: {offenders}"


def test_landscape_is_split_into_parts():
    """The evaluation engine, curvature and figures are sub-packages; the file format is at the top."""
    for part in ("engine", "curvature", "figures", "cli"):
        assert (ROOT / "landscape" / part / "__init__.py").is_file(), part
    top = {p.stem for p in (ROOT / "landscape").glob("*.py")}
    assert {"store", "grid", "lock", "merge"} <= top
    assert not top & {"engine", "hessian", "plot", "winograd", "style"}, top
