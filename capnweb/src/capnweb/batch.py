"""Cap'n Web over HTTP batches: one POST carries every message the client sent until its first
wait, one per line; the answer carries the server's messages the same way. One batch per
session: calls from the server to the client cannot complete in this mode.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

from .session import RpcSession
from .stubs import RpcStub
from .values import Limits, RpcError, SessionClosed
from .websocket import Receive, Scope, Send

#: How long a batch may take to answer before its pending calls are given up.
BATCH_TIMEOUT_S = 300.0


async def _error(send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})


async def serve_http_batch(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    main: object | None,
    limits: Limits | None = None,
    answer_within: float = BATCH_TIMEOUT_S,
    body: bytes | bytearray | None = None,
) -> None:
    """Answer one HTTP batch (POST only; 405 otherwise, 413 over the size limit, four times
    ``limits.max_message_chars``). With ``body``, the caller has read the request's body
    already (within limits of its own) and hands it over: nothing more is read of it.

    A client that goes away before its answer is ready ends the batch's session: the calls it
    made are cancelled, as over a WebSocket that closes, and nothing is answered."""
    limits = limits or Limits()
    if scope.get("method") != "POST":
        await _error(send, 405, "This endpoint only accepts POST requests.", [(b"allow", b"POST")])
        return
    if body is None:
        limit = limits.max_message_chars * 4
        body = bytearray()
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                return
            body += event.get("body", b"")
            if len(body) > limit:
                await _error(send, 413, "Batch too large")
                return
            if not event.get("more_body"):
                break
    try:
        text = body.decode()
    except UnicodeDecodeError:
        await _error(send, 400, "Batch is not UTF-8")
        return
    del body  # the text is what is left of it
    out: list[str] = []
    session = RpcSession(main, send=out.append, limits=limits)
    gone = False
    try:
        start = 0
        while start <= len(text) and session.closed is None:  # one line at a time, no list of copies
            end = text.find("\n", start)
            if end < 0:
                end = len(text)
            if end > start:
                session.receive(text[start:end])
            start = end + 1
        del text
        gone = await _drain_unless_gone(session, receive, answer_within)
    finally:
        session.close("the client went away" if gone else "the batch ended")
    if gone:
        return
    payload = "\n".join(out).encode()
    del out
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone away (the body has been read: nothing else comes)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _drain_unless_gone(session: RpcSession, receive: Receive, within: float) -> bool:
    """Wait (up to ``within`` seconds) until every result the batch asked for is ready; True
    when the client went away first."""
    drained = asyncio.ensure_future(session.drain())
    left = asyncio.ensure_future(_disconnected(receive))
    try:
        done, _ = await asyncio.wait({drained, left}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (drained, left):
            task.cancel()
        await asyncio.gather(drained, left, return_exceptions=True)
    return left in done and drained not in done


@contextlib.asynccontextmanager
async def http_batch_session(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    limits: Limits | None = None,
    request_timeout: float = 60.0,
) -> AsyncIterator[RpcStub]:
    """A one-batch session: every call made before the first ``await`` goes in one POST."""
    import httpx

    out: list[str] = []
    loop = asyncio.get_running_loop()
    sent = False
    task: asyncio.Task[None] | None = None
    session: RpcSession

    async def post(http: httpx.AsyncClient) -> None:
        nonlocal sent
        await asyncio.sleep(0)  # let every caller of this turn add its messages
        sent = True
        body = "\n".join(out)
        out.clear()
        try:
            response = await http.post(url, content=body.encode(), headers={"content-type": "text/plain"})
            if response.status_code != 200:
                raise RpcError("Error", f"RPC batch failed: HTTP {response.status_code} {response.text[:200]}")
            for line in response.text.split("\n"):
                if line:
                    session.receive(line)
            session.close("Batch RPC request ended.")
        except Exception as exc:
            session.close(f"Batch RPC request failed: {exc}")

    async with httpx.AsyncClient(headers=dict(headers or {}), timeout=request_timeout) as http:

        def queue(text: str) -> None:
            nonlocal task
            if sent:
                return  # one batch per session: later messages (releases) have nowhere to go
            out.append(text)
            if task is None:
                task = loop.create_task(post(http))

        session = RpcSession(None, send=queue, limits=limits)
        try:
            yield session.remote_main()
        finally:
            if task is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(task, request_timeout)
            if session.closed is None:
                session.close("the batch session ended")


__all__ = ["SessionClosed", "http_batch_session", "serve_http_batch"]
