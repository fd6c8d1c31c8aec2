"""An action's `params`: argv elements with `{arg}` placeholders, and how they are filled.

Each element of `params` is one argv element, and stays one: a value fills its placeholder
as text inside that element, never split on spaces and never read by a shell, so no value
can add, remove or reorder elements. `{{` and `}}` are literal braces. The one exception
to "one element each" is a boolean: an element that is exactly `{flag_arg}` renders the
argument's flag when true and disappears when false.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping

_PIECE = re.compile(r"\{\{|\}\}|\{([a-z][a-z0-9_]*)\}|[{}]")


class TemplateError(ValueError):
    """A `params` element cannot be read."""


@dataclasses.dataclass(frozen=True, slots=True)
class Element:
    """One argv element: literal text and argument names, in order."""

    parts: tuple[str | tuple[str], ...]

    @property
    def names(self) -> list[str]:
        return [part[0] for part in self.parts if isinstance(part, tuple)]

    @property
    def alone(self) -> str | None:
        """The argument's name when the element is that one placeholder and nothing else."""
        if len(self.parts) == 1 and isinstance(self.parts[0], tuple):
            return self.parts[0][0]
        return None

    def fill(self, text_of: Callable[[str], str]) -> str:
        return "".join(p if isinstance(p, str) else text_of(p[0]) for p in self.parts)


def parse(element: str, where: str) -> Element:
    parts: list[str | tuple[str]] = []
    position = 0
    for match in _PIECE.finditer(element):
        if match.start() > position:
            parts.append(element[position : match.start()])
        position = match.end()
        piece = match.group(0)
        if piece in ("{{", "}}"):
            parts.append(piece[0])
        elif match.group(1) is not None:
            parts.append((match.group(1),))
        else:
            raise TemplateError(
                f"{where}: {element!r}: a lone {piece!r} (write {piece * 2} for the character, "
                "{name} for an argument)"
            )
    if position < len(element):
        parts.append(element[position:])
    return Element(tuple(parts))


def render(elements: tuple[Element, ...], texts: Mapping[str, str | None]) -> list[str]:
    """argv after the command: each element filled; those that are a false boolean dropped."""
    argv = []
    for element in elements:
        alone = element.alone
        if alone is not None and texts[alone] is None:
            continue
        argv.append(element.fill(lambda name: texts[name] or ""))
    return argv
