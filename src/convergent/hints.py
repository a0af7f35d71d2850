"""Annotations as types: for a class whose module postpones its annotations (``from
__future__ import annotations``) and that msgspec reads.

msgspec reads a Struct's annotations the first time it decodes one; a string it turns into
a ``typing.ForwardRef``, which compiles it, and the first ``compile()`` in a process costs
~1 ms (it makes the ``ast`` node types; ``eval`` of a string does not). :func:`as_types`,
called right after such a class, puts the types in place of the strings, as
``typing.get_type_hints`` evaluates them: in the class's module, as it is at that point.
A module none of whose Structs' annotations name something defined after them can drop
the ``__future__`` import instead (``resources/fileparams.py``, ``resources/exec.py``).
"""

import sys

__all__ = ["as_types"]


def as_types(cls: type) -> None:
    """Replace ``cls``'s own string annotations by the types they name in its module."""
    space = vars(sys.modules[cls.__module__])
    notes = cls.__dict__["__annotations__"]  # noqa: RUF063  # its own, changed in place
    for name, note in notes.items():
        if isinstance(note, str):
            notes[name] = eval(note, space)  # the module's own annotations
