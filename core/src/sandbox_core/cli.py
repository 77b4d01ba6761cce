"""The ``sandbox`` command: ``serve``, ``attach``, ``plugins`` and ``--version``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from .log import configure_logging  # first: it imports structlog without its console extras

# isort: split
from .config import ConfigError, load_config
from .plugins import (
    TEST_ENTRY_POINT_GROUP,
    PluginLoadError,
    installed_plugins,
    make_plugin_manager,
    plugin_info,
)


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

    from .server import hide_from_proc_environ, serve

    hide_from_proc_environ({"SANDBOX_TOKEN"})  # the token is not in /proc/<server>/environ (ps e)
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

    flags = {
        "server.host": ("--host", args.host),
        "server.port": ("--port", args.port),
        "server.workspace": ("--workspace", args.workspace),
        "server.transports": ("--transport", args.transport),
        "server.log_level": ("--log-level", args.log_level),
    }
    config = load_config(args.config, overrides={key: flag for key, flag in flags.items() if flag[1] is not None})
    configure_logging(config.server.log_level)
    run(serve(config, on_started=report_ready if ready_fd is not None else None))
    return 0


def cmd_attach(args: argparse.Namespace) -> int:
    """``sandbox attach SESSION``: the session's terminal on this tty, through the first installed
    transport that offers terminals (the configured client transport if it does)."""
    from .config import transport_settings
    from .plugins import Hooks
    from .transport import ClientContext

    config = load_config(args.config)
    specs = Hooks(make_plugin_manager()).transports()
    offering = {name: spec.terminal for name, spec in sorted(specs.items()) if spec.terminal is not None}
    if not offering:
        print(
            "sandbox: error: no installed transport offers terminals: install one, for example "
            "sandbox-transport-ws (pip install sandbox-transport-ws)",
            file=sys.stderr,
        )
        return 2
    name = config.client.transport if config.client.transport in offering else next(iter(offering))
    ctx = ClientContext(
        args.url or config.client.url,
        transport_settings(config, specs[name]),
        config.client.timeout,
        token=args.token or config.client.token,
    )
    terminal = offering[name]

    async def attach() -> int:
        return await terminal(ctx, args.session)

    return asyncio.run(attach())


def cmd_plugins(args: argparse.Namespace) -> int:
    pm = make_plugin_manager()
    for info in plugin_info(pm):
        test_only = "  [test-only]" if info.group == TEST_ENTRY_POINT_GROUP else ""
        print(f"{info.name:12} {info.distribution} {info.version}  ({info.module}){test_only}")
    return 0


def version_text() -> str:
    """``sandbox --version``: sandbox-core's version, then each installed plugin's distribution."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        core = version("sandbox-core")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        core = "unknown"
    lines = [f"sandbox-core {core}"]
    lines += [f"  {info.name:12} {info.distribution} {info.version}" for info in installed_plugins()]
    return "\n".join(lines)


class _VersionAction(argparse.Action):
    """``--version``, computed only when asked for (it reads the installed distributions)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        try:
            text = version_text()
        except PluginLoadError as exc:
            parser.exit(2, f"sandbox: error: {exc}\n")
        print(text)
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The ``sandbox`` command line: every flag has a help text."""
    parser = argparse.ArgumentParser(prog="sandbox", description="Sandbox runtime server and tools")
    parser.add_argument(
        "--version", action=_VersionAction, help="print the version of sandbox-core and of each installed plugin"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser(
        "serve",
        help="run the server",
        description="Run the server. A flag overrides the config file's setting and is validated the same way.",
    )
    p_serve.add_argument(
        "--config", metavar="PATH", help="TOML config file (default: $SANDBOX_CONFIG, else ./sandbox.toml)"
    )
    p_serve.add_argument("--host", help="address to listen on (server.host; default 127.0.0.1)")
    p_serve.add_argument(
        "--port", type=int, help="port to listen on, 0 for a free one (server.port, 0-65535; default 3000)"
    )
    p_serve.add_argument(
        "--workspace",
        metavar="DIR",
        help="directory sessions start in (server.workspace; default /workspace if it exists, else the cwd)",
    )
    p_serve.add_argument(
        "--transport",
        action="append",
        metavar="NAME",
        help="serve this transport; repeatable (server.transports; default: every installed transport)",
    )
    p_serve.add_argument(
        "--log-level",
        metavar="LEVEL",
        help="debug, info, warning, error or critical (server.log_level; default info)",
    )
    p_serve.add_argument(
        "--ready-fd",
        type=int,
        metavar="N",
        help="once listening, write the bound URL and a newline to file descriptor N and close it "
        "(for a supervisor or test that starts the server on port 0)",
    )
    p_serve.set_defaults(func=cmd_serve)
    p_attach = sub.add_parser(
        "attach",
        help="open a session's terminal on this terminal",
        description="Open the session's terminal (its shared pty, started if it has none) on this terminal: "
        "raw mode, resized with it, restored on exit. Ctrl-] detaches (the terminal runs on); the command "
        "also ends when the terminal's shell exits.",
    )
    p_attach.add_argument("session", metavar="SESSION", help="the session id (created if there is none)")
    p_attach.add_argument(
        "--url", help="the server's URL (default: client.url of the config, or SANDBOX_URL; http://127.0.0.1:3000)"
    )
    p_attach.add_argument(
        "--token", help="the server's token, sent as `Authorization: Bearer` (default: client.token or SANDBOX_TOKEN)"
    )
    p_attach.add_argument(
        "--config", metavar="PATH", help="TOML config file (default: $SANDBOX_CONFIG, else ./sandbox.toml)"
    )
    p_attach.set_defaults(func=cmd_attach)
    p_plugins = sub.add_parser(
        "plugins",
        help="list the installed plugins",
        description="List the plugins the server loads: entry point, distribution, version and module.",
    )
    p_plugins.set_defaults(func=cmd_plugins)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, PluginLoadError) as exc:
        print(f"sandbox: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
