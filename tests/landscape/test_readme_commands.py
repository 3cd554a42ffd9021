"""The README's landscape and evaluation commands run as written, at a tiny size.

The commands are parsed out of README.md ("Loss landscapes" -> "Command line", "Your own model",
and "Evaluate a checkpoint or `.bnx`"), shrunk (3-point grids, 16 samples, a 3-epoch run of a
width-1/8 model on 8x8 digits) and run in-process in a temporary folder. A command whose comment
says "exit 2" must be refused with exit status 2; ``torchrun`` lines are covered by
``test_landscape_processes.py``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("### Command line", "### Your own model", "### Evaluate a checkpoint or `.bnx`")
TRAIN_OVERRIDES = [
    "train.epochs=3", "train.steps_per_epoch=2", "model.width=0.125", "data.input_size=8", "threads=1",
    "progress=false",
]
EPOCHS = {"epoch_005.pt": "epoch_002.pt", "epoch_010.pt": "epoch_003.pt"}  # the README's run has 10 epochs


def readme_commands() -> list[tuple[str, str]]:
    """``(command, trailing comment)`` of every shell command in the documented sections, in order."""
    text = (ROOT / "README.md").read_text()
    out = []
    for title in SECTIONS:
        assert text.count(f"\n{title}\n") == 1, title
        body = text.split(f"\n{title}\n", 1)[1]
        block = re.search(r"```bash\n(.*?)```", body, re.S)
        assert block, f"no bash block under {title}"
        joined = block.group(1).replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            command, _, comment = line.partition("  #")
            out.append((" ".join(command.split()), comment))
    return out


def shrink(argv: list[str]) -> list[str]:
    argv = [EPOCHS.get(Path(a).name, None) and str(Path(a).parent / EPOCHS[Path(a).name]) or a for a in argv]
    module = argv[2]
    rest = argv[3:]
    if module == "bnext.train":
        return rest + TRAIN_OVERRIDES
    if module != "landscape" or rest[0] != "compute":
        return rest
    for k, a in enumerate(rest[:-1]):
        if a in ("--x", "--y") and re.fullmatch(r"-?[\d.]+:-?[\d.]+:\d+", rest[k + 1]):
            lo, hi, _ = rest[k + 1].split(":")
            rest[k + 1] = f"{lo}:{hi}:3"
        if a == "--subset":
            rest[k + 1] = "16"
    if "--subset" not in rest:
        rest += ["--subset", "16"]
    if "pca" in rest and "--x" not in rest:
        rest += ["--x", "auto:3", "--y", "auto:3"]
    return rest + ["--bn-samples", "16", "--no-progress"]


def test_readme_lists_the_commands():
    commands = [c for c, _ in readme_commands()]
    assert sum(c.startswith("python -m landscape compute") for c in commands) >= 7
    assert any("--model examples.my_model:build --data examples.my_model:loaders" in c for c in commands)
    assert any(c.startswith("python -m bnext.evaluate") for c in commands)


@pytest.mark.slow
def test_readme_commands_run(tmp_path, monkeypatch, capsys):
    import bnext.evaluate
    import bnext.packed.__main__
    import bnext.train.__main__
    import landscape.__main__
    from landscape.store import read_surface

    runners = {
        "landscape": landscape.__main__.main,
        "bnext.train": bnext.train.__main__.main,
        "bnext.evaluate": bnext.evaluate.main,
        "bnext.packed": bnext.packed.__main__.main,
    }
    for name in ("configs", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    ran = 0
    for command, comment in readme_commands():
        argv = shlex.split(command)
        if argv[0] == "torchrun":
            continue
        assert argv[:2] == ["python", "-m"] and argv[2] in runners, command
        expected = 2 if "exit 2" in comment else 0
        rc = runners[argv[2]](shrink(argv))
        captured = capsys.readouterr()
        assert rc == expected, f"{command}\n-> {shrink(argv)}\nexit {rc}\n{captured.out}\n{captured.err}"
        if expected == 2:
            assert "input images are 32x32 but this model was trained for 8x8" in captured.err
        ran += 1
    assert ran >= 14
    run = tmp_path / "runs" / "digits_bnext18"
    for name in ("landscape_random_2d.h5", "landscape_interpolate_1d.h5", "landscape_pca_2d.h5",
                 "landscape_file_2d.h5", "landscape_epoch1.h5"):
        s = read_surface(run / name)
        assert s.complete, name
    assert read_surface(run / "landscape_interpolate_1d.h5").settings["bn"] == "recalibrate"
    assert (run / "landscape_random_2d_contour.png").exists()
    assert read_surface(tmp_path / "runs/my_model_build/landscape_random_2d.h5").complete
