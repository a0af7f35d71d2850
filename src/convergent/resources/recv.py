"""Send/recv: outputs of one resource become parameters of another, along an edge.

An edge ``a -> b`` with ``recv: (("content", "password"),)`` makes ``a``'s output
``password`` the value of ``b``'s parameter ``content`` (in a policy:
``recv: {content: password[db].password}`` on ``b``). The sender declares its outputs
with their types (``Sends.sends``); :func:`recv_problem` checks one pair before anything
runs (the policy loader reports it at its ``file:line:col``, the engine raises
GraphError for a graph built in code).

At run time (the engine's workers) the receiver's parameters are its declared ones with
the received values put in (``msgspec.structs.replace``, then ``validate()`` again),
just before each check. Values of secret outputs never reach a report: see
``engine/redact.py``.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from convergent.errors import GraphError, ParamError, ResourceError
from convergent.graph.core import Graph
from convergent.resources.abilities import Output
from convergent.resources.base import Params, Resource

__all__ = [
    "MISSING",
    "Binding",
    "accepts",
    "bindings",
    "convert",
    "param_type",
    "put",
    "recv_problem",
    "sends",
    "type_text",
]


class _Missing:
    """The value of an output the sender has not produced yet."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Binding(msgspec.Struct, frozen=True):
    """``receiver.param`` takes ``sender.output`` (identities are members' ``kind[name]``)."""

    receiver: str
    param: str
    sender: str
    output: str
    secret: bool = False

    @property
    def source(self) -> str:
        """``password[db].password``: how a policy names the output."""
        return f"{self.sender}.{self.output}"


def sends(resource: object) -> Mapping[str, Output]:
    """The outputs a resource's kind declares (empty for a kind that sends nothing)."""
    declared = getattr(type(resource), "sends", None)
    return declared if isinstance(declared, Mapping) else {}


def param_type(params_type: type[Params], param: str) -> Any:
    """The type annotation of ``param`` (resolved), or MISSING when there is no such one."""
    hints = _HINTS.get(params_type)
    if hints is None:
        hints = _HINTS[params_type] = typing.get_type_hints(params_type, include_extras=True)
    return hints.get(param, MISSING)


_HINTS: dict[type[Params], dict[str, Any]] = {}


def recv_problem(
    sender: Resource[Any], output: str, receiver: Resource[Any], param: str
) -> tuple[str, str] | None:
    """What is wrong with ``receiver.param`` taking ``sender.output``, or None.

    Returns ``(where, message)``: ``where`` is ``"output"``, ``"param"`` or ``"type"``,
    so the loader can point at the right part of what was written.
    """
    declared = sends(sender)
    if output not in declared:
        if not declared:
            return "output", f"{sender.id} sends nothing ({sender.kind} has no outputs)"
        return (
            "output",
            f"{sender.id} has no output '{output}'{_close(output, declared)}; "
            f"{sender.kind} sends: {', '.join(declared)}",
        )
    hint = param_type(receiver.params_type, param)
    if hint is MISSING:
        fields = receiver.params_type.__struct_fields__
        return (
            "param",
            f"{receiver.id} has no parameter '{param}'{_close(param, fields)}; "
            f"{receiver.kind} takes: {', '.join(fields) or 'none'}",
        )
    out_type = declared[output].type
    if not accepts(hint, out_type):
        return (
            "type",
            f"{sender.id}.{output} is {type_text(out_type)}, "
            f"{receiver.id}.{param} takes {type_text(hint)}",
        )
    return None


def accepts(hint: Any, out_type: type) -> bool:
    """Whether a parameter annotated ``hint`` takes any value of type ``out_type``."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return accepts(typing.get_args(hint)[0], out_type)
    if hint is Any or hint is object:
        return True
    if origin is typing.Union or _is_union(hint):
        return any(accepts(arg, out_type) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return False  # a fixed set of values: no output type guarantees one of them
    if origin is not None:
        hint = origin
    if not isinstance(hint, type):
        return False
    if out_type is bool or hint is bool:
        return out_type is hint
    if hint is float:
        return out_type in (int, float)
    return issubclass(out_type, hint)


def _is_union(hint: Any) -> bool:
    import types

    return isinstance(hint, types.UnionType)


def type_text(hint: Any) -> str:
    """``str``, ``str or null``, ``'exists' or 'absent'``: a type as a policy author reads it."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return type_text(typing.get_args(hint)[0])
    if origin is typing.Union or _is_union(hint):
        return " or ".join(type_text(arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return " or ".join(repr(value) for value in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin is not None:
        hint = origin
    words: dict[Any, str] = {list: "list", dict: "mapping", tuple: "list"}
    if isinstance(hint, type):
        return words.get(hint, hint.__name__)
    return str(hint)


def _close(word: str, candidates: Iterable[str]) -> str:
    import difflib

    found = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean '{found[0]}'?)" if found else ""


def bindings(graph: Graph[Resource[Any]]) -> dict[str, tuple[Binding, ...]]:
    """Every receiver's bindings, read from the ``recv`` of the edges of ``graph``.

    Raises GraphError when a pair is wrong (see :func:`recv_problem`) or a parameter is
    received from two senders.
    """
    found: dict[str, dict[str, Binding]] = {}
    for edge in graph.edges():
        if not edge.recv:
            continue
        sender, receiver = graph[edge.source], graph[edge.target]
        mine = found.setdefault(edge.target, {})
        for param, output in edge.recv:
            problem = recv_problem(sender, output, receiver, param)
            if problem is not None:
                raise GraphError(f"{receiver.id}: recv {param}: {problem[1]}")
            other = mine.get(param)
            if other is not None:
                raise GraphError(
                    f"{receiver.id}: recv {param}: received from both {other.source} and "
                    f"{sender.id}.{output}; a parameter receives one output"
                )
            secret = sends(sender)[output].secret
            mine[param] = Binding(receiver.id, param, sender.id, output, secret)
    return {rid: tuple(pairs[p] for p in sorted(pairs)) for rid, pairs in found.items()}


def convert(receiver: Resource[Any], binding: Binding, value: Any) -> Any:
    """``value`` as the type of ``receiver``'s parameter ``binding.param`` (the sender's kind
    declared its type; this catches a kind that sends something else).

    Raises ResourceError naming both sides when it is not of that type.
    """
    hint = param_type(receiver.params_type, binding.param)
    try:
        return msgspec.convert(value, hint, strict=True)
    except msgspec.ValidationError:
        raise ResourceError(
            receiver.id,
            f"recv {binding.param}: {binding.source} sent a {type(value).__name__}, "
            f"{receiver.id}.{binding.param} takes {type_text(hint)}",
        ) from None


def put(
    receiver: Resource[Any], declared: Params, values: Mapping[str, Any], recv: Iterable[Binding]
) -> None:
    """Make ``receiver``'s parameters its ``declared`` ones with the received ``values``
    put in, checked like written ones (no NUL byte, then ``validate()``).

    Raises ResourceError naming the parameters and where they came from when the receiver
    refuses a value.
    """
    from convergent.resources.params import reject_nul

    receiver.params = msgspec.structs.replace(declared, **values)
    try:
        reject_nul(receiver.params)
        receiver.validate()
    except ParamError as exc:
        field = f"{exc.field}: " if exc.field else ""
        sources = ", ".join(f"{b.param} from {b.source}" for b in recv)
        raise ResourceError(
            receiver.id, f"with the received values ({sources}): {field}{exc.message}"
        ) from None
