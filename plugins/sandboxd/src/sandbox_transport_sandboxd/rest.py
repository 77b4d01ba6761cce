"""The REST listener: ``/v1/files/{path}``, ``/v1/health`` and ``/v1/metadata`` (the spec's
``filesystem/v1`` API), a raw ASGI app over the files and utils services.

Every path is the request's raw path after ``/v1/files/`` percent-decoded once (so ``%2F`` is a
separator, as the SDK sends it) and confined to the workspace by ``files.confine`` (re-rooted,
``..`` and symlink escapes 403) before any other call. Bodies are streamed both ways: a ``GET``
sends the file as ``files.read_bytes`` reads it (one batch at a time, at the client's pace), a
``PUT`` gives ``files.write_file_stream`` the body as it arrives (each chunk counted against the
server's budget, :func:`sandbox_core.intake.stream_body`); a ``multipart/form-data`` body is
parsed as it comes (python-multipart) and its part named ``file`` is the content.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

import msgspec
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from sandbox_core.contract.models.files import (
    ConfinedPath,
    FileErrorEvent,
    FileInfo,
    FileMetadataEvent,
    ListFilesResult,
)
from sandbox_core.edge import header
from sandbox_core.errors import ErrorCode, SandboxError, error_from_code, validation_error
from sandbox_core.intake import Hold, stream_body
from sandbox_core.transport import ServerContext

from .errors import INVALID, mapped
from .settings import SandboxdSettings

#: Answered without the token (the kubelet's probe has none).
PROBES = (("GET", "/v1/health"), ("HEAD", "/v1/health"))

Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

FILES = b"/v1/files"
FILE_METHODS = ("GET", "HEAD", "PUT", "DELETE")
#: Other routes and their methods.
ROUTES: dict[bytes, tuple[str, ...]] = {b"/v1/health": ("GET", "HEAD"), b"/v1/metadata": ("GET", "HEAD")}

#: ``PUT``'s ``mode``: an octal string of permission bits, as sandboxd takes it.
MODE = re.compile(r"0[0-7]{3}")
DEFAULT_MODE = "0644"
#: What ``recursive`` may say (Go's ``strconv.ParseBool``, as sandboxd parses it).
BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}
#: A raw request path longer than this is refused before it is decoded (a decoded path's own
#: limit, 4096 bytes, is the files service's).
MAX_RAW_PATH = 3 * 4096 + len(FILES) + 1
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
#: The owner, group and other rwx triplets of a listing's ``mode`` (``rwxr-xr-x``) as octal.
_RWX = re.compile(r"[r-][w-][xsStT-]")


class Response(Exception):
    """A finished answer other than an error: its status, headers and JSON body (None: none)."""

    def __init__(self, status: int, body: object = None, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers


async def _json(send: Any, status: int, body: object, *, head: bool = False, extra: tuple[Any, ...] = ()) -> None:
    data = msgspec.json.encode(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else data})


async def _empty(send: Any, status: int) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


async def _error(send: Any, exc: SandboxError, *, head: bool = False) -> None:
    where = mapped(exc)
    await _json(send, where.status, {"code": where.code, "message": exc.message}, head=head)


def _query(scope: dict[str, Any]) -> dict[str, str]:
    raw: bytes = scope.get("query_string", b"")
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise validation_error("the query string is not valid percent-encoded UTF-8", "query") from None
    return dict(pairs)


#: :func:`byte_range`'s answer for a range the file cannot satisfy (416).
UNSATISFIABLE = (-1, -1)

_RANGE = re.compile(rb"bytes=(\d{0,19})-(\d{0,19})")


def byte_range(value: bytes, size: int) -> tuple[int, int] | None:
    """The ``[start, end)`` of one ``Range: bytes=a-b`` (``a-``, ``-n`` suffix) of a file of
    ``size`` bytes, as sandboxd's http.ServeContent reads it; :data:`UNSATISFIABLE` when it starts
    past the end; None (the whole file, 200) for anything else: several ranges, another unit, a
    malformed value (a server may ignore a Range it does not serve, RFC 9110 14.2)."""
    found = _RANGE.fullmatch(value.strip())
    if found is None:
        return None
    first, last = found.group(1), found.group(2)
    if not first:  # the last n bytes
        if not last:
            return None
        count = int(last)
        return (max(size - count, 0), size) if count > 0 and size > 0 else UNSATISFIABLE
    start = int(first)
    end = int(last) + 1 if last else size
    if last and end <= start:
        return None
    if start >= size:
        return UNSATISFIABLE
    return start, min(end, size)


def _file_path(raw_path: bytes) -> str:
    """The ``{path}`` of ``/v1/files/{path}``, percent-decoded once (empty: the root); 400 for
    bad percent-encoding, bytes that are not UTF-8, a NUL or an absurd length."""
    if len(raw_path) > MAX_RAW_PATH:
        raise validation_error(f"path is longer than {MAX_RAW_PATH} bytes as sent", "path")
    raw = raw_path[len(FILES) + 1 :]
    if _BAD_ESCAPE.search(raw):
        raise validation_error("path has a '%' that is not followed by two hex digits", "path")
    try:
        path = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise validation_error("path is not valid UTF-8 once percent-decoded", "path") from None
    if "\x00" in path:
        raise validation_error("path must not contain NUL bytes", "path")
    return path


def _octal(mode: str) -> str:
    """A listing's ``rwxr-xr-x`` as sandboxd's ``0755``."""
    bits = 0
    for triplet in _RWX.findall(mode)[:3]:
        bits = bits << 3 | (triplet[0] == "r") << 2 | (triplet[1] == "w") << 1 | (triplet[2] in "xst")
    return f"{bits:04o}"


class FilesApi:
    """The routes, over ``ctx.registry``."""

    def __init__(self, ctx: ServerContext, settings: SandboxdSettings) -> None:
        self.ctx = ctx
        self.registry = ctx.registry
        self.settings = settings
        self.started = time.monotonic()
        self._root: str | None = None

    async def confine(self, path: str) -> str:
        confined: Any = await self.registry.call("files", "confine", {"path": path, "field": "path"})
        assert isinstance(confined, ConfinedPath)
        return confined.resolved

    async def root(self) -> str:
        """The workspace, as ``files.confine`` resolves it."""
        if self._root is None:
            self._root = await self.confine("")
        return self._root

    # routes ----------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        head = method == "HEAD"
        try:
            if raw_path == FILES or raw_path.startswith(FILES + b"/"):
                if method not in FILE_METHODS:
                    raise self.not_allowed(FILE_METHODS)
                path = _file_path(raw_path) if raw_path != FILES else ""
                resolved = await self.confine(path)
                if method in ("GET", "HEAD"):
                    await self.get(resolved, send, receive, head=head, wanted=header(scope["headers"], b"range"))
                elif method == "PUT":
                    await self.put(resolved, scope, receive, send)
                else:
                    await self.delete(resolved, scope, send)
                return
            allowed = ROUTES.get(raw_path)
            if allowed is None:
                raise SandboxError(ErrorCode.FILE_NOT_FOUND, f"No route {scope['path']}", status=404)
            if method not in allowed:
                raise self.not_allowed(allowed)
            if raw_path == b"/v1/health":
                await self.health(send, head)
            else:
                await self.metadata(send, head)
        except Response as done:
            await _json(send, done.status, done.body, head=head, extra=done.headers)
        except SandboxError as exc:
            await _error(send, exc, head=head)

    def not_allowed(self, allowed: tuple[str, ...]) -> Response:
        return Response(
            405,
            {"code": "METHOD_NOT_ALLOWED", "message": f"Method not allowed here; allowed: {', '.join(allowed)}"},
            ((b"allow", ", ".join(allowed).encode()),),
        )

    async def health(self, send: Any, head: bool) -> None:
        if self.registry.draining:
            raise Response(503, {"code": "UNAVAILABLE", "message": "the server is shutting down"})
        await _json(send, 200, {"status": "ok", "uptime_seconds": int(time.monotonic() - self.started)}, head=head)

    async def metadata(self, send: Any, head: bool) -> None:
        result: Any = await self.registry.call("utils", "metadata", {"prefix": self.settings.metadata_env_prefix})
        await _json(send, 200, {"env": dict(result.env)}, head=head)

    # GET, HEAD -------------------------------------------------------------------------------

    async def probe(self, resolved: str) -> FileMetadataEvent | None:
        """The file's metadata (its size), or None for a directory; other errors raise."""
        stream = self.registry.stream("files", "read_stream", {"path": resolved, "encoding": "base64"})
        try:
            first = await anext(stream)
        finally:
            await stream.aclose()
        if isinstance(first, FileMetadataEvent):
            return first
        if isinstance(first, FileErrorEvent) and first.code == ErrorCode.IS_DIRECTORY:
            return None
        if isinstance(first, FileErrorEvent):
            raise error_from_code(first.code or ErrorCode.FILESYSTEM_ERROR, first.error)
        raise SandboxError(ErrorCode.FILESYSTEM_ERROR, f"Cannot read {resolved}")

    async def get(self, resolved: str, send: Any, receive: Any, *, head: bool, wanted: bytes | None) -> None:
        meta = await self.probe(resolved)
        if meta is None:
            await _json(send, 200, await self.listing(resolved), head=head)
            return
        size = meta.size
        span = byte_range(wanted, size) if wanted is not None else None
        if span == UNSATISFIABLE and wanted is not None:
            raise Response(
                416,
                {"code": INVALID.code, "message": f"Range {wanted.decode('latin-1')!r} is outside the file"},
                ((b"content-range", f"bytes */{size}".encode()),),
            )
        status, start, length = (206, span[0], span[1] - span[0]) if span is not None else (200, 0, size)
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(length).encode()),
            (b"accept-ranges", b"bytes"),
        ]
        if status == 206:
            headers.append((b"content-range", f"bytes {start}-{start + length - 1}/{size}".encode()))
        if head:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        params: dict[str, Any] = {"path": resolved}
        if status == 206:
            params.update(offset=start, length=length)
        data = self.registry.stream("files", "read_bytes", params)
        try:
            first = await anext(data, b"")  # a file that cannot be read fails here, before the answer
            await send({"type": "http.response.start", "status": status, "headers": headers})
            # from here on an error cannot be answered: the body ends short, the connection closes
            sending = asyncio.ensure_future(self._send_file(send, first, data, length))
            watch = asyncio.ensure_future(_until_disconnect(receive))
            try:
                await asyncio.wait((sending, watch), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (sending, watch):
                    task.cancel()
                await asyncio.gather(sending, watch, return_exceptions=True)
        finally:
            await data.aclose()

    @staticmethod
    async def _send_file(send: Any, first: object, data: AsyncIterator[object], size: int) -> None:
        """Exactly ``size`` bytes (the length announced) of ``first`` and ``data``; a file that
        shrank meanwhile ends the answer short (the client sees a truncated body)."""
        left = size
        chunk: object = first
        while True:
            assert isinstance(chunk, (bytes, bytearray, memoryview))
            piece = bytes(chunk[:left]) if len(chunk) > left else chunk
            left -= len(piece)
            if piece:
                await send({"type": "http.response.body", "body": piece, "more_body": left > 0})
            if left <= 0:
                return
            chunk = await anext(data, b"")
            if not chunk:
                raise SandboxError(ErrorCode.FILESYSTEM_ERROR, "the file shrank while it was sent")

    async def listing(self, resolved: str) -> dict[str, Any]:
        options = {"includeHidden": True}
        result: Any = await self.registry.call("files", "list_files", {"path": resolved, "options": options})
        assert isinstance(result, ListFilesResult)
        entries = []
        for info in result.files:
            entry = await self.entry(info)
            if entry is not None:
                entries.append(entry)
        root = await self.root()
        return {"path": "/" + resolved[len(root) :].strip("/"), "entries": entries}  # under root (confined)

    async def entry(self, info: FileInfo) -> dict[str, Any] | None:
        """One listing entry as sandboxd has it: a symlink as what it points to (one that
        escapes the workspace or points nowhere is left out)."""
        kind, size = ("directory" if info.type == "directory" else "file"), info.size
        if info.type == "symlink":
            try:
                await self.confine(info.absolute_path)
                meta = await self.probe(info.absolute_path)
            except SandboxError:
                return None
            kind, size = ("directory", 4096) if meta is None else ("file", meta.size)
        return {
            "name": info.name,
            "size": size,
            "type": kind,
            "modified_at": info.modified_at[:19] + "Z",  # RFC 3339, UTC, seconds (sandboxd's)
            "mode": _octal(info.mode),
        }

    # PUT -------------------------------------------------------------------------------------

    async def put(self, resolved: str, scope: dict[str, Any], receive: Any, send: Any) -> None:
        mode = _query(scope).get("mode", DEFAULT_MODE)
        if not MODE.fullmatch(mode):
            raise validation_error(f"mode must be an octal string such as 0644, not {mode!r}", "mode")
        if resolved == await self.root():
            raise SandboxError(ErrorCode.IS_DIRECTORY, "path names the workspace root, a directory")
        hold = Hold(self.ctx.budget)
        body = stream_body(receive, hold=hold, timeout=self.ctx.body_timeout)
        boundary = _boundary(scope)
        data = body if boundary is None else _file_part(body, boundary)
        try:
            await self.registry.call("files", "write_file_stream", {"path": resolved, "data": data, "mode": mode})
        finally:
            await data.aclose()
            await body.aclose()
            hold.release()
        await _empty(send, 204)

    # DELETE ----------------------------------------------------------------------------------

    async def delete(self, resolved: str, scope: dict[str, Any], send: Any) -> None:
        value = _query(scope).get("recursive", "false")
        recursive = BOOLS.get(value)
        if recursive is None:
            raise validation_error(f"recursive must be true or false, not {value!r}", "recursive")
        if resolved == await self.root():
            if not recursive:
                raise SandboxError(
                    ErrorCode.FILE_EXISTS, "the workspace root is never deleted (recursive=true empties it)"
                )
            await self.empty_root(resolved)
        else:
            await self.registry.call("files", "delete", {"path": resolved, "recursive": recursive})
        await _empty(send, 204)

    async def empty_root(self, root: str) -> None:
        """Delete everything in the workspace, the workspace itself kept (sandboxd's recursive
        delete of the root), a listing at a time (a listing is capped) until one is empty."""
        while True:
            options = {"includeHidden": True}
            result: Any = await self.registry.call("files", "list_files", {"path": root, "options": options})
            if not result.files:
                return
            for info in result.files:
                try:
                    await self.registry.call("files", "delete", {"path": info.absolute_path, "recursive": True})
                except SandboxError as exc:
                    if exc.code != ErrorCode.FILE_NOT_FOUND:  # gone meanwhile is fine
                        raise


def _boundary(scope: dict[str, Any]) -> bytes | None:
    """The boundary of a ``multipart/form-data`` body; None for any other (a raw body)."""
    value = header(scope["headers"], b"content-type")
    if value is None:
        return None
    kind, options = parse_options_header(value)
    if kind != b"multipart/form-data":
        return None
    boundary = options.get(b"boundary")
    if not boundary:
        raise validation_error("a multipart/form-data body needs a boundary", "content-type")
    return boundary


class _FilePart:
    """python-multipart's callbacks: collects the data of the first part named ``file``."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.seen = False  # a part named file has begun
        self.inside = False  # in that part's data
        self.field = b""
        self.value = b""
        self.headers: dict[bytes, bytes] = {}

    def on_part_begin(self) -> None:
        self.headers.clear()
        self.inside = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.field.lower()] = self.value
        self.field = self.value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        if options.get(b"name") == b"file" and not self.seen:
            self.seen = self.inside = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.inside:
            self.out.append(bytes(data[start:end]))

    def parser(self, boundary: bytes) -> MultipartParser:
        return MultipartParser(
            boundary,
            {
                "on_part_begin": self.on_part_begin,
                "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value,
                "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished,
                "on_part_data": self.on_part_data,
            },
        )


async def _file_part(body: AsyncIterator[bytes], boundary: bytes) -> AsyncGenerator[bytes, None]:
    """The bytes of the part named ``file`` of a multipart body, as they arrive (the first such
    part; every other part is read past); none: 400 naming ``file``."""
    part = _FilePart()
    try:
        parser = part.parser(boundary)
    except ValueError as exc:  # python-multipart's FormParserError: a boundary over its limit
        raise validation_error(f"the multipart/form-data boundary is refused: {exc}", "content-type") from None
    async for chunk in body:
        try:
            parser.write(chunk)
        except MultipartParseError as exc:
            raise validation_error(f"the multipart/form-data body is malformed: {exc}", "body") from None
        while part.out:
            yield part.out.pop(0)
    parser.finalize()
    if not part.seen:
        raise validation_error("the multipart/form-data body has no part named 'file'", "file")


async def _until_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def make_app(ctx: ServerContext, settings: SandboxdSettings) -> Asgi:
    return FilesApi(ctx, settings)
