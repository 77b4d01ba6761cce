"""Runs inside each Python kernel, never in the server: the server sends this file's source as part
of a context's setup code (executed in a namespace of its own) and calls :func:`bound_output`.

It makes the kernel's output wait for the server instead of piling up or being lost:

* the kernel's IOPub socket (an XPUB) blocks when the server has not read what it sent yet,
  instead of dropping messages (``XPUB_NODROP``): the server reads output only as fast as the
  run's reader takes it (see output.py), so a flood is slowed to the reader's pace;
* ``sys.stdout`` and ``sys.stderr`` send what was written every ``piece`` characters and wait
  until it is sent (``flush``), so the text ipykernel buffers between its flushes stays small,
  every stream message is small, and ``print`` blocks while the IOPub socket does;
* IPython keeps no copy of what cells print and display (it would keep all of it), and no
  longer wraps the streams' ``write`` for each cell (to keep that copy);
* no message of the kernel has a part over ``cap`` bytes: a larger one (a huge display, an
  exception with a huge message, the echo of a huge cell) is sent with its content cut, saying
  so. The server refuses larger parts anyway (``ZMQ_MAXMSGSIZE``), which would cost the
  connection and the output sent meanwhile.

Each step is skipped where ipykernel does not have what it needs (another version): the server's
own bounds hold regardless. This module imports nothing of the sandbox.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

#: How long a flush of the kernel's output may wait for the server (the run's timeout, or its
#: reader leaving, ends the wait long before: the server then reads on).
FLUSH_TIMEOUT_S = 3600.0


def bound_output(piece: int, cap: int) -> None:
    try:
        import zmq
        from IPython import get_ipython
    except ImportError:
        return
    streams: list[Any] = [s for s in (sys.stdout, sys.stderr) if hasattr(s, "pub_thread")]
    pub = getattr(streams[0], "pub_thread", None) if streams else None
    socket = getattr(pub, "socket", None)
    if pub is not None and socket is not None and hasattr(pub, "schedule"):

        def nodrop() -> None:  # in the IOPub thread, which owns the socket
            with contextlib.suppress(Exception):
                socket.setsockopt(zmq.XPUB_NODROP, 1)

        pub.schedule(nodrop)
    for cls in {type(stream) for stream in streams}:
        if not getattr(cls, "_sbx_bounded", False):  # on the class: IPython re-wraps each cell's write
            cls.write = _bounded_write(cls.write, piece)
            # a flush waits for the server as long as the reader takes output (ipykernel gives
            # up after 10 s and says so on stderr, then goes on piling output up)
            cls.flush_timeout = max(getattr(cls, "flush_timeout", 0), FLUSH_TIMEOUT_S)
            cls._sbx_bounded = True
    shell = get_ipython()
    session = getattr(getattr(shell, "kernel", None), "session", None)
    if session is not None and not getattr(session, "_sbx_bounded", False):
        session.serialize = _bounded_serialize(session.serialize, cap)
        session._sbx_bounded = True
    history = getattr(shell, "history_manager", None)
    if history is not None and isinstance(getattr(history, "outputs", None), dict):
        history.outputs = _Forgetful()
    if hasattr(shell, "_tee"):
        # IPython (9) wraps the streams' write for each cell (to keep what it prints: see
        # _Forgetful), and puts back at the cell's end the write it found at its start, as an
        # attribute of the stream: the bounded write is the class's, so no cell may set one (the
        # one this cell's end sets is removed by the next setup cell: see unshadow)
        shell._tee = _no_tee


def unshadow() -> None:
    """Remove the ``write`` attribute the end of the previous cell set on the streams (run in a
    cell of its own, after the one that ran :func:`bound_output`)."""
    for stream in (sys.stdout, sys.stderr):
        vars(stream).pop("write", None)


def _no_tee(channel: str) -> contextlib.nullcontext[None]:
    return contextlib.nullcontext()


class _Forgetful(dict[Any, Any]):
    """IPython (9) keeps a copy of everything each cell printed or displayed, for ``%notebook``:
    as long as the kernel lives, however much it is. Here the copies are dropped as made."""

    def __missing__(self, key: Any) -> list[Any]:
        return []


def _bounded_write(write: Any, piece: int) -> Any:
    def bounded_write(stream: Any, text: Any) -> Any:
        if not isinstance(text, str):
            return write(stream, text)  # ipykernel's own error
        for at in range(0, len(text), piece):
            part = text[at : at + piece]
            write(stream, part)
            pending = getattr(stream, "_sbx_pending", 0) + len(part)  # since the last flush asked for
            if pending >= piece:
                pending = 0
                stream.flush()  # waits until the IOPub thread has sent it
            stream._sbx_pending = pending
        return len(text)

    return bounded_write


def _bounded_serialize(serialize: Any, cap: int) -> Any:
    def bounded_serialize(msg: Any, ident: Any = None) -> Any:
        frames = serialize(msg, ident)
        size = max((len(frame) for frame in frames), default=0)
        if size <= cap or not isinstance(msg, dict):
            return frames
        for budget in (cap // 16, cap // 256, 64):
            frames = serialize(_cut(msg, size, cap, budget), ident)
            if max((len(frame) for frame in frames), default=0) <= cap:
                break
        return frames

    return bounded_serialize


def _cut(msg: dict[str, Any], size: int, cap: int, budget: int) -> dict[str, Any]:
    """``msg`` with its content cut to fit ``cap`` bytes (strings to ``budget`` characters)."""
    header = msg.get("header") or {}
    kind = str(msg.get("msg_type") or header.get("msg_type") or "")
    content = msg.get("content") or {}
    note = f"[sandbox: the kernel's {kind} message was {size} bytes, over the {cap} bytes it may send: cut]"
    if kind in ("display_data", "execute_result", "update_display_data"):
        content = {**content, "data": {"text/plain": note}, "metadata": {}}
    elif kind == "stream":
        content = {**content, "text": note + "\n"}
    else:
        content = _shorten(content, budget, note)
    return {**msg, "content": content, "metadata": {}}


def _shorten(value: Any, budget: int, note: str) -> Any:
    """``value`` (JSON) with every string cut to ``budget`` characters and every list to
    ``budget`` items, ``note`` marking each cut."""
    if isinstance(value, str):
        return value if len(value) <= budget else value[:budget] + " " + note
    if isinstance(value, list):
        items = [_shorten(v, budget, note) for v in value[:budget]]
        return [*items, note] if len(value) > budget else items
    if isinstance(value, dict):
        return {k: _shorten(v, budget, note) for k, v in list(value.items())[:budget]}
    return value
