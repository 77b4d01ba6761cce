"""The terminal client (contract section a11): :class:`Terminal`, a session's terminal over
``/ws/pty`` for Python programs, and :func:`attach_tty`, that terminal on this process's own
tty (``sandbox attach``).

::

    async with Terminal("http://127.0.0.1:3000", "my-session", cols=100, rows=30) as term:
        print(term.replay)            # what the terminal showed last (up to 256 KiB)
        await term.send(b"ls\\r")      # keys, as a terminal sends them (Enter is \\r)
        await term.resize(120, 40)
        async for chunk in term:       # output until the terminal ends (its shell exited)
            ...

A :class:`Terminal` is used from one task (it is opened and closed in the same task). Failures
raise :class:`TerminalError`: the upgrade refused (with the server's text), an error message
before ``ready``, or the socket closed with anything but 1000. Error messages the server sends
after ``ready`` (a bad resize) are kept in :attr:`Terminal.errors`.

httpx and httpx-ws are imported when a terminal connects, not with this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from sandbox_core.errors import TransportError, upgrade_refused

if TYPE_CHECKING:
    from sandbox_core.transport import ClientContext

PATH = "/ws/pty"
#: Ctrl-] (as telnet): detaches ``sandbox attach`` from the terminal, which runs on.
DETACH_KEY = b"\x1d"
#: The largest message accepted from the server (the replay is at most the server's ring).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class TerminalError(TransportError):
    """The terminal could not be opened, or its socket closed abnormally."""


def terminal_url(url: str, session_id: str, cols: int, rows: int) -> str:
    """The ``/ws/pty`` URL for a server's base URL (http, https, ws or wss; a path prefix is kept)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https"):
        raise TerminalError(message=f"Unsupported URL scheme {parts.scheme!r} in {url!r}", details={"url": url})
    query = urlencode({"sessionId": session_id, "cols": cols, "rows": rows})
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + PATH, query, ""))


class Terminal:
    """A session's terminal: keys in, output out, shared with every other reader of it."""

    def __init__(
        self,
        url: str,
        session_id: str,
        *,
        cols: int = 80,
        rows: int = 24,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = terminal_url(url, session_id, cols, rows)
        self.session_id = session_id
        self.token = token
        self.timeout = timeout
        #: what the terminal had shown before this connection (the server's replay)
        self.replay = b""
        #: error messages the server sent after ``ready`` (the most recent 100)
        self.errors: deque[str] = deque(maxlen=100)
        #: how the socket closed: 1000 when the terminal ended; the server's reason
        self.close_code: int | None = None
        self.close_reason = ""
        self._stack: contextlib.AsyncExitStack | None = None
        self._ws: Any = None

    async def __aenter__(self) -> Terminal:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Open the socket and wait for ``ready`` (the replay is then in :attr:`replay`)."""
        import httpx
        from httpx_ws import WebSocketNetworkError, WebSocketUpgradeError, aconnect_ws

        refused: dict[str, str] = {}

        async def keep_refusal(response: httpx.Response) -> None:
            if response.status_code != 101:  # the server's text (a 101's body is the socket)
                await response.aread()
                refused["text"] = response.text[:1000].strip()

        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        stack = contextlib.AsyncExitStack()
        try:
            client = await stack.enter_async_context(
                httpx.AsyncClient(headers=headers, timeout=self.timeout, event_hooks={"response": [keep_refusal]})
            )
            self._ws = await stack.enter_async_context(
                aconnect_ws(self.url, client, max_message_size_bytes=MAX_MESSAGE_BYTES)
            )
            self._stack = stack
            await asyncio.wait_for(self._until_ready(), self.timeout)
        except BaseException as exc:
            self._stack, self._ws = None, None
            with contextlib.suppress(Exception):
                await stack.aclose()
            if isinstance(exc, WebSocketUpgradeError):
                status = exc.response.status_code
                text = refused.get("text") or exc.response.reason_phrase
                if text.startswith("{"):  # the contract's error body (an edge refusal, a 404)
                    error = upgrade_refused(self.url, "ws", status, text.encode())
                    if status != 404:  # (a 404's message names the transports the server serves)
                        with contextlib.suppress(ValueError, TypeError, KeyError):
                            error.message = f"{error.code}: {json.loads(text)['message']}"
                    text = error.message
                raise TerminalError(
                    message=f"The server refused the terminal ({status}): {text}", details={"status": status}
                ) from None
            if isinstance(exc, TimeoutError):  # (before OSError: it is one)
                raise TerminalError(message=f"The terminal was not ready within {self.timeout:g} s") from None
            if isinstance(exc, (httpx.HTTPError, WebSocketNetworkError, OSError)):
                raise TerminalError(message=f"Cannot reach {self.url}: {exc or type(exc).__name__}") from None
            raise

    async def _until_ready(self) -> None:
        replay = bytearray()
        while True:
            data = await self._receive()
            if data is None:
                raise TerminalError(
                    message=self._closed_message("The terminal closed before it was ready"),
                    details={"closeCode": self.close_code},
                )
            if isinstance(data, bytes):
                replay += data
                continue
            kind, message = data
            if kind == "ready":
                self.replay = bytes(replay)
                return
            if kind == "error":
                self.errors.append(message)

    async def _receive(self) -> bytes | tuple[str, str] | None:
        """The next message: output bytes, a (type, message) control message, or None once
        the socket has closed (its code and reason are then in :attr:`close_code`, :attr:`close_reason`)."""
        from httpx_ws import WebSocketDisconnect, WebSocketNetworkError
        from wsproto.events import BytesMessage, TextMessage

        if self._ws is None:
            return None
        while True:
            try:
                event = await self._ws.receive()
            except WebSocketDisconnect as exc:
                self.close_code, self.close_reason = exc.code, exc.reason or ""
                return None
            except WebSocketNetworkError:
                self.close_code, self.close_reason = 1006, "connection lost"
                return None
            if isinstance(event, BytesMessage):
                return bytes(event.data)
            if isinstance(event, TextMessage):
                try:
                    control = json.loads(event.data)
                except (ValueError, RecursionError):  # not JSON, or nested too deeply to read
                    continue
                if isinstance(control, dict):
                    return str(control.get("type")), str(control.get("message", ""))

    def _closed_message(self, default: str) -> str:
        if self.errors:
            return self.errors[-1]
        if self.close_reason:
            return f"{self.close_reason} (close code {self.close_code})"
        return f"{default} (close code {self.close_code})"

    async def send(self, data: bytes) -> None:
        """Type ``data`` (keys as a terminal sends them: Enter is ``\\r``)."""
        await self._send(self._ws.send_bytes, bytes(data))

    async def resize(self, cols: int, rows: int) -> None:
        """Set the terminal's size (its programs get SIGWINCH)."""
        await self._send(self._ws.send_text, json.dumps({"type": "resize", "cols": cols, "rows": rows}))

    async def _send(self, method: Any, payload: bytes | str) -> None:
        from httpx_ws import WebSocketNetworkError
        from wsproto.utilities import LocalProtocolError

        if self._ws is None:
            raise TerminalError(message="The terminal is not connected")
        try:
            await method(payload)
        except (WebSocketNetworkError, LocalProtocolError, OSError) as exc:
            raise TerminalError(message=f"The terminal's socket is closed: {exc or type(exc).__name__}") from None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.output()

    async def output(self) -> AsyncIterator[bytes]:
        """The terminal's output until it ends (a normal close); any other close raises."""
        while True:
            data = await self._receive()
            if data is None:
                if self.close_code == 1000:
                    return
                raise TerminalError(
                    message=self._closed_message("The terminal's socket closed"), details={"closeCode": self.close_code}
                )
            if isinstance(data, bytes):
                yield data
            elif data[0] == "error":
                self.errors.append(data[1])

    async def aclose(self) -> None:
        """Close the socket (the terminal runs on for its other readers and the next attach)."""
        stack, self._stack = self._stack, None
        self._ws = None
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()


# ---- sandbox attach ----------------------------------------------------------------------------


def _size(*fds: int) -> tuple[int, int]:
    """(columns, rows) of the first of ``fds`` that is a terminal, else 80 x 24."""
    for fd in fds:
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(fd)
            if size.columns > 0 and size.lines > 0:
                return size.columns, size.lines
    return 80, 24


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            import select

            select.select([], [fd], [], 1.0)


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _read_some(fd: int) -> bytes:
    """What is there to read on ``fd`` once it is readable (b"" at end of file)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    try:
        loop.add_reader(fd, _set_once, ready)
    except OSError:  # a regular file or /dev/null (no readiness to wait for: they never block)
        ready.set_result(None)
    else:
        try:
            await ready
        finally:
            loop.remove_reader(fd)
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return await _read_some(fd)
    except OSError:
        return b""


async def run_attached(
    url: str,
    session_id: str,
    *,
    token: str | None = None,
    connect_timeout: float = 30.0,
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    detach_key: bytes = DETACH_KEY,
) -> int:
    """Run the session's terminal on this process's terminal until the user detaches
    (``detach_key``, or end of input), the terminal ends (its shell exited; the session was
    deleted) or a signal (TERM, HUP, INT) arrives; return the exit status (0 on a detach or
    the terminal's end, 1 on an error, 128+N on signal N).

    With a tty on ``stdin`` it is put in raw mode (every key goes to the remote terminal,
    ^C included), the remote size follows the local one (SIGWINCH), and the tty's settings
    are restored on every way out."""
    import termios
    import tty

    stdin = sys.stdin.fileno() if stdin is None else stdin
    stdout = sys.stdout.fileno() if stdout is None else stdout
    stderr = sys.stderr.fileno() if stderr is None else stderr

    def say(text: str) -> None:
        with contextlib.suppress(OSError):
            _write_all(stderr, text.encode())

    is_tty = os.isatty(stdin)
    cols, rows = _size(stdout, stdin)
    term = Terminal(url, session_id, cols=cols, rows=rows, token=token, timeout=connect_timeout)
    try:
        await term.connect()
    except TerminalError as exc:
        say(f"sandbox attach: {exc.message}\n")
        return 1
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[int] = loop.create_future()
    saved = termios.tcgetattr(stdin) if is_tty else None
    handled: list[signal.Signals] = []
    tasks: list[asyncio.Task[str]] = []
    resizing: list[asyncio.Task[None]] = []

    async def show() -> str:
        async for chunk in term:
            _write_all(stdout, chunk)
        return term.close_reason or "Terminal exited"

    async def type_keys() -> str:
        while True:
            data = await _read_some(stdin)
            if not data:
                return "detached (end of input)"
            head, found, _ = data.partition(detach_key)
            if head:
                await term.send(head)
            if found:
                return "detached"

    async def follow_size() -> None:
        with contextlib.suppress(TerminalError):
            await term.resize(*_size(stdout, stdin))

    def on_winch() -> None:
        if not resizing or resizing[-1].done():
            resizing[:] = [loop.create_task(follow_size())]

    def on_signal(signum: int) -> None:
        if not stop.done():
            stop.set_result(128 + signum)

    status = 0
    try:
        if saved is not None:
            tty.setraw(stdin, termios.TCSANOW)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
            handled.append(signum)
        if is_tty:
            loop.add_signal_handler(signal.SIGWINCH, on_winch)
            handled.append(signal.SIGWINCH)
        say(f"[attached to session {session_id!r}; Ctrl-] detaches]\r\n")
        _write_all(stdout, term.replay)
        await term.resize(cols, rows)  # a terminal someone else started takes this size too
        tasks = [loop.create_task(show()), loop.create_task(type_keys())]
        waiting: list[asyncio.Future[Any]] = [*tasks, stop]
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if stop in done:
            status = stop.result()
            outcome = f"stopped by signal {status - 128}"
        else:
            outcome = next(task for task in tasks if task in done).result()
    except TerminalError as exc:
        outcome, status = f"error: {exc.message}", 1
    finally:
        stop.cancel()
        for task in [*tasks, *resizing]:
            task.cancel()
        for task in [*tasks, *resizing]:
            with contextlib.suppress(BaseException):
                await task
        for signum in handled:
            loop.remove_signal_handler(signum)
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        await term.aclose()
    say(f"\r\n[{outcome}]\n")
    return status


async def attach_tty(ctx: ClientContext, session_id: str) -> int:
    """``sandbox attach``: :func:`run_attached` with the client's URL, token and timeout."""
    return await run_attached(ctx.url, session_id, token=ctx.token, connect_timeout=ctx.timeout)
