"""The served protobuf files as clients know them, for gRPC server reflection (``grpcurl``).

Our ``process.v1`` is declared in package ``sandboxd.process.v1`` (see its .proto: so that it
never collides with another copy in protobuf's process-wide pool) but served under the spec's
names. Reflection must describe what is served, so it reads a pool of its own in which that file
is the spec's again: ``process/v1/process.proto``, package ``process.v1``, every reference to
one of its types renamed with it.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, empty_pb2
from google.protobuf.descriptor import FileDescriptor

from .pb import sandbox_ext_v1_pb2, sandboxd_process_v1_pb2

#: The spec's package and file name for our process.v1 file.
SPEC_PACKAGE = "process.v1"
SPEC_FILE = "process/v1/process.proto"


def _proto(file: FileDescriptor) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    return proto


def _rename_messages(messages: list[descriptor_pb2.DescriptorProto], old: str, new: str) -> None:
    for message in messages:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old) :]
        _rename_messages(list(message.nested_type), old, new)


def spec_pool() -> descriptor_pool.DescriptorPool:
    """A new pool with google/protobuf/empty.proto, process.v1 under the spec's names, and our
    sandbox.v1 extensions."""
    process = _proto(sandboxd_process_v1_pb2.DESCRIPTOR)
    old, new = f".{process.package}.", f".{SPEC_PACKAGE}."
    process.name, process.package = SPEC_FILE, SPEC_PACKAGE
    _rename_messages(list(process.message_type), old, new)
    for service in process.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new, 1)
            method.output_type = method.output_type.replace(old, new, 1)
    pool = descriptor_pool.DescriptorPool()
    for proto in (_proto(empty_pb2.DESCRIPTOR), process, _proto(sandbox_ext_v1_pb2.DESCRIPTOR)):
        pool.Add(proto)
    return pool
