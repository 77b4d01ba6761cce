"""Who may talk to the server: the Host allow-list, the browser Origin allow-list and the
optional bearer token, checked once, in core, for every request of every transport (the
server's ASGI app, :class:`sandbox_core.server.EdgeApp`, calls :meth:`EdgePolicy.check` before
any transport sees the request).

* **Host.** A web page can make a browser send requests to 127.0.0.1 under a name it controls
  (DNS rebinding); such a request carries that name in ``Host``. Only the loopback names and the
  bound address are accepted by default (any host when bound to a wildcard address, where a
  token is required unless ``allow_unauthenticated``).
* **Origin.** A page the user visits can ``POST`` a simple request (``text/plain``) without a
  preflight; browsers always say which page sent it in ``Origin``. Server-side clients (the
  official SDK, ours, curl) send none. A request with an ``Origin`` that is not allowed is
  refused before it runs.
* **Token.** With a token configured, every request must carry ``Authorization: Bearer
  <token>`` (compared in constant time); the header is then a credential, no longer read as a
  session id. The token is never logged.
* **Probes.** The routes in :data:`PROBES` (liveness and readiness, for a load balancer or
  Kubernetes ``httpGet`` probes, which send no credential) need no token; Host and Origin are
  checked as for any request. Without the token such a request is marked :data:`ANONYMOUS` in
  its ASGI scope, and its answer says up or down and nothing more.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .errors import ErrorCode, SandboxError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")

#: The (method, path) pairs of the http requests that need no token: liveness and readiness.
PROBES: frozenset[tuple[str, str]] = frozenset({("GET", "/api/ping"), ("GET", "/api/ready")})
#: The ASGI scope key set (True) on a probe that came without the token.
ANONYMOUS = "sandbox.anonymous"


def header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The value of the (ASGI) header ``name`` (lowercase), or None."""
    for raw_name, raw_value in headers:
        if raw_name.lower() == name:
            return raw_value
    return None


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str:
    """The name part of a ``Host`` header (no port, no brackets), lowercased."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:3000
        return value[1 : value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def load_token(token: str | None, token_file: str | None, env: Mapping[str, str]) -> str | None:
    """The server's token: ``SANDBOX_TOKEN``, else the config's ``token``, else the first line
    of ``token_file``; None when there is none. An empty token is an error, not "no token"."""
    if env.get("SANDBOX_TOKEN"):
        return env["SANDBOX_TOKEN"]
    if token is not None and token_file is not None:
        raise ValueError("server.token and server.token_file are both set; keep one")
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as fh:
                token = fh.readline().strip()
        except OSError as exc:
            raise ValueError(f"server.token_file: cannot read {token_file}: {exc.strerror}") from None
        if not token:
            raise ValueError(f"server.token_file: {token_file} is empty")
    if token is not None and not token.strip():
        raise ValueError("server.token is empty")
    return token


@dataclass(frozen=True)
class EdgePolicy:
    """The checks every request passes before a transport sees it."""

    token: str | None = None
    allowed_hosts: frozenset[str] | None = None  # None: any host
    allowed_origins: frozenset[str] = frozenset()  # "*": any origin

    @classmethod
    def build(
        cls,
        *,
        bind_host: str,
        token: str | None,
        allowed_hosts: list[str] | None,
        allowed_origins: list[str],
    ) -> EdgePolicy:
        """The default host list is the loopback names plus the bound address (any host when
        bound to a wildcard address); ``"*"`` in a list allows anything."""
        hosts: frozenset[str] | None
        if allowed_hosts is not None:
            hosts = None if "*" in allowed_hosts else frozenset(host_name(h) for h in allowed_hosts)
        elif bind_host in WILDCARD_HOSTS:
            hosts = None
        else:
            hosts = frozenset({*LOOPBACK_NAMES, host_name(bind_host)})
        origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        return cls(token=token, allowed_hosts=hosts, allowed_origins=origins)

    def check(self, headers: Iterable[tuple[bytes, bytes]], *, token_exempt: bool = False) -> SandboxError | None:
        """The error to answer a request with these (ASGI) headers, or None to let it through;
        ``token_exempt`` (a request of :data:`PROBES`): no token needed, Host and Origin checked."""
        host = origin = authorization = None
        for raw_name, raw_value in headers:
            name = raw_name.lower()
            if name == b"host":
                host = raw_value.decode("latin-1")
            elif name == b"origin":
                origin = raw_value.decode("latin-1")
            elif name == b"authorization":
                authorization = raw_value
        if self.allowed_hosts is not None and host is not None and host_name(host) not in self.allowed_hosts:
            return SandboxError(
                ErrorCode.HOST_NOT_ALLOWED,
                f"Host {host!r} is not allowed on this server",
                {"host": host, "setting": "server.allowed_hosts"},
            )
        if (
            origin is not None
            and "*" not in self.allowed_origins
            and origin.rstrip("/").lower() not in self.allowed_origins
        ):
            return SandboxError(
                ErrorCode.ORIGIN_NOT_ALLOWED,
                f"Requests from web pages ({origin!r}) are not allowed on this server",
                {"origin": origin, "setting": "server.allowed_origins"},
            )
        if self.token is not None and not token_exempt and not self.authorized(authorization):
            return SandboxError(
                ErrorCode.UNAUTHORIZED,
                "Missing or wrong token: send `Authorization: Bearer <token>`",
                {"header": "Authorization"},
            )
        return None

    def authorized(self, authorization: bytes | None) -> bool:
        if self.token is None:
            return True
        if authorization is None or authorization[:7].lower() != b"bearer ":
            return False
        return hmac.compare_digest(authorization[7:].strip(), self.token.encode())
