"""A Griffe extension for the API reference (``mkdocs.yml``: the python handler's ``extensions``): the package's
docstrings cite code with Sphinx roles (``:class:`~cliplens.maps.base.MapMethod```, ``:func:`.points_from_map```),
which Markdown shows as they are typed. Each role becomes code, linked to the object's section of the API reference
when the object is documented there (an *optional* cross-reference: a target the site does not document, such as
an undocumented constant or a relative name, is shown as code without a link and without a warning).
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

#: ``:role:`target``` or ``:role:`~target```, the roles the docstrings use
ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|data|attr|exc|obj|const):`(~?)([^`<>]+?)`")


def rewrite(text: str) -> str:
    """``text`` with every Sphinx role replaced by code (an optional cross-reference for full dotted names)."""

    def one(m: re.Match[str]) -> str:
        short, target = m.group(2) == "~", m.group(3).strip()
        shown = target.rsplit(".", 1)[-1] if short else target.lstrip(".")
        if target.startswith("cliplens."):
            return (f'<autoref identifier="{html.escape(target)}" optional><code>{html.escape(shown)}</code>'
                    "</autoref>")
        return f"`{shown}`"

    return ROLE.sub(one, text)


class SphinxRoles(griffe.Extension):
    """Rewrites the roles of every docstring once the object tree is complete."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
