"""``download``: a file fetched over HTTP(S), verified by its SHA-256 before it is used.

::

    - download: /usr/local/bin/tool
      url: https://example.org/tool-1.2
      sha256: 0f3a...e1
      mode: "0755"

- ``sha256`` pins the content: a file that already has it is never fetched again (no
  request at all; its hash is computed once per inode and modification time, a file of
  8 MiB or more in a thread while the agent goes on, one over ``max_size`` never). Or
  ``checksum_url`` names a checksum file (``sha256sum`` output: ``HEX  NAME`` lines, the
  one for the URL's file name is used, or a single bare hash): it is fetched at each
  check with a conditional request (``If-None-Match``/``If-Modified-Since`` from its last
  answer, within one agent run), so an unchanged checksum file costs a ``304``.
- The body goes to a private temp file (mode 0600, created through
  :mod:`convergent.host.atomic` next to the path, owned as the final file) and is hashed
  as it arrives; only when the hash matches does the temp file get its mode and replace
  the path (fsync, rename). A mismatch, an HTTP error, a body over ``max_size`` or a
  fetch longer than ``timeout`` fails the resource, removes the temp file and leaves the
  old file as it was.
- Its directory must exist (a missing one is an error, never created: manage it with a
  ``file``, which comes first by itself). Without ``mode``/``owner``/``group`` a new
  file gets 0666 & ~umask and the agent's owner, and a replaced one keeps its own (its
  setuid and setgid bits only with its owner and group, or when only the agent could
  have set them). A new owner, group or setuid/setgid bit for a file someone else may
  have written (another user's, or writable by its group or others) comes with a new
  copy fetched, never by chown/chmod of that file in place. A
  symlink or anything but a regular file at the path is refused, never followed. The
  path is watched: a file removed or changed by hand is fetched again (the server is not
  watched: ``meta: {poll: N}`` checks a ``checksum_url`` every N seconds).
- The HTTP client is httpx, imported only when a download is checked; redirects are
  followed (``headers`` are not sent to another scheme, host or port than the URL's),
  certificates checked against certifi's CA bundle, proxy variables of the environment
  not read; each request has a client of its own (nothing stays open between checks).
  The body is asked for as it is (``Accept-Encoding: identity``) and saved, hashed and
  counted against ``max_size`` as sent, never decoded (a server's ``Content-Encoding``
  is kept, as curl keeps it). A local file larger than ``max_size`` is replaced without
  being read. Messages show the URL without its user, password and query (which may
  hold tokens); ``headers`` values are never shown, and a value HTTP cannot carry
  (spaces around it, a non-ASCII or control character) is refused at load.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from convergent.errors import ParamError, ResourceError
from convergent.graph.autoedge import path_uids
from convergent.host import atomic, fs, posix, trust
from convergent.resources import downloadurl
from convergent.resources.base import Change, Context, Params, Resource
from convergent.resources.downloadurl import shown_url
from convergent.resources.fswatch import FsWatcher
from convergent.resources.textfile import absolute, directory_missing

if TYPE_CHECKING:
    import httpx

    from convergent.resources.predicted import Effects, View

__all__ = ["Download", "DownloadChange", "DownloadParams", "shown_url"]

CHUNK = 1 << 16
# An HTTP header name (RFC 9110's token); sets, not regular expressions: cheaper to load.
_TOKEN = frozenset("!#$%&'*+.^_`|~-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_OCTAL = frozenset("01234567")


class DownloadParams(Params, frozen=True):
    """A file fetched over HTTP(S) and verified by its SHA-256.

    url: the http:// or https:// URL to fetch
    path: absolute path of the file (default: the resource name, when it is an absolute path)
    sha256: the content's SHA-256, 64 hex digits (this or checksum_url is required)
    checksum_url: URL of a sha256sum-style checksum file naming the URL's file (instead of sha256)
    mode: permission bits as an octal string of 3 or 4 digits, like "0755"
    owner: user name or numeric uid (default: a new file's is the agent's, a replaced one's kept)
    group: group name or numeric gid (default: as owner)
    timeout: seconds one fetch may take in all (connecting, waiting and reading), default 60
    headers: HTTP headers sent with each request (an Authorization token...), not to
      another host after a redirect; never shown
    max_size: the most bytes accepted, as sent; a larger body fails the fetch (default 1 GiB)
    """

    url: str
    path: str | None = None
    sha256: str | None = None
    checksum_url: str | None = None
    mode: str | None = None
    owner: str | None = None
    group: str | None = None
    timeout: float = 60.0
    headers: dict[str, str] = {}
    max_size: int = 1 << 30


def _ids(uid: int, gid: int) -> tuple[int | None, int | None]:
    """A predicted owner and group: None (as on disk, or not known) for -1."""
    return (None if uid == -1 else uid), (None if gid == -1 else gid)


class DownloadChange(Change):
    """``action`` fetch (with the ``expected`` hash) or meta (mode/owner only)."""

    def __init__(
        self,
        summary: str,
        action: Literal["fetch", "meta"],
        expected: str,
        mode: int | None = None,
        uid: int = -1,
        gid: int = -1,
    ) -> None:
        super().__init__(summary)
        self.action = action
        self.expected = expected
        self.mode = mode
        self.uid = uid
        self.gid = gid


class Download(Resource[DownloadParams], kind="download"):
    """See the module docstring; parameters are documented on :class:`DownloadParams`."""

    #: What ``convergent destroy`` makes of it (the ``Destroyable`` ability).
    absent_state: ClassVar[str] = "the file is removed (as `file` removes it: as file[PATH])"
    destroy_default: ClassVar[str] = "remove"

    def absent(self, explicit: bool) -> Resource[Any]:
        """Its file removed, by the ``file`` kind's absent form (``file[PATH]``)."""
        from convergent.resources.fileabsent import RemovedPath

        return RemovedPath(self._path, self._path, tree=False, meta=self.meta)

    _path: str
    _mode: int | None
    _uid: int | None
    _gid: int | None
    _hashed: tuple[tuple[int, int, int, int, int], str] | None = None
    _remote: tuple[str | None, str | None, str] | None = None  # etag, last-modified, sha256

    def validate(self) -> None:
        p = self.params
        if p.path is None and not self.name.startswith("/"):
            raise ParamError(
                "path",
                f"give the file's path (the resource name {self.name!r} is not an absolute path)",
            )
        self._path = absolute("path", p.path if p.path is not None else self.name)
        downloadurl.check_url("url", p.url)
        if (p.sha256 is None) == (p.checksum_url is None):
            raise ParamError(
                "sha256",
                "give sha256 (the content's hash) or checksum_url (where to read it), one of them",
            )
        if p.sha256 is not None and not downloadurl.is_sum(p.sha256):
            raise ParamError("sha256", f"{p.sha256!r} is not 64 hex digits (sha256sum's output)")
        if p.checksum_url is not None:
            downloadurl.check_url("checksum_url", p.checksum_url)
        if not 0 < p.timeout < float("inf"):
            raise ParamError("timeout", f"must be a number of seconds > 0, not {p.timeout}")
        if p.max_size < 1:
            raise ParamError("max_size", f"must be a number of bytes > 0, not {p.max_size}")
        for name, value in p.headers.items():
            if not name or not _TOKEN.issuperset(name):
                raise ParamError(
                    f"headers.{name}", "is not an HTTP header name (letters, digits, -)"
                )
            if "\n" in value or "\r" in value:
                raise ParamError(f"headers.{name}", "the value holds a line end; remove it")
            if value != value.strip(" \t") or not all(" " <= c <= "~" or c == "\t" for c in value):
                raise ParamError(
                    f"headers.{name}",
                    "the value starts or ends with a space, or holds a character an HTTP "
                    "header cannot (non-ASCII, a control character); the value is not shown",
                )
        if p.mode is not None and (len(p.mode) not in (3, 4) or not _OCTAL.issuperset(p.mode)):
            raise ParamError(
                "mode", f'expected an octal string like "0755" or "644", got {p.mode!r}'
            )
        self._mode = int(p.mode, 8) if p.mode is not None else None
        self._uid = posix.parse_id("owner", p.owner)
        self._gid = posix.parse_id("group", p.group)

    # -- the contract -----------------------------------------------------------------

    def subscribe(self, ctx: Context) -> Callable[[], None]:
        """Watch the path with the run's shared inotify descriptor."""
        stop = ctx.shared(FsWatcher).watch(self._path, ctx.event)
        ctx.ready()
        return stop

    async def check(self, ctx: Context) -> DownloadChange | None:
        p = self.params
        expected = p.sha256.lower() if p.sha256 is not None else await self._published(ctx)
        try:
            found = await self._local()
        except (fs.PathRefused, posix.NoSuchName) as exc:
            raise self._error(exc) from None
        if found is None:
            if directory_missing(self._path):
                raise ResourceError(
                    self.id,
                    f"the directory of {self._path} does not exist; create it first (a "
                    "`file` with state: directory comes first by itself)",
                )
            return DownloadChange("downloaded", "fetch", expected)
        digest, st = found
        try:
            uid, gid = self._owner_ids()
        except posix.NoSuchName as exc:
            raise self._error(exc) from None
        self._refuse_special(st, self._mode, uid, gid)  # a new copy keeps no bits
        if digest != expected:
            was = f"sha256 {digest[:12]}..."
            if digest.startswith("over "):
                was = f"{digest}: not read"
            return DownloadChange(
                f"content changed ({was} -> {expected[:12]}...)",
                "fetch",
                expected,
            )
        parts: list[str] = []
        mode = self._mode
        if mode is not None and mode != stat.S_IMODE(st.st_mode):
            parts.append(f"mode {stat.S_IMODE(st.st_mode):04o} -> {mode:04o}")
        else:
            mode = None
        if uid not in (-1, st.st_uid):
            parts.append(f"owner {st.st_uid} -> {uid}")
        else:
            uid = -1
        if gid not in (-1, st.st_gid):
            parts.append(f"group {st.st_gid} -> {gid}")
        else:
            gid = -1
        if not parts:
            return None
        self._refuse_special(st, mode, uid, gid)
        why = trust.new_inode_needed(st, mode, uid, gid)
        if why is not None:
            # chown/chmod in place: her descriptors and shared maps (or a name she swaps
            # in meanwhile) would keep writing what gets the new rights
            return DownloadChange(f"{', '.join(parts)} (a new copy: {why})", "fetch", expected)
        return DownloadChange(", ".join(parts), "meta", expected, mode, uid, gid)

    async def apply(self, ctx: Context, change: Change) -> str | None:
        if not isinstance(change, DownloadChange):
            planned = await self.check(ctx)
            if planned is None:
                return None
            change = planned
        try:
            if change.action == "meta":
                with fs.locate(self._path) as at:
                    fd, st = fs.open_node(at, directory=False, change=True)
                    try:
                        why = trust.new_inode_needed(st, change.mode, change.uid, change.gid)
                        if why is not None:
                            raise ResourceError(
                                self.id,
                                f"{self._path} was replaced or made writable since its check "
                                f"({why}); nothing was changed: its next check fetches a new "
                                "copy",
                            )
                        fs.set_meta(fd, change.mode, change.uid, change.gid)
                    finally:
                        os.close(fd)
                return None
            size = await self._fetch(ctx, change.expected)
        except (fs.PathRefused, posix.NoSuchName) as exc:
            raise self._error(exc) from None
        return f"{change.summary}, {size} bytes"

    def _refuse_special(self, st: os.stat_result, mode: int | None, uid: int, gid: int) -> None:
        refused = trust.special_refused(st, mode, uid, gid, content=True)
        if refused is not None:
            raise ResourceError(self.id, trust.not_special(self._path, refused, "give owner"))

    def _error(self, exc: fs.PathRefused | posix.NoSuchName) -> ResourceError:
        if isinstance(exc, posix.NoSuchName):
            field = "owner" if exc.what == "user" else "group"
            return ResourceError(self.id, f"{field}: {exc.message}")
        return ResourceError(self.id, exc.message)

    # -- the local file -----------------------------------------------------------------

    async def _local(self) -> tuple[str, os.stat_result] | None:
        """The SHA-256 and stat of the file at the path; None when there is none."""
        try:
            at = fs.locate(self._path)
        except FileNotFoundError:
            return None
        with at:
            st = fs.lstat(at)
            if st is None:
                return None
            if not stat.S_ISREG(st.st_mode):
                raise ResourceError(
                    self.id,
                    f"{self._path} is a {fs.kind_name(st.st_mode)}, not a regular file; "
                    "convergent does not follow or replace it: remove it",
                )
            fd, st = fs.open_node(at, directory=False)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        hashed = self._hashed
        if st.st_size > self.params.max_size:  # not it: not read (a sparse 15 TiB)
            os.close(fd)
            return f"over max_size ({st.st_size} bytes)", st
        if hashed is not None and hashed[0] == key:
            os.close(fd)
            return hashed[1], st
        self._hashed = (key, await downloadurl.sha256_of(fd, st.st_size))
        return self._hashed[1], st

    def _owner_ids(self) -> tuple[int, int]:
        p = self.params
        if self._uid is None:
            self._uid = -1 if p.owner is None else posix.lookup_uid(p.owner)
        if self._gid is None:
            self._gid = -1 if p.group is None else posix.lookup_gid(p.group)
        return self._uid, self._gid

    # -- HTTP ---------------------------------------------------------------------------

    async def _published(self, ctx: Context) -> str:
        """The SHA-256 the checksum file gives for the URL's file (a conditional request
        when it was read before in this run)."""
        url = self.params.checksum_url
        assert url is not None
        headers = dict(self.params.headers)
        remote = self._remote
        if remote is not None:
            if remote[0] is not None:
                headers["If-None-Match"] = remote[0]
            if remote[1] is not None:
                headers["If-Modified-Since"] = remote[1]
        async with self._request(url, headers) as response:
            if response.status_code == 304 and remote is not None:
                return remote[2]
            self._expect_ok(url, response)
            body = await self._read_capped(url, response, 1 << 20)
            etag = response.headers.get("ETag")
            modified = response.headers.get("Last-Modified")
        digest = downloadurl.pick_sum(body.decode(errors="replace"), self.params.url)
        if digest is None:
            name = downloadurl.file_name(self.params.url)
            raise ResourceError(
                self.id,
                f"the checksum file {shown_url(url)} has no SHA-256 for {name!r}; it should "
                f"hold a line 'HEX  {name}' (or one bare hash): fix checksum_url",
            )
        self._remote = (etag, modified, digest)
        return digest

    async def _fetch(self, ctx: Context, expected: str) -> int:
        """GET the URL into a private temp file, verify it, and rename it into place."""
        p = self.params
        uid, gid = self._owner_ids()
        mode = self._mode
        try:
            at = fs.locate(self._path)
        except FileNotFoundError:
            raise ResourceError(
                self.id, f"the directory of {self._path} does not exist; create it first"
            ) from None
        try:
            st = fs.lstat(at)
            if st is not None and stat.S_ISREG(st.st_mode):  # keep what is not asked for
                self._refuse_special(st, mode, uid, gid)
                uid = st.st_uid if uid == -1 else uid
                gid = st.st_gid if gid == -1 else gid
                mode = trust.kept_mode(st, uid, gid) if mode is None else mode
            ctx.shared(atomic.Sweeper).sweep(at)
            final = fs.default_mode() if mode is None else mode
            fd, temp = atomic.create_temp(at, b"", 0o600, uid, gid)
        except BaseException:
            at.close()
            raise
        size = 0
        try:
            import hashlib

            digest = hashlib.sha256()
            async with self._request(p.url, dict(p.headers)) as response:
                self._expect_ok(p.url, response)
                length = response.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > p.max_size:
                    raise self._too_large(p.url, int(length))
                async for chunk in response.aiter_raw(CHUNK):
                    size += len(chunk)
                    if size > p.max_size:
                        raise self._too_large(p.url, size)
                    digest.update(chunk)
                    atomic.write_all(fd, chunk)
            got = digest.hexdigest()
            if got != expected:
                raise ResourceError(
                    self.id,
                    f"checksum mismatch for {shown_url(p.url)}: expected sha256 {expected}, "
                    f"got {got} ({size} bytes); {self._path} is left as it was. Fix sha256 "
                    "(or checksum_url) if the file changed upstream",
                )
            os.fchmod(fd, final)
        except BaseException:
            os.close(fd)
            with suppress(OSError):
                os.unlink(temp, dir_fd=at.fd)
            at.close()
            raise
        await ctx.shared(atomic.Commits).commit(fd, temp, at, False)
        return size

    @asynccontextmanager
    async def _request(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[httpx.Response]:
        """One streamed GET, bounded in all by ``timeout``; the timeout and httpx's
        errors (while reading the body too) become ResourceErrors that show the URL
        without secrets."""
        import asyncio

        import httpx

        timeout = self.params.timeout
        own = [name for name in self.params.headers if name.lower() != "accept-encoding"]
        first: list[tuple[str, str, int | None]] = []

        async def cross_origin(request: httpx.Request) -> None:
            if downloadurl.origin(request.url) != first[0]:  # a redirect elsewhere: no tokens
                for name in own:
                    request.headers.pop(name, None)

        try:
            first.append(downloadurl.origin(httpx.URL(url)))  # httpx may refuse what urlsplit took
            async with (
                asyncio.timeout(timeout),
                httpx.AsyncClient(
                    follow_redirects=True,
                    trust_env=False,
                    verify=downloadurl.ssl_context(),
                    event_hooks={"request": [cross_origin]},
                ) as client,
                client.stream(
                    "GET", url, headers=downloadurl.with_identity(headers), timeout=timeout
                ) as response,
            ):
                yield response
        except (TimeoutError, httpx.TimeoutException):
            raise ResourceError(
                self.id,
                f"fetching {shown_url(url)} timed out after {timeout:g} s; raise timeout "
                "or check the server",
            ) from None
        except (
            httpx.HTTPError,
            httpx.InvalidURL,
            httpx.StreamError,
            ValueError,  # a redirect's bad port, among others
            OverflowError,
            ExceptionGroup,  # the same from the connection's own task group
        ) as exc:
            cause: BaseException = exc
            while isinstance(cause, BaseExceptionGroup) and len(cause.exceptions) == 1:
                cause = cause.exceptions[0]
            said = self._scrub(f"{type(cause).__name__}: {cause}", url)
            raise ResourceError(self.id, f"fetching {shown_url(url)} failed: {said}") from None

    def _scrub(self, text: str, url: str) -> str:
        """``text`` (an HTTP library's message) without the header values and the URL's
        password and query, which it may quote."""
        from urllib.parse import urlsplit

        secrets = [value for value in self.params.headers.values() if value.strip()]
        parts = urlsplit(url)
        secrets += [s for s in (parts.password, parts.query, url) if s]
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, "<hidden>")
        return text

    def _expect_ok(self, url: str, response: httpx.Response) -> None:
        if response.status_code != 200:
            raise ResourceError(
                self.id,
                f"{shown_url(url)} answered HTTP {response.status_code} "
                f"{response.reason_phrase}; check the URL (and headers, if it needs any)",
            )

    async def _read_capped(self, url: str, response: httpx.Response, cap: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw(CHUNK):
            size += len(chunk)
            if size > cap:
                raise self._too_large(url, size, cap)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, url: str, size: int, cap: int | None = None) -> ResourceError:
        cap = self.params.max_size if cap is None else cap
        return ResourceError(
            self.id,
            f"{shown_url(url)} sends more than {cap} bytes (at least {size}); nothing was "
            "written: raise max_size if that is expected",
        )

    def predict(self, ctx: Context, change: Change | None, view: View) -> Effects:
        """Under noop: its path is a file whose content is known only once fetched (what
        reads it downstream may change), or keeps its content with a new mode or owner
        (None ``change``: it may be anything)."""
        from convergent.resources.predicted import Effects, Node

        if not isinstance(change, DownloadChange):
            return Effects({self._path: Node("unknown", self.id)})
        meta = change.action == "meta"
        mode = change.mode if meta else self._mode
        uid, gid = (change.uid, change.gid) if meta else self._owner_ids()
        node = Node("file", self.id, None, meta, mode, *_ids(uid, gid))
        return Effects({self._path: node})

    # -- automatic edges ----------------------------------------------------------------

    def provides(self) -> tuple[str]:
        """The file it writes, as ``file:<path>`` (a ``file`` for the same path comes after)."""
        return (f"file:{self._path}",)

    def needs(self) -> tuple[Sequence[str], ...]:
        """Its nearest managed ancestor directory, then the managed user and group that
        own it (``user:NAME`` or ``uid:N``, ``group:NAME`` or ``gid:N``)."""
        owners = [
            (f"{numeric}:{value}" if value.isdigit() else f"{named}:{value}",)
            for value, named, numeric in (
                (self.params.owner, "user", "uid"),
                (self.params.group, "group", "gid"),
            )
            if value is not None
        ]
        return (path_uids("file:", self._path), *owners)
