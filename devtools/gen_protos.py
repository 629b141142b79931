"""Generate Python stubs, the Envoy descriptor set and the OpenAPI document from protos/ in one run
(`make gen`)."""

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

import localplus_openapi

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
THIRD_PARTY = PROTOS / "third_party"
OUT = ROOT / "gen"


def main() -> int:
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "localplus").rglob("*.proto"))
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{THIRD_PARTY}",
        f"-I{well_known}",
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        f"--grpc_python_out={OUT}",
        f"--descriptor_set_out={OUT / 'descriptor.pb'}",
        "--include_imports",
        "--include_source_info",
        *sources,
        # Listed explicitly so the gateway can render ErrorInfo/BadRequest details as JSON.
        "google/rpc/error_details.proto",
        "google/rpc/status.proto",
    ]
    if protoc.main(args) != 0:
        return 1
    # Only our own packages are generated here; google.api/google.rpc come from googleapis-common-protos.
    shutil.rmtree(OUT / "google", ignore_errors=True)
    for package_dir in [OUT / "localplus", *(p for p in (OUT / "localplus").rglob("*") if p.is_dir())]:
        (package_dir / "__init__.py").touch()
    localplus_openapi.main(["--descriptor", str(OUT / "descriptor.pb"), "--out", str(OUT / "openapi.json")])
    print(f"generated {len(sources)} protos and openapi.json into {OUT.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
