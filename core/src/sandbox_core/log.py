"""structlog set-up: JSON lines when stderr is not a terminal, readable text when it is.

Importing this module first (the CLI does) keeps structlog from loading its optional console
extras: ``import structlog`` imports rich (with pygments), colorama and better_exceptions
whenever they are installed, only to prettify tracebacks in ``ConsoleRenderer``. In the
server that is about 5 MB of resident memory for a feature it never uses (its logs are JSON
lines; on a terminal, tracebacks are printed plainly). The packages are hidden only while
structlog itself is imported, so anything else can still import them; when structlog is
already imported this does nothing.
"""

from __future__ import annotations

import logging
import sys

_CONSOLE_EXTRAS = ("rich", "colorama", "better_exceptions")
_hidden = [] if "structlog" in sys.modules else [name for name in _CONSOLE_EXTRAS if name not in sys.modules]
for _name in _hidden:
    sys.modules[_name] = None  # type: ignore[assignment]  # None in sys.modules: the import raises ImportError
try:
    import structlog
finally:
    for _name in _hidden:
        if _name in sys.modules and sys.modules[_name] is None:
            del sys.modules[_name]


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    if json is None:
        json = not sys.stderr.isatty()
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: structlog.types.Processor
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # hypercorn and asyncio log through the standard library
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
