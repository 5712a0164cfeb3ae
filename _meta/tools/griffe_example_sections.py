"""Griffe extension for the API reference: read ``Example:`` as an examples section.

The Google docstring style accepts ``Example:`` and ``Examples:``. Griffe treats only the
plural as an examples section; the singular becomes an admonition whose ``>>>`` lines
render as prose (and whose ``[...]`` outputs look like broken cross-references). This
extension renames the singular heading before the docstrings are parsed, so both render
as the same highlighted example. It is loaded by ``mkdocs.yml`` (mkdocstrings' python
handler, ``extensions``) and changes nothing in the code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(?P<indent>[ \t]*)Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename each ``Example:`` section heading to ``Examples:``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite the docstring of each loaded object (see :class:`griffe.Extension`)."""
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\g<indent>Examples:", obj.docstring.value)
