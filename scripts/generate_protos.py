#!/usr/bin/env python3
"""Regenerate the protobuf modules in envd/proto from their .proto files.

Run from anywhere: `python scripts/generate_protos.py` (needs `grpcio-tools`,
the `dev` extra: `pip install -e '.[dev]'`). The .proto files are the
contract (docs/envd-api.md §4 and §5); names and field numbers match
upstream envd's, so never renumber a field. The generated modules record
the protobuf version they need; pyproject.toml's floor must follow it.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = sorted((ROOT / "envd" / "proto").glob("*.proto"))


def main() -> int:
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        print("grpcio-tools is missing: pip install -e '.[dev]'", file=sys.stderr)
        return 1
    well_known = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    for proto in PROTOS:
        relative = proto.relative_to(ROOT)
        status = protoc.main(
            ["protoc", f"-I{ROOT}", f"-I{well_known}", f"--python_out={ROOT}", f"--pyi_out={ROOT}", str(relative)]
        )
        if status != 0:
            print(f"protoc failed for {relative}", file=sys.stderr)
            return status
        print(f"generated {relative.with_name(relative.stem + '_pb2.py')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
