"""The ``sandbox`` command: ``serve`` and ``plugins``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from .log import configure_logging  # first: it imports structlog without its console extras

# isort: split
from .config import ConfigError, load_config
from .plugins import PluginLoadError, make_plugin_manager, plugin_info


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run the server's loop: uvloop when it is installed, else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from .server import serve

    ready_fd: int | None = args.ready_fd
    if ready_fd is not None:
        try:
            os.fstat(ready_fd)  # a descriptor that is not open stops start-up here
            os.set_inheritable(ready_fd, False)  # kept from the server's children: EOF once we close it
        except OSError as exc:
            print(f"sandbox: error: --ready-fd {ready_fd}: {exc.strerror}", file=sys.stderr)
            return 2

    def report_ready(url: str) -> None:
        """``--ready-fd``: the bound URL and a newline, then the descriptor is closed."""
        if ready_fd is None:
            return
        try:
            data = f"{url}\n".encode()
            while data:
                data = data[os.write(ready_fd, data) :]
        except OSError:
            pass  # the reader has gone away; the server runs on
        finally:
            os.close(ready_fd)

    config = load_config(args.config)
    if args.host is not None:
        config.server.host = args.host
    if args.port is not None:
        config.server.port = args.port
    if args.workspace is not None:
        config.server.workspace = args.workspace
    if args.transport:
        config.server.transports = args.transport
    configure_logging(config.server.log_level)
    run(serve(config, on_started=report_ready if ready_fd is not None else None))
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    pm = make_plugin_manager()
    for info in plugin_info(pm):
        print(f"{info.name:12} {info.distribution} {info.version}  ({info.module})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandbox", description="Sandbox runtime server and tools")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the server")
    p_serve.add_argument("--config", help="TOML config file (default: $SANDBOX_CONFIG, else ./sandbox.toml)")
    p_serve.add_argument("--host")
    p_serve.add_argument("--port", type=int)
    p_serve.add_argument("--workspace")
    p_serve.add_argument("--transport", action="append", help="enable this transport (repeatable)")
    p_serve.add_argument(
        "--ready-fd",
        type=int,
        metavar="N",
        help="once listening, write the bound URL and a newline to file descriptor N and close it "
        "(for a supervisor or test that starts the server on port 0)",
    )
    p_serve.set_defaults(func=cmd_serve)
    p_plugins = sub.add_parser("plugins", help="list the installed plugins")
    p_plugins.set_defaults(func=cmd_plugins)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, PluginLoadError) as exc:
        print(f"sandbox: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
