"""Griffe extension for the API reference: Google-style docstrings as the code writes them.

Two rewrites happen before the docstrings are parsed; the code itself is not changed:

* ``Example:`` becomes ``Examples:``. The Google style accepts both, but griffe treats only
  the plural as an examples section; the singular would become an admonition whose
  ``>>>`` lines render as prose (and whose ``[...]`` outputs look like broken
  cross-references).
* Sphinx roles such as ``:class:`~prismq.queue.errors.QueueBusyError``` become code spans
  (``QueueBusyError``; without ``~``, the full dotted name), instead of showing the raw role.

Loaded by ``mkdocs.yml`` (mkdocstrings' python handler, ``extensions``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(?P<indent>[ \t]*)Example:[ \t]*$", re.MULTILINE)
_ROLE = re.compile(
    r":(?:py:)?(?:func|class|data|meth|attr|mod|exc|obj|const):`(?P<tilde>~?)(?P<target>[^`]+)`"
)


def _role_to_code(match: re.Match[str]) -> str:
    target = match["target"].strip()
    shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
    return f"``{shown}``"


def rewrite(text: str) -> str:
    """Apply both rewrites to one docstring.

    Args:
        text: The docstring as written.

    Returns:
        The docstring as griffe should parse it.

    Examples:
        >>> rewrite("Raises :class:`~a.b.Error`.\\n\\nExample:\\n    >>> 1\\n    1")
        'Raises ``Error``.\\n\\nExamples:\\n    >>> 1\\n    1'
    """
    return _ROLE.sub(_role_to_code, _SINGULAR.sub(r"\g<indent>Examples:", text))


class GoogleDocstrings(griffe.Extension):
    """Rewrite each loaded docstring with :func:`rewrite`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite the docstring of each loaded object (see ``griffe.Extension``)."""
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
