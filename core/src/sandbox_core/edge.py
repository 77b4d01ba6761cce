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
  <token>`` or ``X-Forwarded-Authorization: Bearer <token>`` (:data:`CREDENTIAL_HEADERS`: the
  agent-sandbox router strips ``Authorization`` and forwards the other), compared in constant
  time; both headers are then credentials, removed before a transport sees the request (and
  ``Authorization`` is no longer read as a session id). The token is never logged.
* **Probes.** The routes in :data:`PROBES` (liveness and readiness, for a load balancer or
  Kubernetes ``httpGet`` probes, which send no credential), and those a transport's mount
  declares (``ServerMount.probes``, on its own paths), need no token; Host and Origin are
  checked as for any request. Without the token such a request is marked :data:`ANONYMOUS` in
  its ASGI scope, and its answer says up or down and nothing more.
* **Binding.** A server (or a transport's own listener) bound to an address other machines can
  reach, with no token, refuses to start unless ``allow_unauthenticated``
  (:func:`bind_refusal`, :meth:`EdgePolicy.check_bind`).
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
#: The (lowercase) headers that carry the token, ``Bearer <token>`` in each: ``Authorization``,
#: and ``X-Forwarded-Authorization`` for a request that passed a proxy which strips
#: ``Authorization`` (the agent-sandbox router does). A request passes with either.
CREDENTIAL_HEADERS: tuple[bytes, ...] = (b"authorization", b"x-forwarded-authorization")


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


def bind_refusal(host: str, *, token: bool, allow_unauthenticated: bool, setting: str = "server.host") -> str | None:
    """Why binding ``host`` (the value of ``setting``) must not start, or None when it may: an
    address other machines can reach, with no token, unless ``allow_unauthenticated``."""
    if token or allow_unauthenticated or is_loopback(host):
        return None
    return (
        f"{setting} = {host!r} is reachable from other machines and no token is set: set "
        "server.token, server.token_file or SANDBOX_TOKEN (or, if only trusted peers can reach the "
        "sandbox, server.allow_unauthenticated = true or SANDBOX_ALLOW_UNAUTHENTICATED=1)"
    )


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
    """The checks every request passes before a transport sees it.

    A transport that serves a listener of its own is given the server's policy
    (``ServerContext.policy``): :meth:`check_bind` for the address it binds, :meth:`for_bind`
    for the Host list of that address, :meth:`check` for an http request's headers, and
    :meth:`authorized` / :meth:`authorized_headers` for a credential that comes another way
    (gRPC metadata, say)."""

    token: str | None = None
    allowed_hosts: frozenset[str] | None = None  # None: any host
    allowed_origins: frozenset[str] = frozenset()  # "*": any origin
    #: ``server.allow_unauthenticated``: a non-loopback bind with no token may start.
    allow_unauthenticated: bool = False
    #: ``server.allowed_hosts`` as configured (None: the default list of the bound address).
    configured_hosts: tuple[str, ...] | None = None

    @classmethod
    def build(
        cls,
        *,
        bind_host: str,
        token: str | None,
        allowed_hosts: list[str] | tuple[str, ...] | None,
        allowed_origins: list[str] | tuple[str, ...] | frozenset[str],
        allow_unauthenticated: bool = False,
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
        return cls(
            token=token,
            allowed_hosts=hosts,
            allowed_origins=origins,
            allow_unauthenticated=allow_unauthenticated,
            configured_hosts=None if allowed_hosts is None else tuple(allowed_hosts),
        )

    def for_bind(self, bind_host: str) -> EdgePolicy:
        """This policy for a listener bound to ``bind_host``: the same token, origins and
        configured hosts, and the default Host list of that address."""
        return EdgePolicy.build(
            bind_host=bind_host,
            token=self.token,
            allowed_hosts=self.configured_hosts,
            allowed_origins=self.allowed_origins,
            allow_unauthenticated=self.allow_unauthenticated,
        )

    def check_bind(self, host: str, setting: str) -> None:
        """Raise ``ConfigError`` (naming ``setting``) when binding ``host`` must not start: the
        rule ``server.host`` follows, for a transport's own listener."""
        refusal = bind_refusal(
            host, token=self.token is not None, allow_unauthenticated=self.allow_unauthenticated, setting=setting
        )
        if refusal is not None:
            from .config import ConfigError  # config imports the transport module, which imports this one

            raise ConfigError(refusal)

    def check(self, headers: Iterable[tuple[bytes, bytes]], *, token_exempt: bool = False) -> SandboxError | None:
        """The error to answer a request with these (ASGI) headers, or None to let it through;
        ``token_exempt`` (a request of :data:`PROBES`): no token needed, Host and Origin checked."""
        host = origin = None
        credentials: list[bytes] = []
        for raw_name, raw_value in headers:
            name = raw_name.lower()
            if name == b"host":
                host = raw_value.decode("latin-1")
            elif name == b"origin":
                origin = raw_value.decode("latin-1")
            elif name in CREDENTIAL_HEADERS:
                credentials.append(raw_value)
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
        if self.token is not None and not token_exempt and not any(self.authorized(c) for c in credentials):
            return SandboxError(
                ErrorCode.UNAUTHORIZED,
                "Missing or wrong token: send `Authorization: Bearer <token>` "
                "(or `X-Forwarded-Authorization: Bearer <token>` through a proxy that strips Authorization)",
                {"header": "Authorization"},
            )
        return None

    def authorized_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        """Whether one of the (ASGI) ``headers`` of :data:`CREDENTIAL_HEADERS` carries the token
        (always, with no token configured)."""
        if self.token is None:
            return True
        return any(self.authorized(value) for name, value in headers if name.lower() in CREDENTIAL_HEADERS)

    def authorized(self, authorization: bytes | None) -> bool:
        """Whether one credential value (``Bearer <token>``) is the token (always, with no token
        configured)."""
        if self.token is None:
            return True
        if authorization is None or authorization[:7].lower() != b"bearer ":
            return False
        return hmac.compare_digest(authorization[7:].strip(), self.token.encode())
