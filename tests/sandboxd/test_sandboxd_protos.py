"""The checked-in protobuf modules are what the .proto files give, and our process.v1 is the
spec's on the wire: compared with the copy the official SDK ships, loaded in the same process
(which also shows that the two never collide in protobuf's registry)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf.descriptor import Descriptor, FileDescriptor

from sandbox_transport_sandboxd.pb import sandboxd_process_v1_pb2 as ours
from sandbox_transport_sandboxd.process_api import NAME

GENERATOR = Path(__file__).resolve().parents[2] / "plugins" / "sandboxd" / "generate_protos.py"


def test_the_generated_modules_are_not_stale() -> None:
    result = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def shape(message: Descriptor) -> list[tuple[object, ...]]:
    """What decides a message's bytes: each field's number, name, type, repetition and oneof,
    nested messages by their own shape."""
    fields: list[tuple[object, ...]] = []
    for field in sorted(message.fields, key=lambda f: f.number):
        nested = shape(field.message_type) if field.message_type is not None else None
        oneof = field.containing_oneof.name if field.containing_oneof is not None else None
        synthetic = field.containing_oneof is not None and field.containing_oneof.name == f"_{field.name}"
        fields.append(
            (field.number, field.name, field.type, field.is_repeated, None if synthetic else oneof, repr(nested))
        )
    return fields


def services(file: FileDescriptor) -> dict[str, list[tuple[str, str, str, bool, bool]]]:
    return {
        name: [
            (m.name, m.input_type.name, m.output_type.name, m.client_streaming, m.server_streaming)
            for m in service.methods
        ]
        for name, service in file.services_by_name.items()
    }


def test_process_v1_is_the_spec_s_on_the_wire() -> None:
    from k8s_agent_sandbox.commands._process_stubs import process_pb2 as spec

    assert spec.DESCRIPTOR.package == "process.v1" and NAME == "process.v1.ProcessService"
    assert services(ours.DESCRIPTOR) == services(spec.DESCRIPTOR)
    assert sorted(ours.DESCRIPTOR.message_types_by_name) == sorted(spec.DESCRIPTOR.message_types_by_name)
    for name, message in spec.DESCRIPTOR.message_types_by_name.items():
        assert shape(ours.DESCRIPTOR.message_types_by_name[name]) == shape(message), name
    ours_enum = {v.name: v.number for v in ours.DESCRIPTOR.enum_types_by_name["Signal"].values}
    assert ours_enum == {v.name: v.number for v in spec.DESCRIPTOR.enum_types_by_name["Signal"].values}


def test_bytes_from_the_sdk_s_messages_parse_as_ours() -> None:
    from k8s_agent_sandbox.commands._process_stubs import process_pb2 as spec

    sent = spec.StartRequest(
        config=spec.ProcessConfig(command=["sh", "-c", "x"], env_vars={"A": "1"}, cwd="sub"),
        pty=spec.PTY(cols=100, rows=30),
    )
    got = ours.StartRequest.FromString(sent.SerializeToString())
    assert list(got.config.command) == ["sh", "-c", "x"] and dict(got.config.env_vars) == {"A": "1"}
    assert got.config.HasField("cwd") and got.HasField("pty") and (got.pty.cols, got.pty.rows) == (100, 30)
