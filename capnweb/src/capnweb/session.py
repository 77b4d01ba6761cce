"""One Cap'n Web session: the import and export tables, the eight messages, calls, pipelining,
ownership and streams. Sans-IO: messages come in through :meth:`RpcSession.receive` and go out
through the ``send`` callback; the transport (:mod:`.websocket`, :mod:`.batch`) moves them.

Incoming calls are delivered in message order: a call whose target and arguments are ready runs
(or, for a coroutine, is scheduled) before the next message is read; others wait for what they
need and then run, so calls on one promise keep their order. Results go back in completion order.

IDs follow the reference: each side numbers its imports 1, 2, 3, ... as it sends ``push``,
``stream`` and ``pipe`` (the receiver numbers its exports in step), and its exports -1, -2, ...
as it exports stubs, promises and writables; no ID is ever reused. Every export of a value gets
a fresh ID (as the reference does), and everything is freed when the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, NoReturn

import msgspec

from .codec import Devaluator, Evaluator, Pending, PendingCount, as_json, check_id, error_name
from .mapper import Mapper, MapRecorder, Placeholder, record_map
from .streams import Holding, LocalWritable, Pipe, ReadableStream, Rejection, StreamSender, WritableStream
from .stubs import Path, RpcPromise, RpcStub, is_remote, not_a_function, stub_ref
from .targets import RpcTarget, callable_at, get_property
from .values import UNDEFINED, Budget, Limits, ProtocolError, RpcError, SessionClosed

log = logging.getLogger("capnweb")

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()

SHUTDOWN_REASON = "RPC session was shut down by disposing the main stub"
ABORT_CLOSE_CODE = 3000
#: How many table entries the end of a session frees per turn of the event loop.
TEARDOWN_STEPS = 1000


#: Tasks of ended sessions still running (see :meth:`RpcSession._spawn_detached`).
_DETACHED: set[asyncio.Task[Any]] = set()


def _consume(fut: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (a session ends many futures nobody awaits), and let
    go of the frames it was raised through: a failed call's future lives in the exports table
    until the peer releases it, and those frames hold the call's arguments (megabytes, for a
    large one). What is sent of an error is its name, message and properties."""
    if not fut.cancelled() and (exc := fut.exception()) is not None:
        _drop_frames(exc)


def _drop_frames(exc: BaseException) -> None:
    """Clear the traceback of ``exc`` and of every exception it was raised from or during."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.with_traceback(None)
        todo += [current.__cause__, current.__context__]


class Import:
    """An entry of our imports table: something the peer exports to us."""

    __slots__ = ("future", "id", "local", "local_only", "pulled", "remote", "stream")

    def __init__(self, import_id: int, future: asyncio.Future[Any] | None = None, *, stream: bool = False) -> None:
        self.id = import_id
        self.future = future  # None for a plain stub; the result for a promise
        self.remote = 1  # times the peer introduced it (what a release gives back)
        self.local = 1  # live local handles (stubs); the import is released at 0
        self.pulled = False
        self.stream = stream  # a stream write: auto-released by the peer, never released by us
        self.local_only = False  # a promise resolved on this side (nothing to pull or release)


class Export:
    """An entry of our exports table: something we export to the peer."""

    __slots__ = ("deps", "future", "owned", "pulled", "refcount")

    def __init__(self, future: asyncio.Future[Any], *, owned: bool = False) -> None:
        self.future = future
        self.refcount = 1
        self.pulled = False
        self.deps = 0  # pipelined work waiting on it (a release does not cancel it then)
        self.owned = owned  # a reference to a local object (its disposal is counted)


class RpcSession:
    """A session with one peer. ``main`` is what the peer's import 0 reaches (None: nothing).

    ``send(text)`` must queue one message for the peer without blocking; ``on_close(code,
    reason)`` is called once when the session ends on this side (abort or main stub disposed)
    so the transport can close the connection after sending what is queued.
    """

    def __init__(
        self,
        main: object | None = None,
        *,
        send: Callable[[str], None],
        on_close: Callable[[int, str], None] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self._send_text = send
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        self._imports: dict[int, Import] = {0: Import(0)}
        self._peer_imports = 0  # the imports the peer introduced (negative ids): max_imports
        self._pending = PendingCount(self.limits.max_pending)  # the results its messages wait for
        self._exports: dict[int, Export] = {}
        self._pipes: dict[int, Pipe] = {}
        self._next_import = 1
        self._next_export = -1
        self._peer_next = 1
        self._tasks: set[asyncio.Future[Any]] = set()
        self._unsent: set[asyncio.Future[Any]] = set()  # pulled results not yet sent (drain)
        self._target_refs: dict[int, int] = {}
        self._on_broken: list[Callable[[SessionClosed], None]] = []
        self._recording: MapRecorder | None = None
        #: the bytes the incoming streams of this session hold (within the shared budget, if any)
        self.stream_buffers = Budget(
            self.limits.max_session_stream_buffer, self.limits.shared_stream_buffer, label="this session's streams"
        )
        self.closed: SessionClosed | None = None
        if main is None:
            first = self._failed(RpcError("Error", "This connection has no main object."))
        else:
            first = self.resolved(main)
            self._ref_target(main)
        self._exports[0] = Export(first, owned=main is not None)

    # --- plumbing -----------------------------------------------------------------------

    @contextlib.contextmanager
    def recording(self, recorder: MapRecorder) -> Iterator[None]:
        """Package-internal (:func:`.mapper.record_map`): while a mapper is recorded, the stubs
        it uses and its calls are recorded by ``recorder`` instead of sent."""
        self._recording = recorder
        try:
            yield
        finally:
            self._recording = None

    def _future(self) -> asyncio.Future[Any]:
        fut = self._loop.create_future()
        fut.add_done_callback(_consume)
        return fut

    def resolved(self, value: Any) -> asyncio.Future[Any]:
        """A future already resolved with ``value`` (package-internal: how a running mapper
        refers to a plain value)."""
        fut = self._future()
        fut.set_result(value)
        return fut

    def _failed(self, exc: BaseException) -> asyncio.Future[Any]:
        fut = self._future()
        fut.set_exception(exc.with_traceback(None))  # its frames (and their values) are not kept
        return fut

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_consume)
        return task

    def _as_future(self, result: Any) -> asyncio.Future[Any]:
        """A call's result as a future (a coroutine runs as a task of this session; a result
        that is itself a promise is waited for; cancelling the future cancels the task)."""
        if asyncio.iscoroutine(result):
            return self._follow(self._spawn(result))
        if isinstance(result, asyncio.Future):
            result.add_done_callback(_consume)
            return self._follow(result)
        if isinstance(result, RpcPromise) or inspect.isawaitable(result):
            return self._spawn(self._await(result))
        return self.resolved(result)

    def _follow(self, fut: asyncio.Future[Any]) -> asyncio.Future[Any]:
        out = self._future()
        fut.add_done_callback(functools.partial(self._follow_step, out))
        out.add_done_callback(functools.partial(_cancel_with, fut))
        return out

    def _follow_step(self, out: asyncio.Future[Any], done: asyncio.Future[Any]) -> None:
        # (a method and partials, not a closure calling itself: that cycle kept every result
        # alive until the garbage collector's next full pass)
        if out.done():
            return
        if done.cancelled():
            out.cancel()
        elif (exc := done.exception()) is not None:
            out.set_exception(exc)
        else:
            value = done.result()
            if isinstance(value, RpcPromise) or (inspect.isawaitable(value) and not isinstance(value, RpcStub)):
                self._as_future(value).add_done_callback(functools.partial(self._follow_step, out))
            else:
                out.set_result(value)

    async def _await(self, awaitable: Awaitable[Any]) -> Any:
        value = await awaitable
        while isinstance(value, RpcPromise) or (inspect.isawaitable(value) and not isinstance(value, RpcStub)):
            value = await value  # a promise that resolves to a promise: wait for the end
        return value

    def _send(self, message: list[Any]) -> int:
        if self.closed is not None:
            raise self.closed
        text = _encoder.encode(message).decode()
        self._send_text(text)
        return len(text)

    def _alloc_import(self, entry_future: asyncio.Future[Any] | None, *, stream: bool = False) -> Import:
        entry = Import(self._next_import, entry_future, stream=stream)
        self._imports[entry.id] = entry
        self._next_import += 1
        return entry

    def _add_peer_import(self, entry: Import) -> None:
        """Enter what the peer exports to us (a negative id), within ``max_imports``."""
        if self._peer_imports >= self.limits.max_imports:
            raise ProtocolError(
                f"the peer made this side hold {self._peer_imports} of its objects and promises (the limit)"
            )
        self._imports[entry.id] = entry
        self._peer_imports += 1

    def _forget_import(self, entry: Import) -> None:
        del self._imports[entry.id]
        if entry.id < 0:
            self._peer_imports -= 1

    # --- public ---------------------------------------------------------------------------

    def remote_main(self) -> RpcStub:
        """The peer's main object (import 0). Disposing it ends the session."""
        return RpcStub(self, self._imports.get(0) or Import(0))

    def on_broken(self, callback: Callable[[SessionClosed], None]) -> None:
        """Call ``callback(error)`` when the session ends (at once if it has)."""
        if self.closed is not None:
            callback(self.closed)
        else:
            self._on_broken.append(callback)

    def stats(self) -> dict[str, int]:
        """How many entries the tables hold (each has the main object at 0 while open)."""
        return {"imports": len(self._imports), "exports": len(self._exports), "pipes": len(self._pipes)}

    async def drain(self) -> None:
        """Wait until every result the peer asked for has been sent (HTTP batch answers then)."""
        while self._unsent and self.closed is None:
            await asyncio.wait(list(self._unsent))
            await asyncio.sleep(0)

    def receive(self, text: str | bytes) -> None:
        """Handle one message from the peer (dispatching its call before returning)."""
        if self.closed is not None:
            return
        try:
            if len(text) > self.limits.max_message_chars:
                raise ProtocolError(f"message of {len(text)} characters is over the limit")
            try:
                message = _decoder.decode(text)
            except msgspec.DecodeError as exc:
                raise ProtocolError(f"message is not JSON: {exc}") from None
            self._dispatch(message)
        except (ProtocolError, RecursionError) as exc:
            self.abort(RpcError("Error", f"bad RPC message: {exc}" if isinstance(exc, ProtocolError) else "too deep"))

    def abort(self, error: BaseException) -> None:
        """End the session on our side: tell the peer why, fail everything, close."""
        if self.closed is not None:
            return
        with contextlib.suppress(Exception):
            self._send(["abort", Devaluator(self).devaluate_error(error)])
        self._end(SessionClosed(f"RPC session aborted: {error}", error), (ABORT_CLOSE_CODE, str(error)))

    def close(self, reason: str = "the connection closed") -> None:
        """The transport is gone: fail every pending call and stream (nothing is sent)."""
        self._end(SessionClosed(f"RPC session ended: {reason}"), None)

    # --- incoming messages ------------------------------------------------------------------

    def _dispatch(self, message: Any) -> None:
        if not isinstance(message, list) or not message or not isinstance(message[0], str):
            raise ProtocolError(f"{as_json(message)}")
        kind, n = message[0], len(message)
        if kind == "push" and n == 2:
            self._on_push(message[1], auto=False)
        elif kind == "pull" and n == 2:
            self._on_pull(check_id(message[1]))
        elif kind in ("resolve", "reject") and n == 3:
            self._on_settle(check_id(message[1]), message[2], kind == "reject")
        elif kind == "release" and n == 3:
            count = message[2]
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise ProtocolError(f"invalid release count: {count!r}")
            self._on_release(check_id(message[1]), count)
        elif kind == "stream" and n == 2:
            self._on_push(message[1], auto=True)
        elif kind == "pipe" and n == 1:
            self._on_pipe()
        elif kind == "abort" and n == 2:
            self._on_abort(message[1])
        else:
            raise ProtocolError(f"{as_json(message)}")

    def _check_room(self) -> None:
        if len(self._exports) >= self.limits.max_exports:
            raise ProtocolError(f"the peer holds {len(self._exports)} objects here without releasing them (the limit)")

    def _on_push(self, expr: Any, *, auto: bool) -> None:
        self._check_room()
        export_id = self._peer_next
        self._peer_next += 1
        evaluator = Evaluator(self)
        try:
            value = evaluator.evaluate(expr)
            fut = self._future_of(value, evaluator)
        except RpcError as exc:  # a value this side refuses: that call fails, the session goes on
            fut = self._failed(exc)
        self._exports[export_id] = Export(fut)
        if auto:
            self._on_pull(export_id, auto=True)

    def _on_pull(self, export_id: int, *, auto: bool = False) -> None:
        entry = self._exports.get(export_id)
        if entry is None:
            raise ProtocolError(f"pull of unknown export {export_id}")
        if entry.pulled:
            return
        entry.pulled = True
        fut = entry.future
        if fut.done():
            self._send_result(export_id, entry, auto)
        else:
            self._unsent.add(fut)
            fut.add_done_callback(lambda _: self._send_result(export_id, entry, auto))

    def _send_result(self, export_id: int, entry: Export, auto: bool) -> None:
        self._unsent.discard(entry.future)
        if self.closed is not None:
            return
        fut = entry.future
        dev = Devaluator(self)
        if fut.cancelled():
            message = ["reject", export_id, dev.devaluate_error(RpcError("Error", "The call was cancelled"))]
        elif (exc := fut.exception()) is not None:
            message = ["reject", export_id, self._devaluate_rejection(dev, exc)]
        else:
            try:
                message = ["resolve", export_id, dev.devaluate(fut.result())]
            except RpcError as error:
                dev = Devaluator(self)
                message = ["reject", export_id, dev.devaluate_error(error)]
        try:
            self._send(message)
        except SessionClosed:
            return
        for hook in dev.after_send:
            hook()
        if auto and self._exports.get(export_id) is entry:
            del self._exports[export_id]

    def _devaluate_rejection(self, dev: Devaluator, exc: BaseException) -> Any:
        if isinstance(exc, Rejection):
            try:
                return dev.devaluate(exc.value)
            except RpcError:
                return dev.devaluate_error(exc)
        if not isinstance(exc, (RpcError, SessionClosed)) and not isinstance(exc, Exception):
            exc = RpcError("Error", "internal error")
        return dev.devaluate_error(exc)

    def _on_settle(self, import_id: int, expr: Any, rejected: bool) -> None:
        entry = self._imports.get(import_id)
        evaluator = Evaluator(self)
        try:
            value = evaluator.evaluate(expr)
        except RpcError as exc:
            value, rejected = exc, True
        if entry is None or entry.future is None or entry.future.done():
            for stub in evaluator.stubs:  # nobody wants it: let the peer free what it sent
                stub.dispose()
            return
        target = entry.future
        if rejected:
            error = value if isinstance(value, BaseException) else Rejection(value)
            target.set_exception(error)
            self._after_settle(entry)
            return
        settled = self._future_of(value, evaluator)

        def finish(fut: asyncio.Future[Any]) -> None:
            if not target.done():
                if fut.cancelled():
                    target.set_exception(SessionClosed("cancelled"))
                elif (exc := fut.exception()) is not None:
                    target.set_exception(exc)
                else:
                    target.set_result(fut.result())
            self._after_settle(entry)

        if settled.done():
            finish(settled)
        else:
            settled.add_done_callback(finish)

    def _after_settle(self, entry: Import) -> None:
        if entry.stream:
            self._imports.pop(entry.id, None)
            return
        if self._imports.get(entry.id) is entry:
            self._forget_import(entry)
            if self.closed is None:
                self._send(["release", entry.id, entry.remote])

    def _on_release(self, export_id: int, count: int) -> None:
        entry = self._exports.get(export_id)
        if entry is None:
            raise ProtocolError(f"release of unknown export {export_id}")
        entry.refcount -= count
        if entry.refcount < 0:
            raise ProtocolError(f"release of export {export_id} below zero")
        if entry.refcount == 0 and export_id != 0:
            del self._exports[export_id]
            self._pipes.pop(export_id, None)
            self._dispose_export(entry)

    def _dispose_export(self, entry: Export) -> None:
        fut = entry.future
        if not fut.done():
            if entry.deps == 0:
                fut.cancel()  # nobody wants the result any more: the call is cancelled
            return
        if fut.cancelled() or fut.exception() is not None:
            return
        value = fut.result()
        if isinstance(value, LocalWritable):
            self._spawn(_abort_sink(value))
        elif isinstance(value, Pipe) and not value.closed:  # its reader would wait forever
            value.fail(RpcError("Error", "The stream was released without being closed"))
        if entry.owned:
            self._unref_target(value)

    def _on_pipe(self) -> None:
        self._check_room()
        export_id = self._peer_next
        self._peer_next += 1
        pipe = Pipe(self._holding())
        self._exports[export_id] = Export(self.resolved(pipe))
        self._pipes[export_id] = pipe

    def _holding(self) -> Holding:
        """The account of one incoming stream's unread chunks (a sender past its own limit has
        ignored flow control: the session aborts)."""
        return Holding(self.limits.max_stream_buffer, self.stream_buffers, self.abort)

    def _on_abort(self, expr: Any) -> None:
        try:
            reason: Any = Evaluator(self).evaluate(expr)
        except (ProtocolError, RpcError, RecursionError):
            reason = RpcError("Error", "the peer aborted the session")
        error = reason if isinstance(reason, BaseException) else RpcError("Error", str(reason))
        self._end(SessionClosed(f"the peer aborted the session: {error}", error), (ABORT_CLOSE_CODE, str(error)))

    # --- evaluation (the Importer protocol of .codec) ------------------------------------------

    def _future_of(self, value: Any, evaluator: Evaluator) -> asyncio.Future[Any]:
        """The value with every promise in it substituted, as a future."""
        pending = evaluator.pending
        if not pending:
            return self.resolved(value)
        if len(pending) == 1 and pending[0][2] is value:
            evaluator.pending.clear()
            return value.future

        async def substitute() -> Any:
            results = await asyncio.gather(*(p.future for _, _, p in pending))
            root = value
            for (_, _, placeholder), result in zip(pending, results, strict=True):
                if placeholder is root:
                    root = result
            evaluator.substitute(list(results))
            return root

        return self._spawn(substitute())

    def _export_entry(self, export_id: int) -> Export:
        entry = self._exports.get(export_id)
        if entry is None:
            raise ProtocolError(f"reference to unknown export {export_id}")
        return entry

    def ref(self, evaluator: Evaluator, ref_id: Any, path: Any, args: Any, promise: bool) -> Any:
        entry = self._export_entry(ref_id)
        return self.ref_future(evaluator, entry.future, path, args, promise, entry)

    def ref_future(
        self,
        evaluator: Evaluator,
        target: asyncio.Future[Any],
        path: Path,
        args: list[Any] | None,
        promise: bool,
        entry: Export | None = None,
    ) -> Any:
        if args is None:
            if not path and target.done() and not target.cancelled() and target.exception() is None:
                return target.result()  # a reference to our own object: the object itself
            fut = self._get(target, path)
        else:
            sub = Evaluator(evaluator.importer)
            values = sub.evaluate_args(args)
            fut = self._deliver(target, path, values, sub)
        if entry is not None and not fut.done():
            entry.deps += 1

            def undep(_: asyncio.Future[Any]) -> None:
                entry.deps -= 1

            fut.add_done_callback(undep)
        return Pending(fut, self._pending)

    def _get(self, target: asyncio.Future[Any], path: Path) -> asyncio.Future[Any]:
        if target.done():
            return self._run_get(target, path)
        # a callback, not a task: a message may pipeline on one pending result many times
        out = self._future()
        target.add_done_callback(functools.partial(self._get_when_done, out, path))
        return out

    def _get_when_done(self, out: asyncio.Future[Any], path: Path, target: asyncio.Future[Any]) -> None:
        if out.done():
            return
        if target.cancelled():
            out.cancel()
            return
        if self.closed is not None:
            out.set_exception(self.closed)
            return
        value = self._run_get(target, path)
        value.add_done_callback(functools.partial(self._follow_step, out))
        out.add_done_callback(functools.partial(_cancel_with, value))

    def _run_get(self, target: asyncio.Future[Any], path: Path) -> asyncio.Future[Any]:
        try:
            value = target.result()
            for index, name in enumerate(path):
                if is_remote(value):
                    return self._as_future(_walk(value, path[index:]))
                value = get_property(value, name)
        except Exception as exc:
            return self._failed(exc)
        return self._as_future(value)

    def _deliver(self, target: asyncio.Future[Any], path: Path, args: list[Any], sub: Evaluator) -> asyncio.Future[Any]:
        if target.done() and not sub.pending:
            fut = self._invoke(target, path, args)
        else:
            fut = self._spawn(self._deliver_later(target, path, args, sub))
        if sub.stubs:
            stubs = list(sub.stubs)

            def dispose_params(_: asyncio.Future[Any]) -> None:
                if self.closed is not None:
                    return  # the session's end has freed them all
                for stub in stubs:  # a call's parameters are disposed when it returns
                    stub.dispose()

            fut.add_done_callback(dispose_params)
        return fut

    async def _deliver_later(self, target: asyncio.Future[Any], path: Path, args: list[Any], sub: Evaluator) -> Any:
        await asyncio.shield(target)
        if sub.pending:
            results = await asyncio.gather(*(p.future for _, _, p in sub.pending))
            sub.substitute(list(results))
        return await self._invoke(target, path, args)

    def _invoke(self, target: asyncio.Future[Any], path: Path, args: Sequence[Any]) -> asyncio.Future[Any]:
        try:
            value = target.result()
            if not path:
                if is_remote(value):
                    return self._as_future(value(*args))
                if not callable(value) or isinstance(value, (RpcTarget, type)):
                    raise not_a_function("")
                result = value(*args)
            else:
                parent = value
                for index, name in enumerate(path[:-1]):
                    if is_remote(parent):
                        return self._as_future(_walk(parent, path[index:])(*args))
                    parent = get_property(parent, name)
                if is_remote(parent):
                    return self._as_future(_walk(parent, path[-1:])(*args))
                result = callable_at(parent, path[-1])(*args)
        except Exception as exc:
            return self._failed(exc)
        return self._as_future(result)

    def remap_expr(self, evaluator: Evaluator, ref_id: Any, path: Any, captures: Any, instructions: Any) -> Any:
        entry = self._export_entry(ref_id)
        caps = [self._capture(evaluator, c) for c in captures]
        return self.spawn_remap(entry.future, path, caps, instructions, Budget(self.limits.max_message_chars))

    def _capture(self, evaluator: Evaluator, capture: Any) -> Any:
        if isinstance(capture, list) and len(capture) == 2 and capture[0] in ("import", "export"):
            if capture[0] == "import":
                entry = self._export_entry(check_id(capture[1]))
                return entry.future
            return self.resolved(self.import_export(evaluator, check_id(capture[1])))
        raise ProtocolError(f"invalid remap capture: {as_json(capture)}")

    def spawn_remap(
        self, target: asyncio.Future[Any], path: Path, captures: list[Any], instructions: Any, work: Budget
    ) -> Pending:
        """Apply a peer's mapper to a value, as a task (its result is pending). A mapper's
        instructions are evaluated once per element, so ``work`` (shared with the maps it runs
        inside and that run inside it) bounds the characters of instructions evaluated to what
        one message may carry."""
        return Pending(self._spawn(self._run_remap(target, path, captures, instructions, work)), self._pending)

    async def _run_remap(
        self, target: asyncio.Future[Any], path: Path, captures: list[Any], instructions: Any, work: Budget
    ) -> Any:
        value = await asyncio.shield(target)
        for index, name in enumerate(path):
            if is_remote(value):
                value = await _walk(value, path[index:])
                break
            value = get_property(value, name)
        caps = [await c if isinstance(c, asyncio.Future) else c for c in captures]
        if value is None or value is UNDEFINED:
            return value
        count = len(value) if isinstance(value, list) else 1
        size = len(_encoder.encode(instructions))
        if work.take(count * size) is not None:
            raise RpcError(
                "RangeError",
                f"map() refused: {size} characters of instructions for {count} element(s) would make "
                f"it evaluate more than one message may carry ({work.limit} characters)",
            )
        if isinstance(value, list):
            return list(await asyncio.gather(*(self._map_one(item, caps, instructions, work) for item in value)))
        return await self._map_one(value, caps, instructions, work)

    async def _map_one(self, item: Any, captures: list[Any], instructions: list[Any], work: Budget) -> Any:
        mapper = Mapper(self, item, captures, work)
        for instruction in instructions:
            evaluator = Evaluator(mapper)
            value = evaluator.evaluate(instruction)
            mapper.values.append(await self._future_of(value, evaluator))
        return mapper.values[-1]

    def import_export(self, evaluator: Evaluator, export_id: Any) -> RpcStub:
        if export_id >= 0:
            raise ProtocolError(f"an exported stub must have a negative id, not {export_id}")
        entry = self._imports.get(export_id)
        if entry is None:
            entry = Import(export_id)
            self._add_peer_import(entry)
        else:
            entry.remote += 1
            entry.local += 1
        stub = RpcStub(self, entry)
        evaluator.stubs.append(stub)
        return stub

    def import_promise(self, evaluator: Evaluator, export_id: Any) -> Pending:
        if export_id >= 0 or export_id in self._imports:
            raise ProtocolError(f"an exported promise must have a new negative id, not {export_id}")
        entry = Import(export_id, self._future())
        entry.pulled = True
        self._add_peer_import(entry)
        return Pending(entry.future, self._pending)  # type: ignore[arg-type]

    def import_writable(self, evaluator: Evaluator, export_id: Any) -> WritableStream:
        if export_id >= 0 or export_id in self._imports:
            raise ProtocolError(f"an exported writable must have a new negative id, not {export_id}")
        entry = Import(export_id)
        self._add_peer_import(entry)
        return WritableStream.from_peer(self, entry)

    def claim_readable(self, evaluator: Evaluator, pipe_id: Any) -> ReadableStream:
        pipe = self._pipes.pop(pipe_id, None)
        if pipe is None:
            raise ProtocolError(f"readable end of unknown or already used pipe {pipe_id}")
        return ReadableStream.from_pipe(pipe)

    # --- outgoing (the Exporter protocol of .codec) ---------------------------------------------

    def _ref_target(self, value: object) -> None:
        if isinstance(value, RpcTarget):
            self._target_refs[id(value)] = self._target_refs.get(id(value), 0) + 1

    def _unref_target(self, value: object) -> None:
        if not isinstance(value, RpcTarget):
            return
        count = self._target_refs.get(id(value), 0) - 1
        if count > 0:
            self._target_refs[id(value)] = count
            return
        self._target_refs.pop(id(value), None)
        dispose = getattr(value, "__rpc_dispose__", None)
        if dispose is not None:
            try:
                dispose()
            except Exception:
                log.exception("capnweb: __rpc_dispose__ failed")

    def export_local(self, value: object) -> int:
        export_id = self._next_export
        self._next_export -= 1
        self._exports[export_id] = Export(self.resolved(value), owned=True)
        self._ref_target(value)
        return export_id

    def export_promise(self, awaitable: Any) -> int:
        export_id = self._next_export
        self._next_export -= 1
        entry = Export(self._as_future(awaitable))
        self._exports[export_id] = entry
        self._on_pull(export_id)  # the peer takes it as pulled: the result goes unprompted
        return export_id

    def export_writable(self, writable: Any) -> int:
        sink = writable.sink
        if sink is None:
            raise RpcError("TypeError", "Cannot pass on a WritableStream from the peer")
        return self.export_local(LocalWritable(sink, self._holding()))

    def is_remote(self, value: object) -> bool:
        return is_remote(value) or (self._recording is not None and isinstance(value, Placeholder))

    def is_readable(self, value: object) -> bool:
        return isinstance(value, ReadableStream)

    def is_writable(self, value: object) -> bool:
        return isinstance(value, WritableStream)

    def devaluate_remote(self, value: Any) -> Any:
        if self._recording is not None:
            return self._recording.capture(value)
        session, entry, rpc_path = stub_ref(value)
        if session is not self:
            raise RpcError("TypeError", "Cannot pass a stub of one session to another session")
        path = list(rpc_path)
        fut = entry.future
        if fut is not None and fut.done():
            if fut.cancelled() or fut.exception() is not None:
                raise RpcError("Error", "Cannot pass a promise that failed")
            return Devaluator(self).devaluate(_walk_local(fut.result(), path))
        if entry.local_only or (self._imports.get(entry.id) is not entry):
            raise RpcError("Error", "Attempted to use an RPC stub after it was disposed.")
        if isinstance(value, RpcStub) and fut is None and not path:
            return ["import", entry.id]
        return ["pipeline", entry.id, path] if path else ["pipeline", entry.id]

    def devaluate_readable(self, stream: Any, after_send: list[Callable[[], None]]) -> Any:
        source = stream.take_source()
        pipe = self._alloc_import(None)
        self._send(["pipe"])

        heartbeat = (stream.heartbeat, stream.heartbeat_chunk) if stream.heartbeat else None

        def start_pump() -> None:
            self._spawn(self._pump(pipe, source, heartbeat))

        after_send.append(start_pump)
        return ["readable", pipe.id]

    async def _pump(self, pipe: Import, source: AsyncIterator[Any], heartbeat: tuple[float, Any] | None) -> None:
        sender = StreamSender(self, pipe)
        chunks = source if heartbeat is None else _with_heartbeat(source, *heartbeat, sender.failed)
        try:
            try:
                async for chunk in chunks:
                    await sender.write(chunk)
            except (SessionClosed, Rejection, RpcError):
                if sender.done or self.closed is not None:
                    return
                raise
            await sender.close()
        except (SessionClosed, Rejection, RpcError):
            pass  # the reader cancelled, or the session ended: stop the source
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the source failed: the reader gets the error
            if self.closed is None:
                sender.abort(RpcError(error_name(exc), str(exc) or type(exc).__name__))
        finally:
            for iterator in (chunks, source) if chunks is not source else (source,):
                aclose = getattr(iterator, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()
            self.drop_local_ref(pipe)

    def send_stream(self, target: Import, method: str, args: list[Any]) -> tuple[asyncio.Future[Any], int]:
        """Send a ``stream`` message calling ``method`` on a writable of the peer."""
        if self.closed is not None:
            return self._failed(self.closed), 0
        dev = Devaluator(self)
        expr = ["stream", ["pipeline", target.id, [method], [dev.devaluate(a) for a in args]]]
        entry = self._alloc_import(self._future(), stream=True)
        size = self._send(expr)
        for hook in dev.after_send:
            hook()
        assert entry.future is not None
        return entry.future, size

    # --- calls from this side (used by stubs) ------------------------------------------------------

    def call_import(self, entry: Import, path: Path, args: Sequence[Any]) -> RpcPromise:
        if self._recording is not None:
            return self._recording.call(RpcPromise(self, entry, path), args)  # type: ignore[return-value]
        if entry.future is not None and entry.future.done():  # a resolved promise: its value is here
            return self._local_promise(self._invoke(entry.future, path, args))
        if self.closed is not None:
            return self._local_promise(self._failed(self.closed))
        if entry.local_only or self._imports.get(entry.id) is not entry:
            return self._local_promise(
                self._failed(RpcError("Error", "Attempted to use an RPC stub after it was disposed."))
            )
        try:
            dev = Devaluator(self)
            exprs = [dev.devaluate(a) for a in args]
        except RpcError as exc:
            return self._local_promise(self._failed(exc))
        new = self._alloc_import(self._future())
        self._send(["push", ["pipeline", entry.id, list(path), exprs]])
        for hook in dev.after_send:
            hook()
        return RpcPromise(self, new)

    def _local_promise(self, fut: asyncio.Future[Any]) -> RpcPromise:
        entry = Import(0, fut)
        entry.local_only = True
        return RpcPromise(self, entry)

    async def resolve_import(self, entry: Import, path: Path) -> Any:
        try:
            return await self._resolve_import(entry, path)
        except Exception as exc:
            # The future keeps its exception: raised as it is, it would carry a traceback holding
            # these frames, which hold the future (a cycle kept alive until the garbage
            # collector's next full pass). The stored one drops its traceback; a copy is raised.
            _raise_copy(exc.with_traceback(None))

    async def _resolve_import(self, entry: Import, path: Path) -> Any:
        fut = entry.future
        if fut is not None and (fut.done() or entry.local_only):
            value = await fut
            return await self._await(_walk(value, path)) if path else value
        if self.closed is not None:
            raise self.closed
        if path or fut is None:
            if not path:
                raise RpcError("TypeError", "A stub is not a promise: call it, or read a property")
            if self._imports.get(entry.id) is not entry:
                raise RpcError("Error", "Attempted to use an RPC stub after it was disposed.")
            new = self._alloc_import(self._future())
            self._send(["push", ["pipeline", entry.id, list(path)]])
            entry = new
            fut = new.future
        assert fut is not None
        if not entry.pulled:
            entry.pulled = True
            self._send(["pull", entry.id])
        return await fut

    def remap(self, entry: Import, path: Path, fn: Callable[[Any], Any]) -> RpcPromise:
        if entry.future is not None and entry.future.done():
            value = entry.future.result() if not entry.future.cancelled() and not entry.future.exception() else None
            return self._local_promise(self._spawn(_map_locally(_walk_local(value, list(path)), fn)))
        if self.closed is not None:
            return self._local_promise(self._failed(self.closed))
        captures, instructions = record_map(self, fn)
        new = self._alloc_import(self._future())
        self._send(["push", ["remap", entry.id, list(path), captures, instructions]])
        return RpcPromise(self, new)

    def add_local_ref(self, entry: Import) -> None:
        entry.local += 1

    def drop_local_ref(self, entry: Import) -> None:
        entry.local -= 1
        if entry.local > 0:
            return
        if entry.id == 0 and not entry.local_only:
            if self.closed is None:
                self._end(SessionClosed(SHUTDOWN_REASON), (ABORT_CLOSE_CODE, SHUTDOWN_REASON))
            return
        if self._imports.get(entry.id) is entry and not entry.stream:
            self._forget_import(entry)
            if self.closed is None:
                self._send(["release", entry.id, entry.remote])

    def drop_promise(self, entry: Import) -> None:
        if entry.local_only or self._imports.get(entry.id) is not entry:
            return
        self._forget_import(entry)
        if entry.future is not None and not entry.future.done():
            entry.future.set_exception(RpcError("Error", "The promise was disposed"))
        if self.closed is None:
            self._send(["release", entry.id, entry.remote])

    # --- the end -----------------------------------------------------------------------------

    def _end(self, error: SessionClosed, close: tuple[int, str] | None) -> None:
        if self.closed is not None:
            return
        self.closed = error
        steps = self._teardown(self._imports, self._exports, error)
        self._imports, self._exports, self._peer_imports = {}, {}, 0
        self._pipes.clear()
        self._unsent.clear()
        self._pace_teardown(steps)
        callbacks, self._on_broken = self._on_broken, []
        for callback in callbacks:
            try:
                callback(error)
            except Exception:
                log.exception("capnweb: on_broken callback failed")
        if close is not None and self._on_close is not None:
            self._on_close(*close)

    def _teardown(self, imports: dict[int, Import], exports: dict[int, Export], error: SessionClosed) -> Iterator[bool]:
        """Fail what waits on the peer, then cancel what runs for it (in this order: a task
        waiting on the peer would otherwise see its wait cancelled, not failed), freeing both
        tables: one entry a step, each dropped once done so the memory comes back as it goes."""
        for key in list(imports):
            imp = imports.pop(key)
            if imp.future is not None and not imp.future.done():
                imp.future.set_exception(error)
            yield True
        for key in list(exports):
            exp = exports.pop(key)
            fut = exp.future
            if not fut.done():
                fut.cancel()
            elif not fut.cancelled() and fut.exception() is None:
                value = fut.result()
                if isinstance(value, Pipe):
                    value.fail(error)
                elif isinstance(value, LocalWritable):
                    self._spawn_detached(_abort_sink(value))
                if exp.owned:
                    self._unref_target(value)
            yield True
        for task in list(self._tasks):  # those started meanwhile too
            task.cancel()
            yield True

    def _pace_teardown(self, steps: Iterator[bool]) -> None:
        """Run ``TEARDOWN_STEPS`` steps of a teardown now and the rest on later turns of the
        loop, so the end of a session with large tables does not hold up every other connection
        (a small session ends at once)."""
        for _ in range(TEARDOWN_STEPS):
            if not next(steps, False):
                return
        self._loop.call_soon(self._pace_teardown, steps)

    def _spawn_detached(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` past the session's end (it is not cancelled with the session's tasks):
        kept referenced until it ends (the loop holds tasks only weakly), its failure consumed."""
        task = self._loop.create_task(coro)
        _DETACHED.add(task)
        task.add_done_callback(_DETACHED.discard)
        task.add_done_callback(_consume)


async def _with_heartbeat(
    source: AsyncIterator[Any], interval: float, chunk: Any, failed: asyncio.Future[None]
) -> AsyncIterator[Any]:
    """The source's chunks, with ``chunk`` in between whenever it is silent for ``interval``;
    it stops as soon as ``failed`` is done (a write was refused: the reader is gone)."""
    pending: asyncio.Future[Any] | None = None
    try:
        while not failed.done():
            if pending is None:
                pending = asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait((pending, failed), timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            if failed.done():
                return
            if not done:
                yield chunk
                continue
            try:
                value = pending.result()
            except StopAsyncIteration:
                return
            finally:
                pending = None
            yield value
    finally:
        if pending is not None:  # the reader went away while the source was silent
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending


def _raise_copy(exc: Exception) -> NoReturn:
    raise copy.copy(exc) from None


def _cancel_with(source: asyncio.Future[Any], done: asyncio.Future[Any]) -> None:
    """Cancelling a call's result cancels the task computing it."""
    if done.cancelled():
        source.cancel()


async def _abort_sink(writable: LocalWritable) -> None:
    with contextlib.suppress(Exception):
        await writable.abort(RpcError("Error", "The stream was released without being closed"))


def _walk(value: Any, path: Sequence[str | int]) -> Any:
    """``value[p0][p1]...`` through stubs and promises (each step pipelines)."""
    for name in path:
        value = value[name]
    return value


def _walk_local(value: Any, path: Sequence[str | int]) -> Any:
    for index, name in enumerate(path):
        if is_remote(value):
            return _walk(value, path[index:])
        value = get_property(value, name)
    return value


async def _map_locally(value: Any, fn: Callable[[Any], Any]) -> Any:
    async def one(item: Any) -> Any:
        result = fn(item)
        return await result if inspect.isawaitable(result) else result

    if value is None or value is UNDEFINED:
        return value
    if isinstance(value, list):
        return [await one(item) for item in value]
    return await one(value)
