"""Routes as data: a :class:`Route` names the operation a method and path call, and a
:class:`RouteTable` finds the route of a request (the server's router) or of an operation (a
client). The routes themselves are a contract's (:mod:`sandbox_core.contract.routes`); the
router (:mod:`.router`) runs whichever table a transport gives it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    service: str
    operation: str
    stream: bool = False
    #: take the session id from Authorization/X-Session-Id/?session= when the body has none
    session_fallback: bool = False
    query: tuple[str, ...] = ()
    wrap: Callable[[Any], Any] | None = None
    unwrap: Callable[[Any], Any] | None = None
    #: what of this route is ours, not the contract's (its request and answer fields), for the reference
    ours: str = ""
    pattern: re.Pattern[str] | None = field(default=None, compare=False)

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(re.findall(r"{(\w+)}", self.path))

    def format_path(self, params: dict[str, Any]) -> str:
        path = self.path
        for name in self.path_params:
            path = path.replace("{" + name + "}", str(params.pop(name)))
        return path


class RouteTable:
    """Route lookup by (method, path) for the server and by operation for the client. An
    operation with no route of its own is reached at ``POST {generic_prefix}{service}/{operation}``."""

    def __init__(self, routes: list[Route], *, generic_prefix: str) -> None:
        self.generic_prefix = generic_prefix
        self.exact: dict[tuple[str, str], Route] = {}
        self.patterns: list[tuple[str, re.Pattern[str], Route]] = []
        self.paths: set[str] = set()
        self.by_operation: dict[tuple[str, str], Route] = {}
        for route in routes:
            self.by_operation.setdefault((route.service, route.operation), route)
            if route.path_params:
                regex = re.compile("^" + re.sub(r"{(\w+)}", r"(?P<\1>[^/]+)", route.path) + "$")
                self.patterns.append((route.method, regex, route))
            else:
                self.exact[(route.method, route.path)] = route
                self.paths.add(route.path)

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """(route, path params, whether the path exists with another method)."""
        route = self.exact.get((method, path))
        if route is not None:
            return route, {}, True
        known = path in self.paths
        for rmethod, regex, candidate in self.patterns:
            m = regex.match(path)
            if m is None:
                continue
            if rmethod == method:
                return candidate, m.groupdict(), True
            known = True
        return None, {}, known

    def request_for(
        self, service: str, operation: str, params: Mapping[str, Any]
    ) -> tuple[Route | None, str, str, dict[str, str] | None, dict[str, Any] | None]:
        """How a client calls an operation: (its route or None for the generic one, method, path,
        query, JSON body). Path parameters leave the body for the path; GET and DELETE send the
        route's query keys and no body."""
        route = self.by_operation.get((service, operation))
        values = dict(params)
        if route is None:
            return None, "POST", f"{self.generic_prefix}{service}/{operation}", None, values
        path = route.format_path(values)
        if route.method in ("GET", "DELETE"):
            query = {k: str(v) for k, v in values.items() if k in route.query}
            return route, route.method, path, query or None, None
        return route, route.method, path, None, values
