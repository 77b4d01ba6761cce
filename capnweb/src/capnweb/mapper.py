"""``.map()``: running a peer's recorded mapper (``remap``) and recording one of ours.

A mapper is a list of instructions, each an expression whose references are local: 0 is the
input element, ``k > 0`` the result of instruction ``k - 1``, ``-k`` the k-th capture (a stub
the mapper uses). The last instruction's value is the mapper's result. The peer applies it to
each element of an array, passes null and undefined through, and applies it once to anything
else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .codec import Devaluator, Evaluator, as_json, check_id
from .stubs import stub_ref
from .values import Budget, ProtocolError, RpcError

if TYPE_CHECKING:
    from .session import RpcSession
    from .stubs import Path


class Mapper:
    """The Importer of a running mapper: references name its local values and captures."""

    def __init__(self, session: RpcSession, item: Any, captures: list[Any], work: Budget) -> None:
        self.session = session
        self.limits = session.limits
        self.values: list[Any] = [item]
        self.captures = captures
        self.work = work  # what the outermost map may still evaluate (a map inside takes from it)

    def _local(self, ref_id: int) -> asyncio.Future[Any]:
        if 0 <= ref_id < len(self.values):
            value = self.values[ref_id]
        elif ref_id < 0 and -ref_id <= len(self.captures):
            value = self.captures[-ref_id - 1]
        else:
            raise ProtocolError(f"mapper reference {ref_id} out of range")
        return value if isinstance(value, asyncio.Future) else self.session.resolved(value)

    def ref(self, evaluator: Evaluator, ref_id: Any, path: Any, args: Any, promise: bool) -> Any:
        return self.session.ref_future(evaluator, self._local(ref_id), path, args, promise)

    def remap_expr(self, evaluator: Evaluator, ref_id: Any, path: Any, captures: Any, instructions: Any) -> Any:
        caps: list[Any] = []
        for capture in captures:
            if not (isinstance(capture, list) and len(capture) == 2 and capture[0] == "import"):
                raise ProtocolError(f"invalid nested remap capture: {as_json(capture)}")
            caps.append(self._local(check_id(capture[1])))
        target = self._local(ref_id)
        return self.session.spawn_remap(target, path, caps, instructions, self.work)

    def import_export(self, evaluator: Evaluator, export_id: Any) -> Any:
        return self.session.import_export(evaluator, export_id)

    def import_promise(self, evaluator: Evaluator, export_id: Any) -> Any:
        return self.session.import_promise(evaluator, export_id)

    def import_writable(self, evaluator: Evaluator, export_id: Any) -> Any:
        return self.session.import_writable(evaluator, export_id)

    def claim_readable(self, evaluator: Evaluator, pipe_id: Any) -> Any:
        return self.session.claim_readable(evaluator, pipe_id)


class Placeholder:
    """What a recorded mapper sees: the input, or the result of an earlier step. Reading from it
    and calling it record instructions instead of doing anything."""

    __slots__ = ("_path", "_recorder", "_ref")

    def __init__(self, recorder: MapRecorder, ref: int, path: Path = ()) -> None:
        self._recorder = recorder
        self._ref = ref
        self._path = path

    def __getattr__(self, name: str) -> Placeholder:
        if name.startswith("__"):
            raise AttributeError(name)
        return Placeholder(self._recorder, self._ref, (*self._path, name))

    def __getitem__(self, key: str | int) -> Placeholder:
        return Placeholder(self._recorder, self._ref, (*self._path, key))

    def __call__(self, *args: Any) -> Placeholder:
        return self._recorder.call_ref(self._ref, self._path, args)

    def __await__(self) -> Any:
        raise RpcError("TypeError", "A mapper passed to map() must not await: it is recorded, not run")


class MapRecorder:
    """Records a mapper function: the stubs it uses become captures, its calls instructions."""

    def __init__(self, session: RpcSession) -> None:
        self.session = session
        self.captures: list[Any] = []
        self.instructions: list[Any] = []
        self._capture_ids: dict[int, int] = {}

    def _capture_ref(self, value: Any) -> tuple[int, Path]:
        if isinstance(value, Placeholder):
            return value._ref, value._path
        session, entry, path = stub_ref(value)
        if session is not self.session:
            raise RpcError("TypeError", "A mapper may only use stubs of its own session")
        if entry.local_only or (entry.future is not None and entry.future.done()):
            raise RpcError("TypeError", "A mapper may only use stubs and pending promises of the peer")
        index = self._capture_ids.get(entry.id)
        if index is None:
            self.captures.append(["import", entry.id])
            index = self._capture_ids[entry.id] = len(self.captures)
        return -index, path

    def capture(self, value: Any) -> Any:
        ref, path = self._capture_ref(value)
        return ["pipeline", ref, list(path)] if path else ["pipeline", ref]

    def call(self, target: Any, args: Sequence[Any]) -> Placeholder:
        ref, path = self._capture_ref(target)
        return self.call_ref(ref, path, args)

    def call_ref(self, ref: int, path: Path, args: Sequence[Any]) -> Placeholder:
        dev = Devaluator(self.session)
        self.instructions.append(["pipeline", ref, list(path), [dev.devaluate(a) for a in args]])
        return Placeholder(self, len(self.instructions))


def record_map(session: RpcSession, fn: Callable[[Any], Any]) -> tuple[list[Any], list[Any]]:
    """(captures, instructions) of ``fn``, recorded by calling it once with a placeholder."""
    recorder = MapRecorder(session)
    with session.recording(recorder):
        result = fn(Placeholder(recorder, 0))
        final = Devaluator(session).devaluate(result)
    recorder.instructions.append(final)
    return recorder.captures, recorder.instructions
