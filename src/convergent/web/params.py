"""A resource's parameters as the web view shows them: never a secret.

- A parameter that *receives* a value (``recv``) shows where it comes from
  (``<received from password[db].password>``), never the value, whatever the sender.
- Parameters that hold credentials by their nature are hidden: ``user``'s
  ``password_hash``, the values of ``download``'s ``headers`` and of any ``env``/
  ``environment`` mapping; any parameter whose name says password, secret, token or key;
  a URL loses its user, password and query.
- Every text passes through the run's known secrets (``Secrets.hide``: every stored
  ``password`` and every secret output seen), so a secret written into a policy by hand
  where the engine knows it is hidden as in the reports.
- Long texts are cut at :data:`MAX_TEXT` characters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from convergent.resources.params import CREDENTIAL_MAPS, CREDENTIALS, URL_FIELDS, is_credential

__all__ = ["HIDDEN", "MAX_TEXT", "SECRET", "shown_params"]

SECRET = "<secret>"
MAX_TEXT = 4096
#: (kind, parameter) whose whole value is hidden; ``*`` matches every kind.
HIDDEN = CREDENTIALS


def _url(text: str) -> str:
    """``text`` without user, password, query and fragment (they may hold tokens)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        return SECRET
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _plain(value: Any, hide: Callable[[str], str]) -> Any:
    """``value`` as JSON-able data, every text through ``hide`` and cut."""
    if isinstance(value, str):
        text = hide(value)
        if len(text) > MAX_TEXT:
            text = text[:MAX_TEXT] + f"... ({len(value) - MAX_TEXT} more characters)"
        return text
    if isinstance(value, Mapping):
        return {hide(str(k)): _plain(v, hide) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v, hide) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return hide(str(value))


def shown_params(
    kind: str,
    params: msgspec.Struct,
    received: Mapping[str, str],
    hide: Callable[[str], str],
) -> dict[str, Any]:
    """``params`` as the page shows them. ``received``: parameter -> ``kind[name].output``
    it receives; ``hide``: the run's known secrets hidden in a text. Parameters left at
    their default are left out."""
    shown: dict[str, Any] = {}
    defaults = {f.name: f.default for f in msgspec.structs.fields(params)}
    for field in params.__struct_fields__:
        value = getattr(params, field)
        if field in received:
            shown[field] = f"<received from {hide(received[field])}>"
            continue
        if value == defaults.get(field, msgspec.NODEFAULT):
            continue
        if is_credential(kind, field):
            shown[field] = SECRET if value else value
        elif field in CREDENTIAL_MAPS and isinstance(value, Mapping):
            shown[field] = {hide(str(k)): SECRET for k in value}
        elif field in URL_FIELDS and isinstance(value, str):
            shown[field] = _url(hide(value))
        else:
            shown[field] = _plain(value, hide)
    return shown
