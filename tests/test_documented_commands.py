"""Every shell and Python block of README.md and docs/*.md runs as written, at a tiny size.

The blocks are read in page order (:data:`PAGE_ORDER`, then any other page), shrunk (3-point grids,
16 samples, 3-epoch runs of width-1/8 models on 8x8 digits, one value per swept list) and run
in-process in one temporary folder, so a page may use what an earlier page made. A block preceded
by ``<!-- no-test: reason -->`` is not run; the test prints how many blocks each page ran and
skipped. Shell lines must be ``python -m MODULE ...`` or ``python SCRIPT.py ...``; a command whose
trailing comment says "exit 2" must be refused with exit status 2. Blocks in other languages
(``text``, ``json``, plain fences) are not run.
"""

from __future__ import annotations

import glob
import re
import runpy
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: pages that make what later pages use come first (training.md trains the run landscapes.md plots)
PAGE_ORDER = ("README.md", "docs/data.md", "docs/training.md", "docs/models.md", "docs/quantization.md",
              "docs/packed.md", "docs/landscapes.md", "docs/curvature.md", "docs/objectives.md",
              "docs/connectivity.md", "docs/cluster.md", "docs/sweeps.md", "docs/studies.md",
              "docs/notebooks.md", "docs/reliability.md", "docs/speed.md", "docs/development.md",
              "docs/index.md")
RUN_LANGUAGES = ("bash", "python")
NO_TEST = re.compile(r"<!--\s*no-test(?::\s*(?P<reason>.*?))?\s*-->")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<ticks>`{3,})(?P<lang>[\w-]*)\s*$")

TRAIN_OVERRIDES = ["train.epochs=3", "train.steps_per_epoch=2", "model.width=0.125", "data.input_size=8",
                   "threads=1", "progress=false"]
EPOCHS = {"epoch_005.pt": "epoch_002.pt", "epoch_010.pt": "epoch_003.pt"}  # the documented runs have 10 epochs
SWEEP_SMALL = {"quick": "true", "width": 0.0625, "input_size": 8, "epochs": 1, "steps_per_epoch": 2,
               "grid": "-1:1:3", "samples": 16, "threads": 1}
HESSIAN_SMALL = {"--subset": "16", "--max-iter": "10", "--probes": "2", "--density-iter": "5", "--density-runs": "1",
                 "--directions": "2", "--sharpness-steps": "2", "--eig-iter": "3"}


@dataclass
class Block:
    page: str
    line: int
    lang: str
    code: str
    skip: str | None  # the no-test reason, None when the block runs


def page_paths() -> list[str]:
    pages = [p for p in PAGE_ORDER if (ROOT / p).exists()]
    rest = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))
    return pages + [p for p in rest if p not in pages]


def blocks(page: str) -> list[Block]:
    """The fenced ``bash`` and ``python`` blocks of ``page``, each with its no-test mark."""
    lines = (ROOT / page).read_text().splitlines()
    out, k = [], 0
    while k < len(lines):
        m = FENCE.match(lines[k])
        if not m:
            k += 1
            continue
        ticks, start = m["ticks"], k
        k += 1
        body = []
        while k < len(lines) and not re.match(rf"^\s*{ticks}`*\s*$", lines[k]):
            body.append(lines[k][len(m["indent"]):])
            k += 1
        k += 1
        if m["lang"] in RUN_LANGUAGES:
            before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            mark = NO_TEST.search(before)
            skip = (mark["reason"] or "marked no-test") if mark else None
            out.append(Block(page, start + 1, m["lang"], "\n".join(body) + "\n", skip))
    return out


def shell_commands(code: str) -> list[tuple[list[str], str]]:
    """``(argv, trailing comment)`` of every command of a shell block (continuations joined)."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        command, _, comment = line.partition("  #")
        out.append((shlex.split(command), comment))
    return out


def _set(args: list[str], option: str, value: str) -> list[str]:
    if option in args:
        args[args.index(option) + 1] = value
        return args
    return args + [option, value]


def _grids(args: list[str]) -> list[str]:
    for k, a in enumerate(args[:-1]):
        if a in ("--x", "--y") and re.fullmatch(r"-?[\d.]+:-?[\d.]+:\d+", args[k + 1]):
            lo, hi, _ = args[k + 1].split(":")
            args[k + 1] = f"{lo}:{hi}:3"
    return args


def shrink(module: str, args: list[str]) -> list[str]:
    """The documented arguments at a tiny size (same commands, smaller grids, data and runs)."""
    args = [str(Path(a).parent / EPOCHS[Path(a).name]) if Path(a).name in EPOCHS else a for a in args]
    if module == "bnext.train":
        if args and args[0] == "plot" or {"--print-config", "--list-keys"} & set(args):
            return args
        return args + TRAIN_OVERRIDES
    if module == "bnext.ablate":
        return shrink_sweep(args)
    if "--dpi" in args:  # figures at screen resolution: same files, a fraction of the pixels
        args = _set(args, "--dpi", "50")
    if module != "landscape" or not args:
        return args
    if args[0] == "compute":
        args = _set(_grids(args), "--subset", "16")
        if "pca" in args and "--x" not in args:
            args += ["--x", "auto:3", "--y", "auto:3"]
        return args + ["--bn-samples", "16", "--no-progress"]
    if args[0] == "connect":  # a few fit steps, three points on the paths
        for option, value in {"--steps": "4", "--points": "3", "--subset": "16", "--bn-samples": "16",
                              "--batch-size": "16"}.items():
            args = _set(args, option, value)
        return args + ["--no-progress"]
    if args[0] == "flips":  # one scope, one seed, three fractions
        for option, value in {"--scope": "network", "--seeds": "0", "--fractions": "0,0.5,1",
                              "--subset": "16"}.items():
            args = _set(args, option, value)
        return args + ["--no-progress"]
    if args[0] == "hessian":
        args = _grids(args)
        for option, value in HESSIAN_SMALL.items():
            args = _set(args, option, value)
        return args + ["--no-progress"]
    return args


def shrink_sweep(args: list[str]) -> list[str]:
    """One value per swept list, and the notebook's size knobs left at their defaults made tiny
    (as ``tests/notebooks`` runs them); a bool list default such as ``[True, False]`` gets its first value."""
    from bnext.ablate.grid import notebook_parameters

    args = [re.sub(r"^(\w+)=\[([^\[\],]*),.*\]$", r"\1=\2", a) for a in args]
    given = {a.split("=", 1)[0] for a in args if re.match(r"^\w+=", a)}
    params = notebook_parameters(args[0])
    extra = {k: v for k, v in SWEEP_SMALL.items() if k in params and k not in given}
    for name, p in params.items():
        default = str(p.get("default", ""))
        if name not in given and re.fullmatch(r"\[(True|False)(, (True|False))+\]", default):
            extra[name] = default[1:].split(",")[0].lower()
    return args[:1] + [f"{k}={v}" for k, v in extra.items()] + args[1:]


def expand(args: list[str]) -> list[str]:
    """Shell globbing of ``*`` and ``?`` (a pattern without a match stays as written, as in bash)."""
    out = []
    for a in args:
        matches = sorted(glob.glob(a)) if any(c in a for c in "*?") else []
        out += matches or [a]
    return out


def run_python(argv: list[str]) -> int:
    """``python -m MODULE ...`` / ``python SCRIPT.py ...`` in this process; the exit status."""
    old = sys.argv
    try:
        if argv[1] == "-m":
            sys.argv = [argv[2], *argv[3:]]
            runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        else:
            sys.argv = argv[1:]
            runpy.run_path(str(ROOT / argv[1]), run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old
    return 0


def test_every_block_runs_or_says_why_not():
    """Cheap check of every page: runnable shell lines are Python commands; every skip has a reason."""
    summary = []
    for page in page_paths():
        found = blocks(page)
        for b in found:
            if b.skip is None and b.lang == "bash":
                for argv, _ in shell_commands(b.code):
                    assert argv[0] in ("python", ".venv/bin/python") and len(argv) > 1 and (
                        argv[1] == "-m" or argv[1].endswith(".py")), (
                        f"{page}:{b.line}: `{' '.join(argv)}` is not a Python command; mark the block "
                        f"<!-- no-test: reason --> if it must not run")
            assert b.skip is None or b.skip.strip(), f"{page}:{b.line}: a no-test mark needs a reason"
        ran = sum(b.skip is None for b in found)
        if found:
            summary.append(f"{page}: {ran} run, {len(found) - ran} skipped")
    print("\n".join(summary))
    readme = blocks("README.md")
    assert sum(b.skip is None for b in readme) >= 4, "the README tour has lost its commands"


def test_readme_and_docs_link_to_pages_that_exist():
    for page in page_paths():
        text = (ROOT / page).read_text()
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", text):
            assert (ROOT / page).parent.joinpath(target).resolve().exists(), f"{page}: link to {target}"


@pytest.mark.slow
def test_documented_commands_run(tmp_path, monkeypatch, capsys):
    from landscape.store import read_surface

    for name in ("configs", "examples", "notebooks"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    # the README's tour starts from `make demo`'s BNext-18: a tiny run in its place
    assert run_python(["python", "-m", "bnext.train", "--config", "configs/digits_demo.yaml", "name=bnext18",
                       "output_dir=runs/demo/bnext18", *TRAIN_OVERRIDES]) == 0
    capsys.readouterr()
    report, seconds = [], []
    for page in page_paths():
        namespace: dict = {"__name__": "__docs__"}
        ran = skipped = 0
        for b in blocks(page):
            if b.skip is not None:
                skipped += 1
                continue
            where = f"{page}:{b.line}"
            start = time.perf_counter()
            if b.lang == "python":
                try:
                    exec(compile(b.code, where, "exec"), namespace)
                except Exception as e:  # noqa: BLE001 - name the block that failed
                    raise AssertionError(f"{where}: the Python block failed: {e!r}") from e
            else:
                for argv, comment in shell_commands(b.code):
                    args = expand(shrink(argv[2], argv[3:])) if argv[1] == "-m" else argv[2:]
                    run = [argv[0], "-m", argv[2], *args] if argv[1] == "-m" else [argv[0], argv[1], *args]
                    expected = 2 if "exit 2" in comment else 0
                    rc = run_python(run)
                    out = capsys.readouterr()
                    assert rc == expected, (f"{where}: {' '.join(argv)}\n-> {' '.join(run)}\nexit {rc}, expected "
                                            f"{expected}\n{out.out[-3000:]}\n{out.err[-3000:]}")
            seconds.append((time.perf_counter() - start, where))
            with capsys.disabled():
                print(f"{where}: {seconds[-1][0]:.1f} s", flush=True)
            ran += 1
        if ran or skipped:
            report.append(f"{page}: {ran} blocks run, {skipped} skipped (no-test)")
    with capsys.disabled():
        print("\n" + "\n".join(report))
        print("slowest blocks: " + ", ".join(f"{w} {s:.0f} s" for s, w in sorted(seconds)[::-1][:6]))

    run = tmp_path / "runs" / "digits_bnext18"
    for name in ("landscape_random_2d.h5", "landscape_interpolate_1d.h5", "landscape_pca_2d.h5",
                 "landscape_file_2d.h5", "landscape_epoch1.h5", "landscape_sharded.h5"):
        assert read_surface(run / name).complete, name
    assert read_surface(run / "landscape_interpolate_1d.h5").settings["bn"] == "recalibrate"
    assert (run / "landscape_random_2d_train_loss_contour.png").exists()
    assert (tmp_path / "runs" / "tour_sweep" / "summary.md").exists()
