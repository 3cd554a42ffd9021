"""Every command line answers ``--help`` without importing torch (or numba), lists its subcommands,
and the long commands report progress on stderr (the rules in :mod:`bnext.cli`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numba", "torchvision", "scipy", "sklearn", "matplotlib", "plotly")
INTERNAL = {"bnext.ablate.worker"}  # started by the batch runner with a spec file, not a user command

# one fresh interpreter per command: run it with --help, then report what was imported
_PROBE = """
import json, runpy, sys
mod, args = sys.argv[1], sys.argv[2:]
sys.argv = [mod, *args]
code = 0
try:
    runpy.run_module(mod, run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code or 0
sys.stderr.write("\\nPROBE " + json.dumps({"code": code, "modules": sorted(sys.modules)}) + "\\n")
"""


def command_modules() -> list[str]:
    """Every module of the two packages that runs as a program (``python -m ...``)."""
    found = []
    for package in ("bnext", "landscape"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if 'if __name__ == "__main__":' not in path.read_text():
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__main__":
                parts.pop()
            name = ".".join(parts)
            if name not in INTERNAL:
                found.append(name)
    return found


def probe(module: str, *args: str) -> tuple[str, dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _PROBE, module, *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)
    report = json.loads(proc.stderr.rsplit("PROBE ", 1)[1])
    return proc.stdout, report


def test_the_known_commands_are_found():
    assert {"bnext.train", "bnext.quant", "bnext.profile", "bnext.packed", "bnext.ablate", "bnext.demo",
            "landscape"} <= set(command_modules())


@pytest.mark.parametrize("module", command_modules())
def test_help_imports_no_heavy_module(module):
    out, report = probe(module, "--help")
    assert report["code"] == 0, f"{module} --help exited with {report['code']}"
    assert "usage:" in out
    heavy = [m for m in HEAVY if m in report["modules"]]
    assert not heavy, f"python -m {module} --help imported {heavy}; import them inside the command"
    markup = re.findall(r"``|:(?:func|mod|class|meth|data|attr):`", out)
    assert not markup, f"python -m {module} --help shows reST markup {markup[:3]}: help is plain text"


SUBCOMMANDS = {
    "bnext.quant": ["table", "size"],
    "bnext.packed": ["pack", "info", "bench", "sizes"],
    "landscape": ["compute", "plot", "compare", "merge", "hessian", "connect", "flips"],
    "bnext.train": ["plot"],
    "bnext.models": ["import", "list"],
}


@pytest.mark.parametrize("module", sorted(SUBCOMMANDS))
def test_parent_help_lists_every_subcommand_whose_help_is_light_too(module):
    out, _ = probe(module, "--help")
    for sub in SUBCOMMANDS[module]:
        assert re.search(rf"\b{sub}\b", out), f"python -m {module} --help does not mention {sub!r}"
        sub_out, report = probe(module, sub, "--help")
        assert report["code"] == 0 and "usage:" in sub_out and sub in sub_out.split("\n", 1)[0]
        assert not [m for m in HEAVY if m in report["modules"]], f"{module} {sub} --help imported a heavy module"


def test_parser_names_a_mistyped_option_and_the_closest_one(capsys):
    from bnext.cli import ArgumentParser, plain_text

    p = ArgumentParser(prog="tool")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compute")
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--checkpoint")
    g.add_argument("--model")
    c.add_argument("--out")
    for argv, expected in [
        (["compute", "--model", "m", "--chekpoint", "x"], "--chekpoint (did you mean --checkpoint?)"),
        (["compute", "--chekpoint", "x"], "--chekpoint (did you mean --checkpoint?); one of the arguments"),
        (["comptue"], "invalid choice 'comptue' (did you mean compute?)"),
        (["compute", "--model", "m", "--zzzzzz"], "unrecognized argument: --zzzzzz\n"),
    ]:
        with pytest.raises(SystemExit) as e:
            p.parse_args(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and expected in err, (argv, err)
        assert len(err.splitlines()) <= 3, err  # one line, a short usage, the pointer to --help
    assert plain_text("see :func:`~landscape.surface.compute_surface` and ``--x -1:1:21``") == \
        "see compute_surface and --x -1:1:21"


def test_landscape_typo_is_named(capsys):
    from landscape.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["compute", "--chekpoint", "best.pt"])
    assert e.value.code == 2 and "did you mean --checkpoint?" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from bnext.models import create, save

    torch.manual_seed(0)
    return save(create("bnext18", num_classes=10, input_size=8, width=0.0625),
                tmp_path_factory.mktemp("cli") / "tiny.pt")


def bars(err: str) -> dict[str, str]:
    """The last state of each tqdm bar in ``err``: description -> 'n/total'."""
    return dict(re.findall(r"([^\r\n]+?):\s+100%\|[^|]*\|\s*(\d+/\d+)", err))


@pytest.mark.slow
def test_quant_talks_and_takes_threads(tiny_checkpoint, capsys):
    from bnext.quant.__main__ import main

    assert main(["--checkpoint", str(tiny_checkpoint), "--calib-batches", "2", "--batch-size", "256",
                 "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    assert torch.get_num_threads() == 1
    assert "top-1" in out and "%|" not in out  # results on stdout, bars on stderr
    done = bars(err)
    # digits: 360 test images = 2 batches of 256; calibration capped at 2 of the 6 train batches
    assert done["float model: evaluate"] == "2/2"
    assert done["8/8-4/8-4/8-8/8: calibrate"] == "2/2"
    assert done["8/8-4/8-4/8-8/8: evaluate"] == "2/2"


def test_quant_table_shows_one_bar_per_step(tiny_checkpoint, capsys):
    from bnext.quant import TABLE7_SPECS
    from bnext.quant.__main__ import main

    assert main(["table", "--checkpoint", str(tiny_checkpoint), "--calib-batches", "1", "--batch-size", "512",
                 "--threads", "2"]) == 0
    out, err = capsys.readouterr()
    assert torch.get_num_threads() == 2
    done = bars(err)
    assert done.pop("float model: evaluate") == "1/1"
    # the float row needs no calibration (nothing is printed for it); every other row calibrates and evaluates
    assert done == {**{f"{s}: evaluate": "1/1" for s in TABLE7_SPECS},
                    **{f"{s}: calibrate": "1/1" for s in TABLE7_SPECS[1:]}}
    assert out.count("\n| ") == len(TABLE7_SPECS) + 1


def test_profile_and_quant_size_count_with_a_bar(tiny_checkpoint, capsys):
    from bnext import profile
    from bnext.quant.__main__ import main

    assert profile.main([str(tiny_checkpoint), "bnext18", "--input-size", "32", "--num-classes", "10",
                         "--width", "0.0625", "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    assert bars(err) == {"counting": "2/2"} and out.count("bnext18") == 1
    assert main(["size", "bnext18", "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    assert bars(err) == {"counting": "1/1"} and "| bnext18 |" in out


@pytest.mark.parametrize("argv", [["--threads", "0"], ["table", "--threads", "-1"]])
def test_bad_thread_counts_are_refused(tiny_checkpoint, capsys, argv):
    from bnext.quant.__main__ import main

    cmd, *rest = argv if argv[0] == "table" else ["", *argv]
    assert main(([cmd] if cmd else []) + ["--checkpoint", str(tiny_checkpoint), *rest]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err


def test_train_threads_flag_is_the_threads_override(capsys):
    import yaml

    from bnext.train.__main__ import main

    assert main(["--config", str(ROOT / "configs" / "digits_bnext18.yaml"), "--threads", "3", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["threads"] == 3


@pytest.mark.slow
def test_packed_sizes_says_which_model_it_is_on(tmp_path, capsys):
    from bnext.packed.__main__ import main

    assert main(["sizes", "--models", "bnext18", "--threads", "2", "--workdir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "[1/1] bnext18: building" in err and re.search(r"^bnext18 +\d", out, re.M)
    assert torch.get_num_threads() == 2 and not list(tmp_path.iterdir())  # temporaries removed


@pytest.mark.slow
def test_landscape_threads_govern_the_packed_engine_too(tiny_checkpoint, tmp_path, monkeypatch):
    from landscape.__main__ import main
    from landscape.store import read_surface

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "s.h5"
    assert main(["compute", "--checkpoint", str(tiny_checkpoint), "--x", "-1:1:2", "--subset", "16",
                 "--threads", "1", "--no-progress", "--out", str(out)]) == 0
    engine = json.loads(read_surface(out).attrs["engine"])
    assert engine["forward"] == "packed" and engine["forward_info"]["threads"] == 1 == engine["torch_threads"]


@pytest.mark.slow
def test_first_landscape_compute_says_it_compiles(tiny_checkpoint, tmp_path):
    """An empty numba cache: the first run says it compiles; the second (cache on disk) does not."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "landscape", "compute", "--checkpoint", str(tiny_checkpoint), "--x", "0:1:2",
           "--subset", "16", "--threads", "1", "--out", str(tmp_path / "s.h5"), "--overwrite"]
    said = []
    for _ in range(2):
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        said.append("compiling kernels (first run only" in proc.stdout)
    assert said == [True, False]


def test_every_landscape_option_has_help_text():
    import argparse

    from landscape.__main__ import build_parser

    missing = [(name, b.option_strings) for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
               for name, sp in a.choices.items() for b in sp._actions if b.option_strings and b.help is None]
    assert not missing, f"options without help text: {missing}"
