"""The files service's whole-file write: its content is decoded batch by batch from the request
body, never copied whole (see ``sandbox_services.files.content``). In-process, through the
registry, with only the files service (absolute paths need no session)."""

from __future__ import annotations

import gc
import json
import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pybase64
import pytest
from helpers_registry import files_registry

from sandbox_core.errors import SandboxError
from sandbox_core.registry import ServiceRegistry

MiB = 1024 * 1024


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[ServiceRegistry]:
    reg = await files_registry(tmp_path)
    try:
        yield reg
    finally:
        await reg.aclose()


@pytest.fixture
async def small_batches(tmp_path: Path) -> AsyncIterator[ServiceRegistry]:
    """Batches of 8 bytes (two base64 quads): every content spans many of them."""
    reg = await files_registry(tmp_path, io_batch_bytes=8)
    try:
        yield reg
    finally:
        await reg.aclose()


def b64_body(path: Path, text: str) -> bytes:
    """A base64 write's JSON body with ``text`` as the content's JSON text, as is (no escaping)."""
    return ('{"path": ' + json.dumps(str(path)) + ', "content": "' + text + '", "encoding": "base64"}').encode()


async def write(registry: ServiceRegistry, body: bytes) -> Any:
    """One write as a transport makes it: the JSON body decoded, then the call."""
    op = registry.operation("files", "write")
    return await registry.call("files", "write", registry.decode(op, body))


async def test_base64_write_holds_no_copy_of_its_content(registry: ServiceRegistry, tmp_path: Path) -> None:
    """Decoding the body and writing the file allocate far less than the body: no ``str`` copy of
    the content, no whole decoded copy. Was: about 1.75x the body (a 24 MiB ``str``, then 18 MiB
    of decoded bytes)."""
    data = os.urandom(18 * MiB)
    path = tmp_path / "big.bin"
    body = json.dumps({"path": str(path), "content": pybase64.b64encode_as_string(data), "encoding": "base64"})
    raw = body.encode()
    del body
    gc.collect()
    tracemalloc.start()
    try:
        result = await write(registry, raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.bytes_written == len(data)
    assert path.read_bytes() == data
    assert peak < len(raw) / 4, f"{peak / MiB:.1f} MiB allocated for a {len(raw) / MiB:.1f} MiB body"


@pytest.mark.parametrize(
    "content",
    [
        "",
        "plain ascii",
        'line\nline\n\ttab "quoted" back\\slash /slash',
        "é ü 中文 😀 \u2028",
        "x" * 100 + "é" + "\n" * 7,
    ],
)
async def test_text_written_exactly(small_batches: ServiceRegistry, tmp_path: Path, content: str) -> None:
    path = tmp_path / "t.txt"
    for body in (
        json.dumps({"path": str(path), "content": content}).encode(),
        json.dumps({"path": str(path), "content": content}, ensure_ascii=False).encode(),  # raw UTF-8, no escapes
    ):
        result = await write(small_batches, body)
        assert path.read_bytes() == content.encode()
        assert result.bytes_written == len(content.encode())


@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 6, 7, 8, 9, 64, 100])
async def test_base64_across_batches(small_batches: ServiceRegistry, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "b.bin"
    encoded = pybase64.b64encode_as_string(data)
    for text in (encoded, encoded.replace("/", "\\/")):  # an escaped "/" is the same JSON string
        body = b64_body(path, text)
        result = await write(small_batches, body)
        assert path.read_bytes() == data
        assert result.bytes_written == size


async def test_a_mapping_is_encoded_for_the_raw_parameter(registry: ServiceRegistry, tmp_path: Path) -> None:
    """A caller with Python values (not a JSON body) still writes: the registry encodes the value."""
    path = tmp_path / "m.txt"
    await registry.call("files", "write", {"path": str(path), "content": "aGk=", "encoding": "base64"})
    assert path.read_bytes() == b"hi"
    await registry.call("files", "write", {"path": str(path), "content": "é\n"})
    assert path.read_bytes() == "é\n".encode()


BAD_BASE64 = [
    "QQ==QUFB",  # padding in the middle, inside a batch
    "QUFBQQ==QUFBQUFB",  # padding at the end of a batch that is not the last
    "QUFBQUFBQ",  # not whole quads
    "QUFB QUFB",
    "QUFBQUFBé===",
    "QUFB\\nQUFB",  # an escaped newline
]


@pytest.mark.parametrize("content", BAD_BASE64)
async def test_bad_base64_is_refused_before_anything_is_created(
    small_batches: ServiceRegistry, tmp_path: Path, content: str
) -> None:
    path = tmp_path / "new" / "deeper" / "x.bin"
    body = b64_body(path, content)
    with pytest.raises(SandboxError) as caught:
        await write(small_batches, body)
    assert (caught.value.code, caught.value.details.get("field")) == ("VALIDATION_FAILED", "content")
    assert "Invalid base64 content" in caught.value.message
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "content,message",
    [
        (b'"bad \xff utf-8"', "content is not valid UTF-8 text"),
        (b'"a surrogate \xed\xa0\x80"', "content is not valid UTF-8 text"),
        (b"12", "Expected `str`, got `int`"),
        (b"null", "Expected `str`, got `null`"),
        (b'["x"]', "Expected `str`, got `array`"),
    ],
)
async def test_bad_text_is_refused_naming_content(
    small_batches: ServiceRegistry, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "new" / "x.txt"
    body = b'{"path": "' + str(path).encode() + b'", "content": ' + content + b"}"
    with pytest.raises(SandboxError) as caught:
        await write(small_batches, body)
    assert (caught.value.code, caught.value.details.get("field")) == ("VALIDATION_FAILED", "content")
    assert message in caught.value.message
    assert not (tmp_path / "new").exists()


async def test_lone_surrogates_are_refused(registry: ServiceRegistry, tmp_path: Path) -> None:
    """Escaped in JSON the parser refuses them; from Python values the registry does, naming the field."""
    path = tmp_path / "new" / "x.txt"
    with pytest.raises(SandboxError) as caught:
        await write(registry, b'{"path": "' + str(path).encode() + b'", "content": "a \\ud800"}')
    assert caught.value.code == "VALIDATION_FAILED"
    with pytest.raises(SandboxError) as caught:
        await registry.call("files", "write", {"path": str(path), "content": "a \ud800"})
    assert (caught.value.code, caught.value.details.get("field")) == ("VALIDATION_FAILED", "content")
    assert not (tmp_path / "new").exists()
