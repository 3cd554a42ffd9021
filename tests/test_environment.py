"""pyproject.toml is the one source of dependencies; environment.yml mirrors its torch pins."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(reqs):
    return {m.group(1): m.group(2) for r in reqs if (m := re.match(r"^(torch|torchvision)==([\w.]+)$", r.strip()))}


def test_environment_yml_mirrors_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert _pins(project["dependencies"]) == {"torch": "2.14.1", "torchvision": "0.29.1"}
    assert _pins(pip_section) == _pins(project["dependencies"])
    assert "python=3.11" in env["dependencies"]
    assert any(line.startswith("-e .") for line in pip_section)
