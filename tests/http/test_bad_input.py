"""Bad input on every http route: never a 5xx, never a stack trace, the server stays up.

For every contract route in :data:`sandbox_core.contract.routes.ROUTES` and for the generic
``POST /api/{service}/{operation}`` path of every installed operation, hypothesis sends random
bytes, non-object JSON, malformed JSON, and objects with the operation's real field names
holding wrong types and edge values; GET and DELETE routes get random ``{id}`` segments and
query strings. The answer must be a 4xx with the contract's error body (naming the field
when a field was wrong) or a correct 2xx; after each example ``GET /api/ping`` still answers.

Safety: the server really runs commands and writes files as root, so the generated values
are confined. ``command`` only comes from :data:`SAFE_COMMANDS`; path-like fields are either
invalid (NUL, more than 4096 bytes, not a string) or inside the example's scratch directory,
never with a ``..`` that leaves it; timeouts are at most 2000 ms (or past the largest, 2**31 - 1
ms, so refused); env names come from a fixed set (no PATH, LD_*, BASH_ENV); port watches only
target loopback ports this module holds bound without listening; strings of unknown fields
come from a harmless set. Every stream is
read for at most :data:`STREAM_BUDGET_S` seconds and then closed, and after each example every
process is killed and every session deleted.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import json
import os
import shutil
import socket
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox_core.contract.routes import ROUTES
from sandbox_core.plugins import Hooks, make_plugin_manager
from sandbox_core.registry import _OP_ATTR, _build_params
from sandbox_core.routing import Route
from sandbox_core.testing import ServerProcess
from sandbox_core.testing.plugin import TEST_CONFIG

#: Every wait in a stream is bounded: at most this long, and this many events, then the stream is closed.
STREAM_BUDGET_S = 0.2
STREAM_MAX_EVENTS = 8
MAX_TIMEOUT_MS = 2000

# ---- what is installed -------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    service: str
    name: str
    fields: tuple[str, ...]  # wire (camelCase) names
    streaming: bool


def installed_operations() -> list[Op]:
    """Every operation of every installed service, with its wire field names (as the registry builds them)."""
    ops: list[Op] = []
    for service, spec in sorted(Hooks(make_plugin_manager()).services().items()):
        cls = spec.factory if inspect.isclass(spec.factory) else type(spec.factory)
        for attr in sorted(dir(cls)):
            func = getattr(cls, attr, None)
            name = getattr(func, _OP_ATTR, None)
            if name is None:
                continue
            params, _ = _build_params(service, func)
            fields = tuple(f.encode_name for f in msgspec.structs.fields(params))
            ops.append(Op(service, name, fields, inspect.isasyncgenfunction(func)))
    return ops


OPERATIONS = installed_operations()
OPS_BY_NAME = {(op.service, op.name): op for op in OPERATIONS}
CONTRACT_PATHS = {(route.method, route.path) for route in ROUTES}

# ---- safe values -------------------------------------------------------------------------------

SAFE_COMMANDS = ["true", "false", "echo x", "echo x >&2", "exit 3", "", "   ", "echo a\x00b", "printf 'é\\n'"]
PATH_FIELDS = {"path", "oldPath", "newPath", "sourcePath", "destinationPath", "targetDir", "cwd", "repoUrl"}
ENV_NAMES = ["SBX_A", "SBX_B", "sbx_lower"]
BAD_ENV_NAMES = ["1BAD", "", "A-B", "A B", "SBX=X", "SBX_\x00"]
#: Names inside the scratch directory (see :func:`scratch`); "e/.." is the directory itself.
ENTRIES = ["f", "d", "d/g", "e", "e/..", "d/.", "x", "x/d", "new", "d/new", "f/x", "new/..", "new/deeper/x", "é ü", " "]
HARMLESS_STRINGS = ["", " ", "x", "a\x00b", "a" * 5000, "é" * 2100, "\n", "null", "{}"]


@dataclass(frozen=True)
class InScratch:
    """A path in the example's scratch directory, rendered once the directory exists."""

    suffix: str
    prefix: str = ""

    def render(self, root: str) -> str:
        return f"{self.prefix}{root}/{self.suffix}"


def render(value: Any, root: str) -> Any:
    if isinstance(value, InScratch):
        return value.render(root)
    if isinstance(value, dict):
        return {k: render(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, root) for v in value]
    return value


def _name_ok(name: str) -> bool:
    return name not in (".", "..")


scratch_names = st.text(
    st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=16
).filter(_name_ok)
wrong_types = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.sampled_from(["a", "path", "command"]), st.integers(), max_size=2),
)
# no integers or floats: for the numeric fields whose size matters
wrong_non_numbers = st.one_of(
    st.none(), st.booleans(), st.sampled_from(HARMLESS_STRINGS), st.lists(st.booleans(), max_size=2), st.just({"a": 1})
)
harmless = st.one_of(wrong_types, st.sampled_from(HARMLESS_STRINGS))

valid_paths = st.one_of(st.sampled_from(ENTRIES), scratch_names).map(InScratch)
invalid_paths = st.one_of(
    st.sampled_from(["a\x00b", "\x00", "d/\x00", "a" * 4100, "é" * 2100, "d/" + "b" * 300]).map(InScratch),
    st.sampled_from(["", "   "]),  # empty (invalid), and blank (relative: lands in the session's cwd, the workspace)
    wrong_types,
)
paths = st.one_of(valid_paths, valid_paths, invalid_paths)
repo_urls = st.one_of(
    valid_paths,
    st.sampled_from(ENTRIES).map(lambda e: InScratch(e, "file://")),
    st.sampled_from(["a\x00b", "a" * 3000]).map(InScratch),
    st.sampled_from(["", "  ", "-q", "-"]),  # rejected (or a harmless option) before git runs
    wrong_types,
)
small_ms = st.one_of(
    st.integers(min_value=1, max_value=MAX_TIMEOUT_MS),
    st.integers(max_value=0),
    st.integers(min_value=2**31),  # past the largest duration, 2**31 - 1 ms: refused
    wrong_non_numbers,
    st.floats(min_value=-MAX_TIMEOUT_MS, max_value=MAX_TIMEOUT_MS),
)
session_ids = st.one_of(
    st.sampled_from(["bad-in-a", "bad-in-b", "__DISABLE_SESSION__", "default", "é"]),
    st.sampled_from(["", "   ", "x" * 300, "a\x00b"]),
    wrong_types,
)
process_ids = st.one_of(
    st.sampled_from(["bad-p1", "bad-p2", "", "../x", "a" * 200, "a\x00b", "with space"]),
    st.text(max_size=12),
    wrong_types,
)
env_values = st.one_of(
    st.text(max_size=12), st.none(), st.sampled_from(["a\x00b", "a" * 5000]), st.integers(), st.booleans()
)
env_names = st.one_of(st.sampled_from(ENV_NAMES), st.sampled_from(ENV_NAMES), st.sampled_from(BAD_ENV_NAMES))
envs = st.one_of(st.dictionaries(env_names, env_values, max_size=3), wrong_types)


def bounded_ports(free_ports: list[int]) -> st.SearchStrategy[Any]:
    """Loopback ports that nothing listens on (held bound by this module), or invalid ones."""
    return st.one_of(
        st.sampled_from(free_ports),
        st.integers(max_value=0),
        st.integers(min_value=65536),
        st.sampled_from([0, 65536, 2**64]),
        wrong_non_numbers,
        st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
    )


def field_strategy(name: str, free_ports: list[int]) -> st.SearchStrategy[Any]:
    """Valid, edge and wrongly typed values for a wire field; safe by construction."""
    by_name: dict[str, st.SearchStrategy[Any]] = {
        "command": st.one_of(st.sampled_from(SAFE_COMMANDS), st.sampled_from(SAFE_COMMANDS), wrong_types),
        "repoUrl": repo_urls,
        "timeoutMs": small_ms,
        "commandTimeoutMs": small_ms,
        "interval": st.one_of(st.floats(min_value=-10, max_value=MAX_TIMEOUT_MS), wrong_non_numbers),
        "port": bounded_ports(free_ports),
        "env": envs,
        "sessionId": session_ids,
        "id": st.one_of(session_ids, process_ids),
        "processId": process_ids,
        "mode": st.one_of(st.sampled_from(["tcp", "http", "udp", ""]), wrong_types),
        "origin": st.one_of(st.sampled_from(["user", "internal", "root"]), wrong_types),
        "encoding": st.one_of(st.sampled_from(["utf-8", "utf8", "base64", "none", "UTF-8"]), harmless),
        "status": st.one_of(
            st.sampled_from(["running", "completed", "failed", "killed", "error", "nope"]), wrong_types
        ),
        "content": st.one_of(
            st.text(max_size=40), st.sampled_from(["aGk=", "not base64!", "x" * 200_000]), wrong_types
        ),
        "options": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "recursive": st.one_of(st.booleans(), wrong_types),
                    "includeHidden": st.one_of(st.booleans(), wrong_types),
                },
            ),
            wrong_types,
        ),
        "branch": st.one_of(st.text(max_size=12), wrong_types),
        "statusMin": st.one_of(st.integers(), wrong_non_numbers),
        "statusMax": st.one_of(st.integers(), wrong_non_numbers),
        "depth": st.one_of(st.integers(), wrong_non_numbers),
        "offset": st.one_of(st.integers(), wrong_non_numbers),
        "upto": st.one_of(st.integers(min_value=-5, max_value=MAX_TIMEOUT_MS), wrong_non_numbers),
        "name": st.one_of(st.text(max_size=12), wrong_types),
        "reason": st.one_of(st.text(max_size=12), wrong_types),
    }
    if name in by_name:
        return by_name[name]
    if name in PATH_FIELDS:
        return paths
    # Anything else (including fields of operations added later): types that cannot do harm,
    # integers, booleans and a fixed set of strings, never free text.
    return harmless


# ---- request strategies ------------------------------------------------------------------------


@dataclass
class Call:
    method: str
    path: str
    body: Any = None  # bytes, or a JSON value with InScratch placeholders (rendered before sending)
    is_object: bool = False  # the body is a JSON object: a VALIDATION_FAILED must name a field
    malformed: str | None = None  # how to break the rendered JSON: "truncate:N", "append", "prefix"
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    def content(self, root: str) -> bytes | None:
        if self.body is None:
            return None
        if isinstance(self.body, bytes):
            return self.body
        raw = json.dumps(render(self.body, root), ensure_ascii=False).encode()
        if self.malformed is None:
            return raw
        kind, _, arg = self.malformed.partition(":")
        if kind == "truncate":
            return raw[: max(0, len(raw) - int(arg))]
        if kind == "append":
            return raw + b',"x":1}'
        return b"\xff" + raw


def _not_a_json_object(raw: bytes) -> bool:
    try:
        return not isinstance(json.loads(raw), dict)
    except ValueError:
        return True


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(HARMLESS_STRINGS),
)
non_object_json = st.one_of(
    json_scalars, st.lists(json_scalars, max_size=4), st.lists(st.lists(json_scalars, max_size=2), max_size=2)
)


@st.composite
def bodies(draw: st.DrawFn, fields: tuple[str, ...], free_ports: list[int]) -> tuple[Any, bool, str | None]:
    """(body, is a JSON object, how to break it)."""
    optional = {name: field_strategy(name, free_ports) for name in fields}
    optional["unknownField"] = harmless
    objects = st.fixed_dictionaries({}, optional=optional)
    kind = draw(st.sampled_from(["object"] * 6 + ["malformed", "non-object", "bytes", "empty"]))
    if kind == "object":
        return draw(objects), True, None
    if kind == "malformed":
        how = draw(st.sampled_from(["truncate:1", "truncate:2", "truncate:7", "append", "prefix"]))
        return draw(objects), False, how
    if kind == "non-object":
        return draw(non_object_json), False, None
    if kind == "bytes":
        return draw(st.binary(max_size=64).filter(_not_a_json_object)), False, None
    return draw(st.sampled_from([b"", b"   ", b"\n"])), False, None


segments = st.one_of(
    st.sampled_from(["kill-all", "list", "%2E%2E", ".", "%00", "a%2Fb", "%ff", "bad-p1", "a" * 3000, "%20"]),
    st.text(max_size=20).map(lambda s: urllib.parse.quote(s, safe="")).filter(lambda s: s not in ("", ".", "..")),
)
query_values = st.one_of(st.text(max_size=12), st.sampled_from(["-1", "0", "1", "9" * 30, "1e3", "running", ""]))


@st.composite
def queries(draw: st.DrawFn, route_query: tuple[str, ...]) -> str:
    keys = st.sampled_from([*list(route_query), "x", "", "status", "offset", "session", "sessionId"])
    pairs = draw(st.lists(st.tuples(keys, query_values), max_size=4))
    query = urllib.parse.urlencode(pairs)
    junk = draw(st.sampled_from(["", "", "", "&&", "=", "%zz", "a=%00", "offset=%ff", ";", "status"]))
    return "&".join(p for p in (query, junk) if p)


header_values = st.sampled_from(["bad-in-a", "a  b", "x" * 300, "__DISABLE_SESSION__", "\xe9"])


@st.composite
def route_calls(draw: st.DrawFn, route: Route, free_ports: list[int]) -> Call:
    path = route.path
    for name in route.path_params:
        path = path.replace("{" + name + "}", draw(segments))
    call = Call(route.method, path, is_object=True)  # path and query parameters are decoded as an object
    op = OPS_BY_NAME[(route.service, route.operation)]
    if route.method in ("POST", "PUT"):
        call.body, call.is_object, call.malformed = draw(bodies(op.fields, free_ports))
    call.query = draw(queries(route.query))
    if route.session_fallback and draw(st.booleans()):
        header = draw(st.sampled_from(["X-Session-Id", "Authorization"]))
        value = draw(header_values)
        if header == "Authorization":
            value = draw(st.sampled_from([f"Bearer {value}", "Bearer", value]))
        call.headers = ((header, value),)
    return call


@st.composite
def generic_calls(draw: st.DrawFn, op: Op, free_ports: list[int]) -> Call:
    call = Call("POST", f"/api/{op.service}/{op.name}")
    call.body, call.is_object, call.malformed = draw(bodies(op.fields, free_ports))
    return call


# ---- checking one call -------------------------------------------------------------------------


def contract_5xx(body: dict[str, Any]) -> bool:
    """The few 5xx the contract itself prescribes for a well-formed request that fails."""
    code, message = body.get("code"), str(body.get("message", ""))
    if code == "COMMAND_EXECUTION_ERROR" and message.startswith("Command timeout after"):
        return True  # a1: a session exec that reaches its timeoutMs (here at most 2000 ms)
    if code == "GIT_NETWORK_ERROR" and "timed out after" in message:
        return True  # a5: a clone that reaches its timeoutMs is 502
    if code == "GIT_OPERATION_FAILED" and "already exists and is not an empty directory" in message:
        return True  # a5: git's exit 128 (here: a targetDir that is taken) is 500
    # a2: a non-recursive mkdir with a missing parent
    return (
        code == "FILESYSTEM_ERROR"
        and body.get("context", {}).get("operation") == "directory.create"
        and "No such file or directory" in message
    )


def check_no_trace(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text, text[:2000]


def check_error(response: httpx.Response, text: str, call: Call) -> None:
    try:
        body = json.loads(text)
    except ValueError:
        raise AssertionError(f"{response.status_code} without a JSON error body: {text[:500]!r}") from None
    assert isinstance(body, dict), text[:500]
    assert isinstance(body.get("code"), str) and body["code"], text[:500]
    assert isinstance(body.get("message"), str) and body["message"], text[:500]
    assert body.get("httpStatus") == response.status_code, text[:500]
    if response.status_code >= 500:
        assert contract_5xx(body), f"5xx for bad input: {call.method} {call.path}: " + text
    assert response.status_code >= 400
    if body["code"] == "VALIDATION_FAILED" and call.is_object and response.status_code == 400:
        field = body.get("context", {}).get("field")
        assert isinstance(field, str) and field, f"VALIDATION_FAILED without context.field: {text[:500]}"


def parse_frames(buffer: bytes) -> tuple[list[bytes], bytes]:
    *frames, rest = buffer.split(b"\n\n")
    return frames, rest


def check_events(frames: list[bytes], generic: bool) -> None:
    for frame in frames:
        if frame.startswith(b":"):
            continue  # a keep-alive comment
        assert frame.startswith(b"data: ") and b"\n" not in frame, frame[:300]
        event = json.loads(frame[len(b"data: ") :])
        check_no_trace(json.dumps(event))
        if not generic:
            assert isinstance(event, dict) and isinstance(event.get("type"), str), event


async def exercise(client: httpx.AsyncClient, call: Call, root: str, generic: bool) -> None:
    url = call.path + (f"?{call.query}" if call.query else "")
    content = call.content(root)
    headers = {name: value.encode("latin-1") for name, value in call.headers}
    if content is not None:
        headers["content-type"] = "application/json"
    async with client.stream(call.method, url, content=content, headers=headers) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            assert response.status_code == 200
            buffer = b""
            frames: list[bytes] = []
            try:
                async with asyncio.timeout(STREAM_BUDGET_S):
                    async for chunk in response.aiter_raw():
                        done, buffer = parse_frames(buffer + chunk)
                        frames += done
                        if len(frames) >= STREAM_MAX_EVENTS:
                            break
            except TimeoutError:
                pass  # still open (a port watch, a log stream waiting for output): close it
            check_events(frames, generic)
            return
        text = (await response.aread()).decode("utf-8", "replace")
    check_no_trace(text)
    if response.status_code >= 300:
        check_error(response, text, call)
        return
    body = json.loads(text)
    assert isinstance(body, dict), text[:500]
    if generic:
        assert body.get("success") is True and "result" in body, text[:500]
    else:
        assert isinstance(body.get("success"), bool), text[:500]


def scratch(parent: str) -> str:
    """The example's scratch directory: files f, d/g, x/d/y, and an empty directory e."""
    root = tempfile.mkdtemp(prefix="ex-", dir=parent)
    for name in ("d", "e", "x/d"):
        os.makedirs(os.path.join(root, name))
    for name in ("f", "d/g", "x/d/y"):
        with open(os.path.join(root, name), "w") as fh:
            fh.write("hello\n")
    return root


async def cleanup_and_ping(client: httpx.AsyncClient) -> None:
    """Kill every process, delete every session, and check the server still answers."""
    killed = await client.delete("/api/process/kill-all")
    assert killed.status_code == 200, killed.text
    listed = await client.get("/api/session/list")
    assert listed.status_code == 200, listed.text
    for session_id in listed.json()["data"]:
        await client.post("/api/session/delete", json={"sessionId": session_id})
    ping = await client.get("/api/ping")
    assert ping.status_code == 200 and ping.json()["status"] == "healthy", ping.text


class Target:
    """The module's server and one client on one event loop, kept across examples."""

    def __init__(self, server: ServerProcess, scratch_parent: str, free_ports: list[int]) -> None:
        self.server = server
        self.scratch_parent = scratch_parent
        self.free_ports = free_ports
        self.runner = asyncio.Runner()
        self.client = self.runner.run(self._client())

    async def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.server.url, timeout=httpx.Timeout(15.0))

    def close(self) -> None:
        try:
            self.runner.run(self.client.aclose())
        finally:
            self.runner.close()

    def run(self, call: Call, generic: bool) -> None:
        root = scratch(self.scratch_parent)

        async def main() -> None:
            try:
                await exercise(self.client, call, root, generic)
            finally:
                await cleanup_and_ping(self.client)

        try:
            self.runner.run(main())
        finally:
            assert self.server.proc is not None and self.server.proc.poll() is None, "the server died"
            shutil.rmtree(root, ignore_errors=True)

    def send(self, method: str, path: str, body: Any) -> tuple[int, Any, str]:
        """One JSON request in a fresh scratch directory: (status, JSON body, scratch directory).

        The scratch directory is left for the caller to inspect (it is under the module's tmp)."""
        root = scratch(self.scratch_parent)

        async def main() -> tuple[int, Any]:
            try:
                response = await self.client.request(method, path, json=render(body, root))
                check_no_trace(response.text)
                return response.status_code, response.json()
            finally:
                await cleanup_and_ping(self.client)

        return (*self.runner.run(main()), root)

    def send_raw(self, method: str, path: str, content: bytes | None) -> tuple[int, str]:
        """One request with a raw body: (status, body text). A stream is not read: its body is
        ``"<stream>"`` (it may never end, as a port watch that can never be ready)."""

        async def main() -> tuple[int, str]:
            headers = {"content-type": "application/json"} if content is not None else {}
            try:
                async with self.client.stream(method, path, content=content, headers=headers) as response:
                    if response.headers.get("content-type", "").startswith("text/event-stream"):
                        return response.status_code, "<stream>"
                    text = (await response.aread()).decode("utf-8", "replace")
                check_no_trace(text)
                return response.status_code, text
            finally:
                await cleanup_and_ping(self.client)

        return self.runner.run(main())


# ---- fixtures ----------------------------------------------------------------------------------


def hold_free_ports(count: int) -> tuple[list[int], list[socket.socket]]:
    """Loopback ports bound (not listening) by us, so nothing else can listen on them while we test."""
    ports: list[int] = []
    held: list[socket.socket] = []
    while len(ports) < count:
        v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        v4.bind(("127.0.0.1", 0))
        port = v4.getsockname()[1]
        held.append(v4)
        try:
            v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        except OSError:
            ports.append(port)  # no IPv6 here: the probe's ::1 fallback cannot reach anything
            continue
        try:
            v6.bind(("::1", port))
        except OSError as exc:
            v6.close()
            if exc.errno == errno.EADDRINUSE:
                continue  # something has ::1 on this port: the probe could reach it; take another
            ports.append(port)  # no ::1 address
            continue
        held.append(v6)
        ports.append(port)
    return ports, held


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A dedicated server for this module (as ``sandbox_server_factory`` starts one, but module-scoped)."""
    workspace = tmp_path_factory.mktemp("bad-input-workspace")
    ports, held = hold_free_ports(3)
    config = {
        **TEST_CONFIG,
        "services": {
            "sessions": {"kill_grace_ms": 500, "command_timeout_ms": MAX_TIMEOUT_MS},
            "ports": {"probe_timeout_ms": 500},
        },
    }
    server = ServerProcess(config=config, workspace=workspace).start()
    try:
        target = Target(server, str(tmp_path_factory.mktemp("bad-input-scratch")), ports)
        try:
            yield target
        finally:
            target.close()
    finally:
        try:
            with httpx.Client(base_url=server.url, timeout=15) as client:
                client.delete("/api/process/kill-all")
        finally:
            server.stop()
            for sock in held:
                sock.close()


# ---- the tests ---------------------------------------------------------------------------------

#: ``BAD_INPUT_EXAMPLES=500`` for a deeper (slower) local run.
PROFILE = settings(
    max_examples=int(os.environ.get("BAD_INPUT_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)


@pytest.mark.parametrize("route", [pytest.param(r, id=f"{r.method} {r.path}") for r in ROUTES])
def test_contract_route_bad_input(target: Target, route: Route) -> None:
    @PROFILE
    @given(call=route_calls(route, target.free_ports))
    def check(call: Call) -> None:
        target.run(call, generic=False)

    check()


#: the operations whose generic path is theirs (a contract route at the same path, such as
#: ``POST /api/watch/list``, answers there instead; test_contract_route_bad_input covers it)
GENERIC_OPERATIONS = [op for op in OPERATIONS if ("POST", f"/api/{op.service}/{op.name}") not in CONTRACT_PATHS]


@pytest.mark.parametrize("op", [pytest.param(op, id=f"POST /api/{op.service}/{op.name}") for op in GENERIC_OPERATIONS])
def test_generic_route_bad_input(target: Target, op: Op) -> None:
    @PROFILE
    @given(call=generic_calls(op, target.free_ports))
    def check(call: Call) -> None:
        target.run(call, generic=True)

    check()


def test_every_route_and_operation_is_covered() -> None:
    routed = {(r.service, r.operation) for r in ROUTES}
    assert routed <= set(OPS_BY_NAME), routed - set(OPS_BY_NAME)
    services = set(Hooks(make_plugin_manager()).services())
    assert services == {op.service for op in OPERATIONS}  # a factory that is not a class would be missed
    assert {("commands", "execute"), ("files", "write"), ("processes", "start")} <= set(OPS_BY_NAME)


# ---- inputs that found bugs (fixed): kept as fixed regression cases ---------------------------

D = "__DISABLE_SESSION__"
NUL_ENV = {"SBX_A": "a\x00b"}


@pytest.mark.parametrize(
    "method,path,body,status,code,field",
    [
        # NUL where an argv, an environment or a cwd cannot hold it: was 500 INTERNAL_ERROR (ValueError)
        ("POST", "/api/session/create", {"id": "bad-in-nul", "env": NUL_ENV}, 400, "VALIDATION_FAILED", "env.SBX_A"),
        (
            "POST",
            "/api/execute",
            {"command": "true", "sessionId": D, "env": NUL_ENV},
            400,
            "VALIDATION_FAILED",
            "env.SBX_A",
        ),
        ("POST", "/api/execute", {"command": "true", "env": NUL_ENV}, 400, "VALIDATION_FAILED", "env.SBX_A"),
        (
            "POST",
            "/api/process/start",
            {"command": "true", "sessionId": D, "env": NUL_ENV},
            400,
            "VALIDATION_FAILED",
            "env.SBX_A",
        ),
        ("POST", "/api/execute", {"command": "echo a\x00b", "sessionId": D}, 400, "VALIDATION_FAILED", "command"),
        (
            "POST",
            "/api/execute/stream",
            {"command": "echo a\x00b", "sessionId": D},
            400,
            "VALIDATION_FAILED",
            "command",
        ),
        (
            "POST",
            "/api/execute",
            {"command": "true", "sessionId": D, "cwd": InScratch("a\x00b")},
            400,
            "VALIDATION_FAILED",
            "cwd",
        ),
        # a directory moved into itself: was 500 FILESYSTEM_ERROR "Invalid argument"
        (
            "POST",
            "/api/rename",
            {"oldPath": InScratch("d"), "newPath": InScratch("d/sub")},
            400,
            "VALIDATION_FAILED",
            "newPath",
        ),
        (
            "POST",
            "/api/move",
            {"sourcePath": InScratch("d"), "destinationPath": InScratch("d/sub")},
            400,
            "VALIDATION_FAILED",
            "destinationPath",
        ),
        # "." or ".." as the last component: was 500 FILESYSTEM_ERROR "Device or resource busy"
        ("POST", "/api/rename", {"oldPath": InScratch("e/.."), "newPath": InScratch("f")}, 409, "RESOURCE_BUSY", None),
        ("POST", "/api/write", {"path": InScratch("new/.."), "content": "x"}, 400, "IS_DIRECTORY", None),
        # a directory moved onto a non-empty one: was 500 FILESYSTEM_ERROR "Directory not empty"
        (
            "POST",
            "/api/move",
            {"sourcePath": InScratch("d"), "destinationPath": InScratch("x")},
            409,
            "FILE_EXISTS",
            None,
        ),
        # a clone of a path that is a regular file: was 500 GIT_OPERATION_FAILED
        (
            "POST",
            "/api/git/checkout",
            {"repoUrl": InScratch("f"), "targetDir": InScratch("clone"), "timeoutMs": 2000},
            404,
            "GIT_REPOSITORY_NOT_FOUND",
            None,
        ),
    ],
)
def test_found_bad_inputs(
    target: Target, method: str, path: str, body: Any, status: int, code: str, field: str | None
) -> None:
    got, error, root = target.send(method, path, body)
    assert (got, error["code"]) == (status, code), error
    if field is not None:
        assert error["context"]["field"] == field, error
    assert not os.path.exists(os.path.join(root, "new"))  # a refused write creates no parent


@pytest.mark.parametrize("cwd", ["missing", "f"])
def test_sessionless_bad_cwd_is_exit_1_as_in_a_session(target: Target, cwd: str) -> None:
    """Was 500 COMMAND_EXECUTION_ERROR "Failed to start command"; a session answers exit code 1."""
    for session_id in (D, "bad-in-cwd"):
        status, result, root = target.send(
            "POST", "/api/execute", {"command": "echo x", "sessionId": session_id, "cwd": InScratch(cwd)}
        )
        assert status == 200, result
        assert (result["exitCode"], result["stdout"]) == (1, "")
        assert result["stderr"].rstrip("\n") == f"Failed to change directory to '{root}/{cwd}'"


#: A JSON integer of 400 digits: a Python int, which ``timeoutMs / 1000`` cannot turn into a float.
HUGE = "1" + "0" * 400
#: Numbers JSON can write but no 64-bit type holds (msgspec reads ``1e400`` as out of range).
HUGE_LITERALS = ["1e400", "-1e400", HUGE, "-" + HUGE]


#: Stands for the number in a request (replaced, quotes included, by the raw literal).
N = "__number__"


def huge_number_requests(port: int, root: str) -> list[tuple[str, str, dict[str, Any] | None, str]]:
    """(method, path, JSON body, field) for every numeric field; ``N`` marks where the number goes."""
    cmd = {"command": "true"}
    repo = {"repoUrl": f"{root}/d", "targetDir": f"{root}/c"}
    return [
        ("POST", "/api/execute", {**cmd, "timeoutMs": N}, "timeoutMs"),
        ("POST", "/api/execute", {**cmd, "sessionId": "__DISABLE_SESSION__", "timeoutMs": N}, "timeoutMs"),
        ("POST", "/api/execute/stream", {**cmd, "timeoutMs": N}, "timeoutMs"),
        ("POST", "/api/commands/execute", {**cmd, "timeoutMs": N}, "timeoutMs"),
        ("POST", "/api/process/start", {**cmd, "timeoutMs": N}, "timeoutMs"),
        ("POST", "/api/session/create", {"id": "bad-in-huge", "commandTimeoutMs": N}, "commandTimeoutMs"),
        ("POST", "/api/git/checkout", {**repo, "timeoutMs": N}, "timeoutMs"),
        ("POST", "/api/git/checkout", {**repo, "depth": N}, "depth"),
        ("POST", "/api/port-watch", {"port": port, "mode": "http", "statusMin": N}, "statusMin"),
        ("POST", "/api/port-watch", {"port": port, "mode": "http", "statusMax": N}, "statusMax"),
        ("POST", "/api/ports/watch_port", {"port": port, "mode": "http", "statusMin": N}, "statusMin"),
        ("POST", "/api/port-watch", {"port": port, "mode": "tcp", "interval": N}, "interval"),
        ("POST", "/api/processes/stream_logs", {"id": "bad-in-offset", "offset": N}, "offset"),
        ("GET", f"/api/process/bad-in-offset/stream?offset={N}", None, "offset"),
    ]


def test_huge_numbers_are_400_naming_the_field(target: Target) -> None:
    """JSON number literals past 64 bits in every numeric field: 400 VALIDATION_FAILED naming it.

    Was: a 400-digit timeoutMs 500 (OverflowError) on execute, execute stream, process start
    and git checkout, accepted by session create (then every exec in that session was 500); a
    400-digit depth 500 GIT_OPERATION_FAILED; statusMin/statusMax a port watch that could never
    end; offset accepted."""
    root = tempfile.mkdtemp(prefix="huge-", dir=target.scratch_parent)
    os.makedirs(os.path.join(root, "d"))
    status, text = target.send_raw("POST", "/api/process/start", b'{"command":"true","processId":"bad-in-offset"}')
    assert status == 200, text
    wrong: list[str] = []
    for method, path, body, field in huge_number_requests(target.free_ports[0], root):
        for literal in HUGE_LITERALS:
            if body is None:
                status, text = target.send_raw(method, path.replace(N, literal), None)
            else:
                content = json.dumps(body).replace(f'"{N}"', literal).encode()
                status, text = target.send_raw(method, path, content)
            shown = f"{method} {path} {field}={literal[:8]}"
            if status != 400:
                wrong.append(f"{shown}: {status} {text[:150]}")
                continue
            error = json.loads(text)
            if (error["code"], error["context"].get("field")) != ("VALIDATION_FAILED", field):
                wrong.append(f"{shown}: {text[:200]}")
    shutil.rmtree(root, ignore_errors=True)
    assert not wrong, "\n".join(wrong)


#: Deeper than any decoder's recursion limit (msgspec stops at about 1,000 levels).
DEEP = 100_000


def nested_object(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def nested_array(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def deep_requests(root: str) -> list[tuple[str, bytes, str | None]]:
    """(path, body, the field named): JSON nested :data:`DEEP` levels, in fields the operation
    does not know (msgspec skips them recursively) and in fields it does."""
    cmd = b'"command":"true"'
    objects, arrays = nested_object(DEEP), nested_array(DEEP)
    return [
        ("/api/execute", b"{" + cmd + b',"zz":' + objects + b"}", "zz"),
        ("/api/execute", b"{" + cmd + b',"zz":' + arrays + b"}", "zz"),
        ("/api/execute", b'{"zz":' + arrays + b"," + cmd + b"}", "zz"),
        ("/api/execute", b'{"command":"x","env":{"a":' + arrays + b"}}", "env"),
        ("/api/execute/stream", b"{" + cmd + b',"zz":' + objects + b"}", "zz"),
        ("/api/commands/execute", b"{" + cmd + b',"zz":' + arrays + b"}", "zz"),
        ("/api/list-files", b'{"path":"' + root.encode() + b'","options":{"x":' + arrays + b"}}", "options"),
        ("/api/write", b'{"path":"' + root.encode() + b'/deep","content":"x","zz":' + objects + b"}", "zz"),
        ("/api/execute", arrays, None),
        ("/api/execute", objects, "a"),
    ]


def test_deep_nesting_is_400_naming_the_field(target: Target) -> None:
    """JSON nested 100,000 deep: 400 VALIDATION_FAILED naming the top-level field that holds it.

    Was: 500 INTERNAL_ERROR (a RecursionError from the decoder) whenever the nesting was in a
    field the operation does not know."""
    root = tempfile.mkdtemp(prefix="deep-", dir=target.scratch_parent)
    wrong: list[str] = []
    for path, body, field in deep_requests(root):
        status, text = target.send_raw("POST", path, body)
        shown = f"{path} {body[:40]!r}"
        if status != 400:
            wrong.append(f"{shown}: {status} {text[:200]}")
            continue
        error = json.loads(text)
        named = error["context"].get("field")
        if error["code"] != "VALIDATION_FAILED" or (field is not None and not str(named).startswith(field)):
            wrong.append(f"{shown}: {text[:200]}")
    assert not os.listdir(root)  # the refused write created nothing
    shutil.rmtree(root, ignore_errors=True)
    assert not wrong, "\n".join(wrong)
