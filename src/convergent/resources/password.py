"""``password``: a random secret, generated once and kept in the state database.

The secret is generated with :mod:`secrets` the first time the resource is applied and
stored under its ``kind[name]`` in the host's state database (mode 0600). Later runs
reuse it; it changes only when the parameters no longer fit it (another length or
character set) or when a changed upstream notifies it (``refresh`` regenerates it).

It is sent downstream as the secret output ``password``
(``recv: {content: password[db].password}``). The value never appears in a Change, a
log line, an error or a repr.

Without a state database (noop on a host that has none yet) ``check`` reports
"would generate", and ``apply`` fails: there would be nowhere to keep the secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from convergent.errors import ParamError, ResourceError
from convergent.resources.abilities import Output
from convergent.resources.base import Change, Context, Params, Resource

if TYPE_CHECKING:
    from convergent.resources.predicted import Effects, View

__all__ = ["CHARSETS", "Password", "PasswordParams"]

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_DIGITS = "0123456789"
CHARSETS: Mapping[str, str] = {
    "alnum": _LETTERS + _DIGITS,
    "ascii": _LETTERS + _DIGITS + "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "hex": _DIGITS + "abcdef",
}
_MIN_LENGTH = 8
_MAX_LENGTH = 4096


class PasswordParams(Params, frozen=True):
    """Parameters of ``password``. The secret is kept in the state database (mode 0600).

    length: number of characters, at least 8
    charset: characters to draw from: alnum (letters, digits), ascii (printable, no space), hex
    chars: a custom set of characters to draw from instead of ``charset`` (2 or more)
    """

    length: int = 32
    charset: Literal["alnum", "ascii", "hex"] = "alnum"
    chars: str | None = None


class Password(Resource[PasswordParams], kind="password"):
    """Generates a secret once, keeps it, sends it as ``password``; refresh regenerates it."""

    sends: ClassVar[Mapping[str, Output]] = {"password": Output(str, secret=True)}

    _secret: str | None = None  # the stored secret once check or apply has seen it

    def validate(self) -> None:
        p = self.params
        if not _MIN_LENGTH <= p.length <= _MAX_LENGTH:
            raise ParamError(
                "length", f"must be between {_MIN_LENGTH} and {_MAX_LENGTH}, not {p.length}"
            )
        if p.chars is not None:
            if len(set(p.chars)) < 2:
                raise ParamError("chars", "give at least 2 different characters to draw from")
            if not p.chars.isprintable():
                raise ParamError("chars", "only printable characters (no newline, tab, ...)")

    @property
    def alphabet(self) -> str:
        """The characters the secret is drawn from (duplicates in ``chars`` removed)."""
        if self.params.chars is not None:
            return "".join(dict.fromkeys(self.params.chars))
        return CHARSETS[self.params.charset]

    # -- the contract -----------------------------------------------------------------

    async def check(self, ctx: Context) -> Change | None:
        """None when a stored secret fits the parameters; the secret itself is never shown."""
        if ctx.state is None:
            self._secret = None
            return Change("would generate")
        stored = ctx.state.get_secret(self.id)
        if stored is not None and self._fits(stored):
            self._secret = stored
            return None
        self._secret = None
        if stored is None:
            return Change("generated")
        return Change("regenerated (the stored one does not fit length/charset)")

    async def apply(self, ctx: Context, change: Change) -> str | None:
        self._generate(ctx)
        return None

    async def refresh(self, ctx: Context) -> str | None:
        """A changed upstream notified us: replace the secret with a new one."""
        self._generate(ctx)
        return "regenerated"

    # -- Sends ------------------------------------------------------------------------

    def outputs(self) -> Mapping[str, Any]:
        return {} if self._secret is None else {"password": self._secret}

    # -- under noop (the Predicts ability) ---------------------------------------------

    def predict(self, ctx: Context, change: Change | None, view: View) -> Effects:
        """Once applied (or refreshed) it sends a new secret: a stand-in that no report
        shows, which differs from anything a receiver holds now."""
        from convergent.resources.predicted import Effects

        return Effects(outputs={"password": view.new_secret(self.id)})

    async def predict_refresh(self, ctx: Context, view: View) -> str | None:
        return "would regenerate"

    # -- helpers ----------------------------------------------------------------------

    def _fits(self, value: str) -> bool:
        alphabet = set(self.alphabet)
        return len(value) == self.params.length and all(c in alphabet for c in value)

    def _generate(self, ctx: Context) -> None:
        if ctx.state is None:
            raise ResourceError(
                self.id,
                "a password needs the state database to keep its secret, and this run has "
                "none; run it with a state directory",
            )
        import secrets

        alphabet = self.alphabet
        value = "".join(secrets.choice(alphabet) for _ in range(self.params.length))
        ctx.state.set_secret(self.id, value)
        self._secret = value
