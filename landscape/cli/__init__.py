"""The ``python -m landscape`` subcommands; the only part of :mod:`landscape` that imports bnext."""
