"""What every ``python -m bnext.*`` command line shares: ``--threads`` and progress on stderr.

Rules of the workbench's command lines (tests/test_cli.py checks them for every ``__main__``):

- ``--help`` imports neither torch nor numba: argument parsing needs only the standard library and
  torch-free modules (``bnext.quant.spec``, ``bnext.train.config``); heavy imports go inside the
  command functions.
- A command that can run longer than a few seconds talks: a tqdm bar per pass over data or per
  model, on stderr, so stdout stays the result (tables, JSON) and can be piped.
- ``--threads N`` where torch runs (1 is fastest for small models on a busy machine).
- Parsers are :class:`ArgumentParser`: a mistyped option or subcommand gets one line that names it
  and the closest valid one ("did you mean --checkpoint?"), not the whole usage; help is plain text
  (the reST markup of docstrings is removed).
"""

from __future__ import annotations

import argparse
import contextvars
import difflib
import re
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

# ``:func:`~a.b``` -> ``b``, ``:mod:`a.b``` -> ``a.b``, ````x```` -> ``x``, ``*x*`` stays
_ROLE = re.compile(r":[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_TILDE_TAIL = re.compile(r"^~?(?:[\w]+\.)+(\w+)$")
_LITERAL = re.compile(r"``([^`]+)``")


def plain_text(text: str) -> str:
    """Docstring markup (Sphinx roles, double backticks) as plain text for ``--help``."""

    def role(m: re.Match[str]) -> str:
        target = m.group(1)
        return target.rsplit(".", 1)[-1] if m.group(0).split("`", 1)[1].startswith("~") else target

    return _LITERAL.sub(r"\1", _ROLE.sub(role, text))


class _PlainText:
    """Formatter mix-in: descriptions, epilogs and option help without reST markup."""

    def _format_text(self, text: str) -> str:  # type: ignore[override]
        return super()._format_text(plain_text(text))  # type: ignore[misc]

    def _expand_help(self, action: argparse.Action) -> str:  # type: ignore[override]
        return plain_text(super()._expand_help(action))  # type: ignore[misc]


#: the command line being parsed (set by the outermost parser, read by a subparser's error)
_ARGV: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("_ARGV", default=None)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with plain-text help and errors that name the mistake in one line.

    ``--chekpoint x`` -> ``error: unrecognized argument --chekpoint (did you mean --checkpoint?)``,
    then a pointer to ``--help``; the usage is printed only when it is short (3 lines at most).
    Subparsers made by :meth:`add_subparsers` are of this class too.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        fc = kwargs.get("formatter_class", argparse.HelpFormatter)
        if not issubclass(fc, _PlainText):  # type: ignore[arg-type]
            kwargs["formatter_class"] = type(f"Plain{fc.__name__}", (_PlainText, fc), {})  # type: ignore[arg-type]
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _option_strings(self) -> list[str]:
        """Every ``--long`` option of this parser and its subparsers (suggestions come from these)."""
        found: list[str] = []
        for action in self._actions:
            found += [o for o in action.option_strings if o.startswith("--")]
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    if isinstance(sub, ArgumentParser):
                        found += sub._option_strings()
        return sorted(set(found))

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def, override]
        token = _ARGV.set(list(sys.argv[1:] if args is None else args)) if _ARGV.get() is None else None
        try:
            return super().parse_known_args(args, namespace)
        finally:
            if token is not None:
                _ARGV.reset(token)

    def _suggest(self, message: str) -> str:
        if not message.startswith("unrecognized arguments"):
            # a mistyped option often shows first as a missing required one: name the typo too
            known = set(self._option_strings())
            typos = [w.split("=", 1)[0] for w in (_ARGV.get() or []) if w.startswith("--")]
            typos = [w for w in typos if w not in known and w != "--help"]
            if typos:
                return f"{self._suggest('unrecognized arguments: ' + ' '.join(typos))}; {message}"
        m = re.match(r"unrecognized arguments: (.*)", message)
        if m:
            words = [w.split("=", 1)[0] for w in m.group(1).split() if w.startswith("-")]
            parts = []
            for w in words or m.group(1).split()[:1]:
                close = difflib.get_close_matches(w, self._option_strings(), n=1, cutoff=0.6)
                parts.append(f"{w} (did you mean {close[0]}?)" if close else w)
            noun = "argument" if len(parts) == 1 else "arguments"
            return f"unrecognized {noun}: {', '.join(parts)}"
        m = re.match(r"argument (\S+): invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = [c.strip(" '") for c in m.group(3).split(",")]
            close = difflib.get_close_matches(m.group(2), choices, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]}?" if close else f"choose from {', '.join(choices)}"
            return f"argument {m.group(1)}: invalid choice {m.group(2)!r} ({hint})"
        return message

    def error(self, message: str) -> None:  # type: ignore[override]
        usage = self.format_usage()
        if usage.count("\n") <= 3:
            self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {self._suggest(message)}\n"
                     f"run '{self.prog} --help' for the options\n")


def add_threads_argument(ap: argparse.ArgumentParser, default: int | None = None) -> None:
    """``--threads N``: torch intra-op threads for the command (default: torch's own choice)."""
    ap.add_argument("--threads", type=int, default=default, metavar="N",
                    help="compute threads of torch (and numba)"
                         + (f" (default {default})" if default else " (default: torch's, all cores)")
                         + "; 1 is often fastest for small models on a busy machine")


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` unless ``threads`` is None; a value below 1 is a ValueError."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "batch") -> Iterator[T]:
    """Iterate ``iterable`` with a tqdm bar on stderr, opened when the iteration starts.

    ``total`` caps the shown total at a loop's own limit (e.g. ``--calib-batches``). A loop that never
    iterates prints nothing; one that stops early closes its bar when the generator is dropped.
    """
    from tqdm import tqdm

    if total is not None and hasattr(iterable, "__len__"):
        total = min(total, len(iterable))  # type: ignore[arg-type]
    with tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True) as bar:
        yield from bar


def note(message: str) -> None:
    """One progress line on stderr (a step that has no loop to show)."""
    print(message, file=sys.stderr, flush=True)
