"""Generate the protobuf modules of sandbox_transport_sandboxd from its .proto files.

    python plugins/sandboxd/generate_protos.py          # rewrite src/sandbox_transport_sandboxd/pb/
    python plugins/sandboxd/generate_protos.py --check  # exit 1 if the checked-in modules are stale

The modules are checked in, so installing the transport needs no protobuf compiler; this needs
grpcio-tools (pinned in requirements-dev.txt: its version decides the generated code).
Only messages are generated (``--python_out``, ``--pyi_out``): the transport registers its
gRPC methods from its own table (``grpc_api.py``), under the spec's service names.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent / "src" / "sandbox_transport_sandboxd"
PROTO_DIR = PACKAGE / "proto"
OUT_DIR = PACKAGE / "pb"


def generate(out: Path) -> list[Path]:
    """Compile every .proto of PROTO_DIR into ``out``; return the files written."""
    import grpc_tools  # type: ignore[import-untyped]
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    protos = sorted(PROTO_DIR.glob("*.proto"))
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}"]
    if protoc.main([*args, *(str(p) for p in protos)]) != 0:
        raise SystemExit("generate_protos: protoc failed")
    return sorted(p for p in out.iterdir() if p.suffix in (".py", ".pyi"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the checked-in modules, write nothing")
    opts = parser.parse_args()
    if not opts.check:
        written = generate(OUT_DIR)
        print("\n".join(str(p.relative_to(PACKAGE.parent.parent.parent.parent)) for p in written))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name for p in generate(Path(tmp))}
        present = {p.name for p in OUT_DIR.iterdir() if p.suffix in (".py", ".pyi") and p.name != "__init__.py"}
        stale = sorted(
            name
            for name in fresh | present
            if name not in fresh
            or name not in present
            or not filecmp.cmp(Path(tmp) / name, OUT_DIR / name, shallow=False)
        )
    if stale:
        print(f"generate_protos: stale or missing in {OUT_DIR}: {', '.join(stale)}; run {sys.argv[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
