"""Compute a small surface with the library (run as a subprocess by the kill/distributed tests).

Usage: python _compute_script.py OUT.h5 [DELAY_SECONDS]. Under RANK/WORLD_SIZE env variables it
joins a gloo process group, as ``torchrun`` would set up.
"""

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _models import make_data, make_model  # noqa: E402

from landscape.directions import random_directions  # noqa: E402
from landscape.surface import compute_surface  # noqa: E402


def main() -> None:
    out = sys.argv[1]
    delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    torch.set_num_threads(1)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        torch.distributed.init_process_group("gloo")
    model = make_model("cnn")
    data = {"train": make_data(40, seed=1), "test": make_data(20, seed=2)}
    directions = random_directions(model, seed=0)

    def slow(m):
        print("point", flush=True)
        time.sleep(delay)
        return m

    compute_surface(
        out,
        model,
        directions,
        data,
        "-1:1:6",
        "-0.5:1:5",
        forward_factory=slow,
        progress=False,
        metadata={"model": {"name": "tiny-cnn"}},
    )
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    print("finished", flush=True)


if __name__ == "__main__":
    main()
