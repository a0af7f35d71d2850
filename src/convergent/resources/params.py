"""Parameters from plain data: conversion with the words of a policy, and strings no
kind may take (a NUL byte). ``base`` re-exports these; kinds need not import this."""

from __future__ import annotations

import typing
from typing import Any, TypeVar

import msgspec

from convergent.errors import ParamError

__all__ = [
    "CREDENTIALS",
    "CREDENTIAL_MAPS",
    "URL_FIELDS",
    "check_env",
    "convert_params",
    "holds_credentials",
    "is_credential",
    "param_fields",
    "reject_nul",
]

S = TypeVar("S", bound=msgspec.Struct)

#: (kind, parameter) whose whole value is a credential; ``*`` matches every kind.
CREDENTIALS = frozenset({("user", "password_hash"), ("*", "password")})
#: Mappings whose values may be credentials (their keys are not).
CREDENTIAL_MAPS = frozenset({"headers", "env", "environment"})
#: URLs, whose user, password and query may be credentials.
URL_FIELDS = frozenset({"url", "checksum_url", "source_url"})
_CREDENTIAL_WORDS = ("password", "passwd", "secret", "token", "apikey", "api_key", "private_key")


def is_credential(kind: str, name: str) -> bool:
    """Whether the parameter ``name`` of ``kind`` holds a credential by its nature
    (``user``'s ``password_hash``; any name that says password, secret, token or key):
    never shown (web/params.py) nor kept outside the policy (policy/cache.py)."""
    if (kind, name) in CREDENTIALS or ("*", name) in CREDENTIALS:
        return True
    lowered = name.lower()
    return any(word in lowered for word in _CREDENTIAL_WORDS)


# (kind, Params type) -> (parameters any value of which is a credential, URL parameters)
_credential_fields: dict[tuple[str, type], tuple[tuple[str, ...], tuple[str, ...]]] = {}


def holds_credentials(kind: str, params: msgspec.Struct) -> bool:
    """Whether ``params`` gives a credential parameter a value, a value to one of the
    mappings of :data:`CREDENTIAL_MAPS`, or a URL with a user or a query (the names are
    looked at once per kind)."""
    shape = (kind, type(params))
    names = _credential_fields.get(shape)
    if names is None:
        fields = params.__struct_fields__
        whole = tuple(n for n in fields if is_credential(kind, n) or n in CREDENTIAL_MAPS)
        urls = tuple(n for n in fields if n in URL_FIELDS and n not in whole)
        names = _credential_fields[shape] = (whole, urls)
    if any(getattr(params, name) for name in names[0]):
        return True
    for name in names[1]:
        value = getattr(params, name)
        if isinstance(value, str) and ("@" in value or "?" in value):
            return True
    return False


def convert_params(params_type: type[S], fields: dict[str, Any]) -> S:
    """Build a Params struct from plain data; msgspec's error becomes a ParamError.

    The ParamError's ``field`` is the path of the offending value (``mode``, ``cmd[1]``,
    ``ifnewer.target``; ``[...]`` stands for a mapping key) and its message uses the
    words a policy author knows: ``expected str or list, got int``, ``must be one of
    'exists', 'absent', got 'gone'``, ``unknown parameter``, ``required parameter is
    missing``.
    """
    try:
        return msgspec.convert(fields, params_type, strict=True)
    except msgspec.ValidationError as exc:
        import re
        import types

        text = str(exc)
        message, sep, where = text.rpartition(" - at `$")
        if not sep:
            message, where = text, ""
        path = where.rstrip("`").removeprefix(".")
        match = re.fullmatch(r"Object (contains unknown|missing required) field `(.+)`", message)
        if match:
            path = f"{path}.{match.group(2)}" if path else match.group(2)
            if match.group(1) == "contains unknown":
                message = "unknown parameter"
            else:
                message = "required parameter is missing"
        elif match := re.fullmatch(r"Expected `(.+)`, got `(.+)`", message):
            words = {"object": "mapping", "array": "list"}
            expected = " or ".join(words.get(t, t) for t in match.group(1).split(" | "))
            message = f"expected {expected}, got {words.get(match.group(2), match.group(2))}"
        elif match := re.fullmatch(r"Invalid enum value (.+)", message):
            try:
                hint = typing.get_type_hints(params_type).get(path)
            except (NameError, TypeError):
                hint = None
            union = typing.get_origin(hint) in (typing.Union, types.UnionType)
            allowed = ", ".join(
                repr(value)
                for option in (typing.get_args(hint) if union else (hint,))
                if typing.get_origin(option) is typing.Literal
                for value in typing.get_args(option)
            )
            if allowed:
                message = f"must be one of {allowed}, got {match.group(1)}"
            else:
                message = f"invalid value {match.group(1)}"
        else:
            message = message.replace("`", "")
            message = message[:1].lower() + message[1:]
        raise ParamError(path or None, message) from exc


_NUL = "contains a NUL byte (\\0); remove it"


def check_env(env: dict[str, str] | None) -> None:
    """Raise ParamError for a name ``env`` (a command's variables) may not hold: empty,
    with ``=``, or the one convergent sets itself in every command's environment (the
    token by which it finds its own commands again: a policy's value would be replaced)."""
    from convergent.host.children import TOKEN

    for key in env or {}:
        if not key or "=" in key:
            raise ParamError("env", f"{key!r} is not a valid environment variable name")
        if key == TOKEN:
            raise ParamError(
                "env",
                f"{TOKEN} is set by convergent in every command's environment (a token "
                "of its own); give the variable another name",
            )


def reject_nul(params: msgspec.Struct) -> None:
    """Raise ParamError when a string anywhere in ``params`` holds a NUL byte.

    No path, argument, name or environment variable can hold one (the kernel's strings
    end at it), so it is refused when the resource is built, by ``check`` as by ``run``,
    instead of failing half way through a run. Every kind gets it: it walks nested
    structs, lists and mappings (keys and values); the error names the field
    (``cmd[1]``, ``env.HOME``, ``ifnewer.target``).
    """
    try:
        if b"\\u0000" not in msgspec.json.encode(params):
            return  # the common case, in C: no NUL anywhere
    except Exception:  # a type JSON cannot hold: look at every value
        pass
    found = _find_nul(params, "")
    if found is not None:
        field, message = found
        raise ParamError(field or None, message)


def _find_nul(value: object, path: str) -> tuple[str, str] | None:
    if isinstance(value, str):
        return (path, _NUL) if "\0" in value else None
    if isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            found = _find_nul(getattr(value, name), f"{path}.{name}" if path else name)
            if found is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and "\0" in key:
                return path, f"a key {_NUL}"
            plain = isinstance(key, str) and key.isprintable() and not set(key) & set(".[]")
            found = _find_nul(item, f"{path}.{key}" if plain else f"{path}[...]")
            if found is not None:
                return found
    elif isinstance(value, list | tuple | set | frozenset):
        for i, item in enumerate(value):
            found = _find_nul(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def param_fields(params_type: type[msgspec.Struct]) -> tuple[str, ...]:
    """The parameter names of a kind (for "did you mean" and the reference docs)."""
    return params_type.__struct_fields__
