"""MkDocs hook: the built site must open offline, so no page may load anything from the internet.

A script, stylesheet, image, frame or font referenced by an ``http(s)://`` or protocol-relative URL
is logged as a warning, which ``mkdocs build --strict`` (``make docs``, ``make test``) turns into an
error. Links a reader clicks (``<a href="https://...">``) are fine.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger("mkdocs.hooks.offline")

# <script src=...>, <img src=...>, <iframe src=...>, <link rel="stylesheet|icon|preload" href=...>, CSS url(...)
_LOADS = re.compile(
    r"""<(?:script|img|iframe|source|video|audio|embed)\b[^>]*?\bsrc\s*=\s*["']?((?:https?:)?//[^"'\s>]+)"""
    r"""|<link\b(?=[^>]*\brel\s*=\s*["']?(?:stylesheet|icon|preload|modulepreload))[^>]*?\bhref\s*=\s*["']?((?:https?:)?//[^"'\s>]+)"""
    r"""|url\(\s*["']?((?:https?:)?//[^"')\s]+)""",
    re.I,
)


def external_loads(html: str) -> list[str]:
    """Every URL on another host that ``html`` would load by itself (not links a reader follows)."""
    return [next(g for g in m.groups() if g) for m in _LOADS.finditer(html)]


def on_post_page(output: str, page, config) -> str:
    for url in external_loads(output):
        log.warning("page %s would load %s from the internet (the site must build offline)", page.file.src_uri, url)
    return output
