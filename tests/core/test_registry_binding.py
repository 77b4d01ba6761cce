"""The registry binds positional arguments (rpc calls are positional) with exactly the validation
of named ones, and re-validates a parameter struct built in Python instead of trusting it."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Annotated, Any

import msgspec
import pytest

from sandbox_core.errors import ErrorCode, SandboxError
from sandbox_core.registry import ServiceContext, ServiceRegistry, ServiceSpec, operation

Small = Annotated[int, msgspec.Meta(ge=0, le=10)]


class Options(msgspec.Struct, kw_only=True, rename="camel"):
    include_hidden: bool = False
    depth: Small = 0


class Sample:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    @operation
    async def greet(self, name: str, times: Small = 1, session_id: str | None = None) -> dict[str, Any]:
        return {"name": name, "times": times, "sessionId": session_id}

    @operation
    async def listing(self, path: str, options: Options | None = None) -> dict[str, Any]:
        return {"path": path, "options": msgspec.to_builtins(options)}

    @operation
    async def take(self, path: str, data: AsyncIterable[bytes]) -> int:
        return sum([len(chunk) async for chunk in data])

    @operation
    async def raw(self, content: msgspec.Raw) -> str:
        return bytes(content).decode()

    @operation
    async def count(self, upto: Small, start: int = 1) -> AsyncIterator[int]:
        for i in range(start, upto + 1):
            yield i


@pytest.fixture
async def registry(tmp_path: Any) -> AsyncIterator[ServiceRegistry]:
    reg = ServiceRegistry({"sample": ServiceSpec("sample", Sample)}, settings={}, workspace=str(tmp_path))
    await reg.start()
    try:
        yield reg
    finally:
        await reg.aclose()


def failed(exc: pytest.ExceptionInfo[SandboxError], field: str) -> None:
    assert exc.value.code == ErrorCode.VALIDATION_FAILED
    assert exc.value.details.get("field") == field, exc.value.details
    assert field in exc.value.message


async def test_positional_arguments_bind_in_signature_order(registry: ServiceRegistry) -> None:
    op = registry.operation("sample", "greet")
    params = registry.bind(op, ["ann", 3, "s1"])
    assert registry.kwargs(op, params) == {"name": "ann", "times": 3, "session_id": "s1"}
    assert await registry.call("sample", "greet", args=["bob"]) == {"name": "bob", "times": 1, "sessionId": None}
    # positional and named together (named ones by their wire names)
    result = await registry.call("sample", "greet", {"sessionId": "x"}, args=["cy", 2])
    assert result == {"name": "cy", "times": 2, "sessionId": "x"}


async def test_positional_values_are_validated_like_named_ones(registry: ServiceRegistry) -> None:
    op = registry.operation("sample", "greet")
    for args, kwargs in ((["ann", 11], None), ([], {"name": "ann", "times": 11})):
        with pytest.raises(SandboxError) as exc:
            registry.bind(op, args, kwargs)
        failed(exc, "times")
    with pytest.raises(SandboxError) as exc:
        registry.bind(op, [5])
    failed(exc, "name")
    with pytest.raises(SandboxError) as by_position:
        await registry.call("sample", "greet", args=["ann", "many"])
    with pytest.raises(SandboxError) as by_name:
        await registry.call("sample", "greet", {"name": "ann", "times": "many"})
    assert by_position.value.message == by_name.value.message
    assert by_position.value.details == by_name.value.details


async def test_a_missing_required_argument_names_it(registry: ServiceRegistry) -> None:
    with pytest.raises(SandboxError) as exc:
        registry.bind(registry.operation("sample", "greet"), [])
    failed(exc, "name")


async def test_too_many_positional_arguments_fail(registry: ServiceRegistry) -> None:
    with pytest.raises(SandboxError) as exc:
        await registry.call("sample", "greet", args=["ann", 1, "s", "extra"])
    failed(exc, "arguments")
    assert "at most 3" in exc.value.message and "got 4" in exc.value.message


async def test_an_argument_given_twice_fails(registry: ServiceRegistry) -> None:
    with pytest.raises(SandboxError) as exc:
        registry.bind(registry.operation("sample", "greet"), ["ann"], {"name": "bob"})
    failed(exc, "name")


async def test_nested_structs_bind_and_validate(registry: ServiceRegistry) -> None:
    result = await registry.call("sample", "listing", args=["/x", {"includeHidden": True, "depth": 2}])
    assert result == {"path": "/x", "options": {"includeHidden": True, "depth": 2}}
    with pytest.raises(SandboxError) as exc:
        await registry.call("sample", "listing", args=["/x", {"depth": 99}])
    failed(exc, "options.depth")


async def test_streams_take_positional_arguments(registry: ServiceRegistry) -> None:
    assert [i async for i in registry.stream("sample", "count", args=[3])] == [1, 2, 3]
    assert [i async for i in registry.stream("sample", "count", args=[3, 2])] == [2, 3]
    with pytest.raises(SandboxError) as exc:
        registry.stream("sample", "count", args=[3, 1, 0])
    failed(exc, "arguments")


async def test_an_async_iterable_binds_by_position(registry: ServiceRegistry) -> None:
    async def data() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"de"

    assert await registry.call("sample", "take", args=["/p", data()]) == 5
    with pytest.raises(SandboxError) as exc:
        await registry.call("sample", "take", args=["/p", 42])
    failed(exc, "data")


async def test_a_raw_parameter_binds_by_position(registry: ServiceRegistry) -> None:
    assert await registry.call("sample", "raw", args=["hi"]) == '"hi"'
    assert await registry.call("sample", "raw", args=[{"a": [1]}]) == '{"a":[1]}'


async def test_a_prebuilt_struct_is_validated_again(registry: ServiceRegistry) -> None:
    """msgspec checks no constraint when a struct is made in Python: the registry does."""
    op = registry.operation("sample", "greet")
    bad = op.params(name="ann", times=99)  # type: ignore[call-arg]
    with pytest.raises(SandboxError) as exc:
        await registry.call("sample", "greet", bad)
    failed(exc, "times")
    wrong_type = op.params(name=7)  # type: ignore[call-arg]
    with pytest.raises(SandboxError) as exc:
        await registry.call("sample", "greet", wrong_type)
    failed(exc, "name")
    good = op.params(name="ann", times=2)  # type: ignore[call-arg]
    assert await registry.call("sample", "greet", good) == {"name": "ann", "times": 2, "sessionId": None}


async def test_a_prebuilt_struct_nested_value_is_validated_again(registry: ServiceRegistry) -> None:
    op = registry.operation("sample", "listing")
    bad = op.params(path="/x", options=Options(depth=-1))  # type: ignore[call-arg]
    with pytest.raises(SandboxError) as exc:
        await registry.call("sample", "listing", bad)
    failed(exc, "options.depth")


async def test_a_prebuilt_struct_keeps_streams_and_raw_values(registry: ServiceRegistry) -> None:
    async def data() -> AsyncIterator[bytes]:
        yield b"xyz"

    take = registry.operation("sample", "take")
    assert await registry.call("sample", "take", take.params(path="/p", data=data())) == 3  # type: ignore[call-arg]
    raw = registry.operation("sample", "raw")
    assert await registry.call("sample", "raw", raw.params(content=msgspec.Raw(b'"q"'))) == '"q"'  # type: ignore[call-arg]


async def test_a_struct_of_another_operation_is_a_type_error(registry: ServiceRegistry) -> None:
    other = registry.operation("sample", "listing").params(path="/x")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        await registry.call("sample", "greet", other)


async def test_omitted_positional_values_keep_their_defaults(registry: ServiceRegistry) -> None:
    op = registry.operation("sample", "greet")
    params = registry.bind(op, ["ann", None, "s"], omit=lambda v: v is None)
    assert registry.kwargs(op, params) == {"name": "ann", "times": 1, "session_id": "s"}
    with pytest.raises(SandboxError) as exc:
        registry.bind(op, ["ann", None])  # without omit, None is a value, and not a valid one
    failed(exc, "times")
    with pytest.raises(SandboxError) as exc:
        registry.bind(op, [None], omit=lambda v: v is None)
    failed(exc, "name")
