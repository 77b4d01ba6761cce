"""Starts a Python kernel for the interpreter service, run as a script in the kernel's process
(``python kernel_launcher.py -f <connection file>``), never imported by the server.

It is ``ipykernel_launcher`` but for one thing: ipykernel gives the subprocesses a cell forks
(``multiprocessing``) a pipe to send their output through, and makes it a ZeroMQ socket listening
on a random TCP port of 127.0.0.1, which any local process may connect to. Here it is a Unix
socket in the kernel's private directory (the connection file's), next to the kernel's channels.
Where ipykernel does not have the methods this replaces (another version), it is left as it is.
This module imports nothing of the sandbox.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def main() -> None:
    # the script's directory would shadow modules of the user's (``output``, ``kernel``)
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or os.curdir) == here:
        del sys.path[0]
    connection_file = sys.argv[sys.argv.index("-f") + 1] if "-f" in sys.argv[:-1] else None
    if connection_file is not None:
        address = "ipc://" + os.path.join(os.path.dirname(os.path.abspath(connection_file)), "subprocess-output")
        _pipe_over_unix_socket(address)
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


def _pipe_over_unix_socket(address: str) -> None:
    import zmq
    from ipykernel.iostream import IOPubThread
    from zmq.eventloop.zmqstream import ZMQStream

    needed = ("_setup_pipe_in", "_setup_pipe_out", "_handle_pipe_msg")
    if not all(hasattr(IOPubThread, name) for name in needed):
        return

    def setup_pipe_in(self: Any) -> None:
        """In the kernel: listen for the forked subprocesses' messages (each starts with a
        random id, as ipykernel's own)."""
        self._pipe_uuid = os.urandom(16)
        pipe_in = self.socket.context.socket(zmq.PULL)
        pipe_in.linger = 0
        try:
            pipe_in.bind(address)
        except zmq.ZMQError:
            # as ipykernel when it cannot bind: subprocesses' output is not forwarded
            self._pipe_flag = False
            pipe_in.close()
            return
        self._pipe_in = ZMQStream(pipe_in, self.io_loop)
        self._pipe_in.on_recv(self._handle_pipe_msg)

    def setup_pipe_out(self: Any) -> tuple[Any, Any]:
        """In a forked subprocess: a fresh context (a forked one is unusable) and its socket."""
        context = zmq.Context()
        pipe_out = context.socket(zmq.PUSH)
        pipe_out.linger = 3000  # what a subprocess sends as it exits still gets there
        pipe_out.connect(address)
        return context, pipe_out

    IOPubThread._setup_pipe_in = setup_pipe_in  # type: ignore[method-assign]
    IOPubThread._setup_pipe_out = setup_pipe_out  # type: ignore[method-assign]


if __name__ == "__main__":
    main()
