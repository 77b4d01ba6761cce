"""``sandbox attach`` under a pseudo-terminal (pexpect), typing real keys: raw mode (every key
goes to the remote terminal, ^C included), the size followed on SIGWINCH, Ctrl-] detaches,
the command ends when the remote shell exits, and the local tty's settings come back whatever
the way out."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pexpect
import pytest
from helpers_pty import PtyServer, unique

#: the terminal's marker lines are computed by the remote shell, so they never match the echo
#: of what was typed
TIMEOUT = 30


def attach_command(server: PtyServer, session_id: str, *extra: str) -> str:
    return " ".join([sys.executable, "-m", "sandbox_core.cli", "attach", session_id, "--url", server.url, *extra])


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    return {**clean, "TERM": "xterm"}


@pytest.fixture
def spawned() -> Iterator[list[pexpect.spawn]]:
    children: list[pexpect.spawn] = []
    try:
        yield children
    finally:
        for child in children:
            child.close(force=True)


def spawn(children: list[pexpect.spawn], command: str, rows: int = 24, cols: int = 80) -> pexpect.spawn:
    child = pexpect.spawn(
        "/bin/sh", ["-c", command], env=env(), timeout=TIMEOUT, dimensions=(rows, cols), encoding=None
    )
    children.append(child)
    return child


def test_attach_types_real_keys_and_detaches(pty_server: PtyServer, spawned: list[pexpect.spawn]) -> None:
    child = spawn(spawned, attach_command(pty_server, unique()))
    child.expect(rb"attached to session .*Ctrl-\] detaches")
    child.send(b"echo hi-$((1+1))\r")
    child.expect(rb"hi-2\r\n")
    child.send(b"\x1d")  # Ctrl-]
    child.expect(rb"\[detached\]")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_the_tty_is_restored_after_a_detach_and_after_an_error(
    pty_server: PtyServer, spawned: list[pexpect.spawn]
) -> None:
    """``stty -g`` (every setting of the tty) is the same before and after."""
    sid = unique()
    command = (
        f"stty -g; {attach_command(pty_server, sid)}; stty -g; "
        f"{attach_command(pty_server, sid).replace(pty_server.url, 'http://127.0.0.1:9')}; echo status=$?; stty -g"
    )
    child = spawn(spawned, command)
    child.expect(rb"([0-9a-f:]{20,})\r\n")
    before = child.match.group(1)
    child.expect(rb"attached to session")
    child.send(b"stty -a | tr ' ' '\\n' | grep -x -- -icanon; echo R$((1))\r")  # the remote tty is its own
    child.expect(rb"R1\r\n")
    child.send(b"\x1d")
    child.expect(rb"\[detached\]")
    child.expect(rb"([0-9a-f:]{20,})\r\n")
    assert child.match.group(1) == before
    child.expect(rb"sandbox attach: Cannot reach")  # no server there: an error before raw mode ...
    child.expect(rb"status=1")
    child.expect(rb"([0-9a-f:]{20,})\r\n")
    assert child.match.group(1) == before  # ... and the tty as it was
    child.expect(pexpect.EOF)


def test_ctrl_c_goes_to_the_remote_program(pty_server: PtyServer, spawned: list[pexpect.spawn]) -> None:
    child = spawn(spawned, attach_command(pty_server, unique()))
    child.expect(rb"attached to session")
    child.send(b"sleep 60 && echo not-$((2+2))\r")
    child.expect(rb"sleep 60")  # (the echo of the line)
    child.send(b"\x03")  # ^C: interrupts the remote sleep (raw mode: no local SIGINT)
    child.expect(rb"\^C")
    child.send(b"echo still-$((3+3))\r")  # the attach command runs on
    child.expect(rb"still-6\r\n")
    assert b"not-4" not in child.before
    child.send(b"\x1d")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_the_remote_size_follows_the_local_one(pty_server: PtyServer, spawned: list[pexpect.spawn]) -> None:
    child = spawn(spawned, attach_command(pty_server, unique()), rows=30, cols=100)
    child.expect(rb"attached to session")
    child.send(b"echo S$(stty size | tr ' ' x)E\r")
    child.expect(rb"S30x100E")
    child.setwinsize(41, 123)  # SIGWINCH to the attach command
    child.send(b"echo S$(stty size | tr ' ' x)E\r")
    child.expect(rb"S41x123E")
    child.send(b"\x1d")
    child.expect(pexpect.EOF)


def test_attach_ends_when_the_shell_exits_and_a_reattach_replays(
    pty_server: PtyServer, spawned: list[pexpect.spawn]
) -> None:
    sid = unique()
    child = spawn(spawned, attach_command(pty_server, sid))
    child.expect(rb"attached to session")
    child.send(b"echo first-$((4*4))\r")
    child.expect(rb"first-16")
    child.send(b"\x1d")
    child.expect(pexpect.EOF)
    child = spawn(spawned, attach_command(pty_server, sid))
    child.expect(rb"attached to session")
    child.expect(rb"first-16")  # the replay: what the terminal showed before
    child.send(b"exit\r")
    child.expect(rb"\[Terminal exited\]")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_attach_without_a_terminal_transport_says_what_to_install(
    spawned: list[pexpect.spawn],
) -> None:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "sandbox_core.cli", "attach", "s", "--url", "http://127.0.0.1:9"],
        env={**env(), "SANDBOX_DISABLED_PLUGINS": "ws"},
        timeout=TIMEOUT,
    )
    spawned.append(child)
    child.expect(rb"no installed transport offers terminals: install one, for example sandbox-transport-ws")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2
