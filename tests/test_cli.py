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
