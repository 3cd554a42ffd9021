"""MkDocs hook: the docstrings' reST roles read as code in the API reference.

The docstrings cite other objects the Sphinx way (``:mod:`~landscape.store```, ``:func:`read_surface```);
mkdocstrings renders those as the literal role followed by the code. This hook drops the role and, as
Sphinx does for a leading ``~``, keeps only the last component of the name.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:py:)?(?:mod|func|class|meth|attr|data|exc|obj|const|term|ref):<code>(~?)([^<]*)</code>")


def strip_roles(html: str) -> str:
    """``:mod:<code>~a.b</code>`` -> ``<code>b</code>``; ``:func:<code>a.f</code>`` -> ``<code>a.f</code>``."""
    return _ROLE.sub(lambda m: f"<code>{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}</code>", html)


def on_page_content(html: str, page, config, files) -> str:
    return strip_roles(html)
