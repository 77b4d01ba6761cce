"""Registers the services with the host."""

from __future__ import annotations

from collections.abc import Callable

from sandbox_core.hookspecs import hookimpl
from sandbox_core.registry import ServiceSpec

from .backup import BackupService, BackupSettings
from .commands import CommandsService
from .files import FilesService, FilesSettings
from .git import GitService, GitSettings
from .interpreter import InterpreterService, InterpreterSettings
from .ports import PortsService, PortsSettings
from .processes import ProcessesService, ProcessSettings
from .sessions import SessionSettings, SessionsService
from .terminals import TerminalSettings, TerminalsService
from .utils import UtilsService
from .watch import WatchService, WatchSettings


@hookimpl
def sandbox_register_services(register: Callable[[ServiceSpec], None]) -> None:
    register(ServiceSpec("sessions", SessionsService, SessionSettings, "persistent shell sessions"))
    register(ServiceSpec("commands", CommandsService, None, "run commands, whole or streamed"))
    register(ServiceSpec("utils", UtilsService, None, "ping and version"))
    register(ServiceSpec("processes", ProcessesService, ProcessSettings, "background processes with bounded output"))
    register(ServiceSpec("ports", PortsService, PortsSettings, "wait for a local port to be ready"))
    register(ServiceSpec("git", GitService, GitSettings, "clone git repositories"))
    register(ServiceSpec("files", FilesService, FilesSettings, "read, write, stream and list files"))
    register(ServiceSpec("terminals", TerminalsService, TerminalSettings, "a shared interactive terminal per session"))
    register(ServiceSpec("interpreter", InterpreterService, InterpreterSettings, "code contexts: Python kernels, Node"))
    register(ServiceSpec("watch", WatchService, WatchSettings, "watch directories for changes (inotify)"))
    register(ServiceSpec("backup", BackupService, BackupSettings, "directories to squashfs archives and back"))
