"""The cluster's certificates: a cluster CA, one certificate per host, join tokens.

Everything lives in ``STATE_DIR/tls/`` (mode 0700): ``ca.crt`` (the cluster CA),
``ca.key`` (only on the host that made the CA), ``HOST.crt`` and ``HOST.key`` (this
host's certificate and key). Keys are written 0600 through
:func:`convergent.host.atomic.write_file`; nothing here ever logs one.

- :func:`member_files` is what ``convergent run --cluster`` uses: it takes the CA and the
  host's certificate that are there, or makes them (a CA when there is none; a
  certificate when there is none or it does not name every address the member listens
  on, which needs ``ca.key``).
- A host's certificate is for both ends of TLS (server and client authentication), with
  the host name as its common name and, as subject alternative names, the host name,
  ``localhost``, 127.0.0.1, ::1 and the host of every URL the member serves. etcd uses it
  for its peer and client listeners (``--client-cert-auth``, ``--peer-client-cert-auth``:
  only holders of a certificate of this CA get in), the agent as its client certificate.
- :func:`make_token` (``convergent cluster token --hostname B``), on the host with the
  CA key, issues B's certificate and packs CA certificate, B's certificate and B's key
  into one line of text. :func:`accept_token` on B unpacks it into B's ``tls/``. A
  token is a secret (it holds a private key): carry it as one (``ssh``, a file of mode
  0600), never on a command line (other users read ``/proc/PID/cmdline``).

The ``cryptography`` package is imported by the functions that need it, never at import.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from convergent.errors import ConvergentError

if TYPE_CHECKING:
    import ssl

__all__ = [
    "CA_NAMES",
    "TOKEN_PREFIX",
    "TLSError",
    "TLSFiles",
    "accept_token",
    "check_hostname",
    "client_context",
    "host_files",
    "issued",
    "make_token",
    "member_files",
    "tls_dir",
]

TOKEN_PREFIX = "convergent-join-1:"
ISSUED = "issued"
CA_NAMES = ("ca.crt",)
CA_DAYS = 3650
CERT_DAYS = 1825
_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class TLSError(ConvergentError):
    """The cluster's certificates are missing, wrong or cannot be written."""


@dataclass(frozen=True)
class TLSFiles:
    """Paths of the CA certificate, this host's certificate and its key."""

    ca: str
    cert: str
    key: str


def check_hostname(name: str) -> str:
    """``name`` if it can name a host (letters, digits, ``.``, ``_``, ``-``; at most 63)."""
    if not _HOSTNAME.match(name):
        raise TLSError(
            f"host name {name!r}: use letters, digits, '.', '_' and '-' (at most 63, "
            "starting with a letter or digit); give another with --hostname"
        )
    return name


def tls_dir(state_dir: str) -> str:
    return os.path.join(os.path.abspath(state_dir), "tls")


def host_files(state_dir: str, hostname: str) -> TLSFiles:
    """Where ``hostname``'s files are (they may not exist)."""
    base = tls_dir(state_dir)
    return TLSFiles(
        os.path.join(base, "ca.crt"),
        os.path.join(base, f"{hostname}.crt"),
        os.path.join(base, f"{hostname}.key"),
    )


def _crypto() -> Any:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise TLSError(
            "the cluster's certificates need the 'cryptography' package: "
            "pip install cryptography (or apt-get install python3-cryptography), "
            "or run without TLS with --insecure"
        ) from None
    from cryptography import x509

    return x509


def _make_dir(path: str) -> None:
    from convergent.host import fs

    with fs.locate(path, create=True) as at:
        if fs.lstat(at) is None:
            fs.make_directory(at, 0o700, -1, -1, clear=False)
        fd, _ = fs.open_node(at, directory=True)
        try:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid():
                raise TLSError(f"{path} belongs to uid {st.st_uid}; it must be yours (chown it)")
            if st.st_mode & 0o077:
                fs.set_meta(fd, 0o700)
        finally:
            os.close(fd)


def _write(path: str, data: bytes) -> None:
    from convergent.host.atomic import write_file

    try:
        write_file(path, data, mode=0o600)
    except OSError as exc:
        raise TLSError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _read(path: str) -> bytes | None:
    from convergent.host import fs

    try:
        with fs.locate(path) as at:
            if fs.lstat(at) is None:
                return None
            data, _ = fs.read_regular(at)
            return data
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TLSError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    data: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return data


def _cert_pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    data: bytes = cert.public_bytes(serialization.Encoding.PEM)
    return data


def _make_ca(hostname: str) -> tuple[Any, Any]:
    x509 = _crypto()
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _new_key()
    title = f"convergent cluster CA ({hostname})"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, title)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _names(hostname: str, urls: list[str]) -> set[str]:
    """The subject alternative names a host's certificate must hold."""
    names = {f"dns:{hostname}", "dns:localhost", "ip:127.0.0.1", "ip:::1"}
    for url in urls:
        host = urlsplit(url).hostname
        if not host:
            continue
        try:
            names.add(f"ip:{ipaddress.ip_address(host)}")
        except ValueError:
            names.add(f"dns:{host}")
    return names


def _cert_names(cert: Any) -> set[str]:
    x509 = _crypto()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    found = {f"dns:{n}" for n in san.get_values_for_type(x509.DNSName)}
    found |= {f"ip:{a}" for a in san.get_values_for_type(x509.IPAddress)}
    return found


def _issue(ca_cert: Any, ca_key: Any, hostname: str, names: set[str]) -> tuple[Any, Any]:
    x509 = _crypto()
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = _new_key()
    alt: list[Any] = []
    for name in sorted(names):
        kind, _, value = name.partition(":")
        if kind == "ip":
            alt.append(x509.IPAddress(ipaddress.ip_address(value)))
        else:
            alt.append(x509.DNSName(value))
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _load_ca(state_dir: str, hostname: str, *, make: bool) -> tuple[Any, Any | None]:
    """The CA certificate and (when this host holds it) its key; made when ``make`` and
    there is none."""
    x509 = _crypto()
    from cryptography.hazmat.primitives import serialization

    base = tls_dir(state_dir)
    _make_dir(base)
    ca_path, key_path = os.path.join(base, "ca.crt"), os.path.join(base, "ca.key")
    ca_pem, key_pem = _read(ca_path), _read(key_path)
    if ca_pem is None:
        if not make:
            raise TLSError(
                f"no cluster CA in {base}: on a joining host, give --join-token FILE "
                "(made by 'convergent cluster token --hostname THIS_HOST' on the first "
                "host); on the first host of --initial-cluster, make the other members' "
                "tokens first (that makes the CA); or run without TLS with --insecure"
            )
        cert, key = _make_ca(hostname)
        _write(key_path, _key_pem(key))  # the key first: a CA without its key is final
        _write(ca_path, _cert_pem(cert))
        return cert, key
    try:
        cert = x509.load_pem_x509_certificate(ca_pem)
        key = serialization.load_pem_private_key(key_pem, None) if key_pem else None
    except ValueError as exc:
        raise TLSError(f"{base}: ca.crt or ca.key is damaged ({exc}); remove them") from exc
    return cert, key


def member_files(state_dir: str, hostname: str, urls: list[str], *, make_ca: bool) -> TLSFiles:
    """This host's TLS files, made or renewed as needed (see the module's docstring).

    ``urls``: every URL the member serves (client and peer); ``make_ca``: a missing CA
    may be made (``--cluster``); otherwise it must be there (a token brought it).
    """
    x509 = _crypto()
    files = host_files(state_dir, check_hostname(hostname))
    ca_cert, ca_key = _load_ca(state_dir, hostname, make=make_ca)
    needed = _names(hostname, urls)
    cert_pem = _read(files.cert)
    if cert_pem is not None and _read(files.key) is not None:
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as exc:
            raise TLSError(f"{files.cert} is damaged ({exc}); remove it") from exc
        if cert.issuer != ca_cert.subject:
            raise TLSError(
                f"{files.cert} was not issued by the cluster CA {files.ca}; remove it "
                "(and get a new join token if this host joined with one)"
            )
        missing = needed - _cert_names(cert)
        if not missing:
            return files
        if ca_key is None:
            raise TLSError(
                f"{files.cert} does not name {', '.join(sorted(missing))}; get a new "
                f"token on the first host: convergent cluster token --hostname {hostname} "
                "--peer-urls ... --client-urls ... (with every address this member serves)"
            )
    elif ca_key is None:
        raise TLSError(
            f"no certificate for {hostname} in {tls_dir(state_dir)}: get one with "
            f"'convergent cluster token --hostname {hostname}' on the host that made the "
            "cluster CA, then --join-token FILE here"
        )
    cert, key = _issue(ca_cert, ca_key, hostname, needed)
    _write(files.key, _key_pem(key))
    _write(files.cert, _cert_pem(cert))
    return files


def make_token(state_dir: str, hostname: str, urls: list[str]) -> str:
    """A join token for ``hostname``: the CA certificate, a new certificate for it (naming
    ``urls``' hosts too) and its key. Makes the CA when this host has none yet."""
    check_hostname(hostname)
    ca_cert, ca_key = _load_ca(state_dir, hostname, make=True)
    if ca_key is None:
        raise TLSError(
            f"{tls_dir(state_dir)} has the cluster CA's certificate but not its key: "
            "make tokens on the host that made the cluster (the first --cluster agent)"
        )
    cert, key = _issue(ca_cert, ca_key, hostname, _names(hostname, urls))
    names = sorted({*issued(state_dir), hostname})
    _write(os.path.join(tls_dir(state_dir), ISSUED), "".join(f"{n}\n" for n in names).encode())
    bundle = {
        "host": hostname,
        "ca": _cert_pem(ca_cert).decode(),
        "cert": _cert_pem(cert).decode(),
        "key": _key_pem(key).decode(),
    }
    packed = base64.urlsafe_b64encode(json.dumps(bundle, sort_keys=True).encode())
    return TOKEN_PREFIX + packed.decode()


def issued(state_dir: str) -> list[str]:
    """The hosts a join token was made for here (``STATE_DIR/tls/issued``): the cluster's
    administrator gives each its role at start."""
    data = _read(os.path.join(tls_dir(state_dir), ISSUED))
    if data is None:
        return []
    return [n for n in data.decode("utf-8", "replace").split() if _HOSTNAME.match(n)]


def accept_token(state_dir: str, token: str, hostname: str) -> TLSFiles:
    """Unpack a join token into ``STATE_DIR/tls/``; the token must be for ``hostname``."""
    x509 = _crypto()
    text = token.strip()
    bad = "is not a join token: make one with 'convergent cluster token --hostname NAME'"
    if not text.startswith(TOKEN_PREFIX):
        raise TLSError(f"the token {bad}")
    try:
        bundle = json.loads(base64.urlsafe_b64decode(text[len(TOKEN_PREFIX) :]))
        ca_pem, cert_pem, key_pem = (bundle[k].encode() for k in ("ca", "cert", "key"))
        ca, cert = x509.load_pem_x509_certificate(ca_pem), x509.load_pem_x509_certificate(cert_pem)
        owner = str(bundle["host"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise TLSError(f"the token is damaged or {bad}") from None
    if owner != hostname:
        raise TLSError(
            f"the token is for host {owner!r}, this is {hostname!r}: make one with "
            f"'convergent cluster token --hostname {hostname}', or run with --hostname {owner}"
        )
    if cert.issuer != ca.subject:
        raise TLSError(f"the token's certificate was not issued by its CA; the token {bad}")
    files = host_files(state_dir, check_hostname(hostname))
    base = tls_dir(state_dir)
    _make_dir(base)
    held = _read(files.ca)
    if held is not None and held != ca_pem and _read(os.path.join(base, "ca.key")) is not None:
        raise TLSError(
            f"{base} holds its own cluster CA (this host made a cluster); a token of "
            "another cluster cannot replace it: use another --state-dir"
        )
    _write(files.key, key_pem)
    _write(files.cert, cert_pem)
    _write(files.ca, ca_pem)
    return files


def client_context(files: TLSFiles) -> ssl.SSLContext:
    """An SSL context that trusts only the cluster CA and presents this host's
    certificate (for talking to etcd's gateway: discovery, ``cluster status``)."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=files.ca)
    context.load_cert_chain(files.cert, files.key)
    return context
