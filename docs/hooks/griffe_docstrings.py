"""A griffe extension for the API reference, so that mlp_xp's docstrings render as they read; the
Python files are not touched.

- Their doctest sections are titled "Example:", as Google's style guide and Sphinx's napoleon allow,
  where griffe's Google parser knows only "Examples:" (it would render "Example:" as an admonition
  of Markdown text, and doctest output such as ``[0.1, 0.05]`` would read as links).
- Their cross-references are Sphinx roles (``:class:`~mlp_xp.ShapeError```), which Markdown would
  show as written: they become inline code, the short name where Sphinx would show it
  (``ShapeError``), the full one otherwise."""

from __future__ import annotations

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`(~?)([^`<>]+)`")


def _role(match):
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class SphinxHabits(griffe.Extension):
    """Treat a Google-style "Example:" section as "Examples:", and Sphinx roles as inline code."""

    def on_object(self, *, obj, **kwargs):
        docstring = obj.docstring
        if docstring is None:
            return
        value = _EXAMPLE.sub(r"\1Examples:", docstring.value)
        docstring.value = _ROLE.sub(_role, value)
