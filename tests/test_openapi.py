"""The OpenAPI document and the docs page (localplus_openapi, gateway/docs.html): `make gen` writes the
document the gateway serves, it validates as OpenAPI 3.1, its routes are exactly the README's route
table and each one reaches a service through the gateway, its security is the gateway's jwt rule, and
/api/docs renders every route in a real headless Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from grpc_tools import protoc
from openapi_spec_validator import validate

import localplus_openapi
from localplus_dev.stack import Stack
from localplus_gateway import DEFAULT_DESCRIPTOR, load_methods
from tests.support import User

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "gen" / "openapi.json"
# The flags that work here as root (machine notes); the profile directory is new for each run.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

Operation = dict[str, Any]


def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DOCUMENT.read_text())
    return loaded


def operations(doc: dict[str, Any]) -> list[tuple[str, str, Operation]]:
    return [(method.upper(), path, op) for path, item in doc["paths"].items() for method, op in item.items()]


def shape(path: str) -> str:
    """A path with its parameters unnamed, as the README and the document name them differently."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def readme_routes(readme: str) -> set[tuple[str, str]]:
    """(method, path shape) of every route in the first column of the README's route table, written as
    `GET\\|POST /api/x/{id}`; `.../tail` continues the previous path, `/p:a\\|:b` and `/p/x.svg\\|x.png`
    are alternatives of the last segment or custom verb, and a query string is ignored."""
    table = readme.split("### Routes", 1)[1].split("\n\n| route |", 1)[1].split("\n\n", 1)[0]
    routes = set()
    for row in table.splitlines()[1:]:
        if row.startswith("|---"):
            continue
        first_column = row.split(" | ", 1)[0]
        previous = ""
        for span in re.findall(r"`([^`]+)`", first_column):
            match = re.fullmatch(r"([A-Z]+(?:\\\|[A-Z]+)*) (\S+)", span)
            if not match:
                continue  # e.g. the query parameters named in parentheses
            methods, paths = match[1].split("\\|"), match[2].split("?", 1)[0].split("\\|")
            first = paths[0]
            if first.startswith(".../"):
                tail = first.removeprefix(".../").split("/")
                segments = previous.split("/")
                at = len(segments) - 1 - segments[::-1].index(tail[0])  # the last segment named like the tail's first
                first = "/".join(segments[:at] + tail)
            expanded = [first]
            for alternative in paths[1:]:
                cut = first.rindex(":") if alternative.startswith(":") else first.rindex("/") + 1
                expanded.append(first[:cut] + alternative)
            routes |= {(method, shape(path)) for method in methods for path in expanded}
            previous = first
    return routes


def test_make_gen_wrote_this_document_and_it_validates() -> None:
    doc = document()
    assert doc == localplus_openapi.build(DEFAULT_DESCRIPTOR), "gen/openapi.json is stale: run make gen"
    assert doc["openapi"].startswith("3.1.")
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema and its rules


def test_the_validator_is_not_vacuous() -> None:
    broken = document()
    operation = next(iter(broken["paths"]["/api/events/{id}"].values()))
    operation["parameters"] = []  # a path parameter nobody declares
    with pytest.raises(Exception, match="id"):
        validate(broken)


def test_the_document_lists_exactly_the_readme_routes() -> None:
    documented = {(method, shape(path)) for method, path, _ in operations(document())}
    in_readme = readme_routes((ROOT / "README.md").read_text())
    assert documented - in_readme == set(), "routes missing from the README's route table"
    assert in_readme - documented == set(), "README routes the API does not have"


def test_the_readme_parser_reads_every_notation() -> None:
    readme = (
        "### Routes\n\nintro\n\n| route | RPC | who |\n|---|---|---|\n"
        "| `GET\\|POST /api/a`, `DELETE .../a/{id}` | x | y |\n"
        "| `POST /api/a/{id}:go\\|:stop`, `GET /api/t/{id}/qr.svg\\|qr.png`, `GET /api/o?start=` (`q`) | x | y |\n"
        "\nafter"
    )
    assert readme_routes(readme) == {
        ("GET", "/api/a"),
        ("POST", "/api/a"),
        ("DELETE", "/api/a/{}"),
        ("POST", "/api/a/{}:go"),
        ("POST", "/api/a/{}:stop"),
        ("GET", "/api/t/{}/qr.svg"),
        ("GET", "/api/t/{}/qr.png"),
        ("GET", "/api/o"),
    }


def test_security_is_the_gateways_jwt_rule() -> None:
    """Each operation names its RPC; its security is what `Method.token` tells jwt_authn."""
    tokens = {method.path: method.token for method in load_methods(DEFAULT_DESCRIPTOR)}
    expected: dict[str, list[dict[str, list[str]]]] = {
        "none": [],
        "optional": [{}, {"supabase": []}],
        "required": [{"supabase": []}],
    }
    for method, path, operation in operations(document()):
        (grpc_path,) = re.findall(r"gRPC: `([^`]+)`", operation["description"])
        assert operation["security"] == expected[tokens[f"/{grpc_path}"]], f"{method} {path}"


async def test_the_gateway_serves_the_document_and_every_route_reaches_a_service(
    stack: Stack, api: httpx.AsyncClient, admin: User
) -> None:
    served = await api.get("/api/openapi.json")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    assert served.content == DOCUMENT.read_bytes()
    for method, path, operation in operations(document()):
        # Any id will do: what matters is that the gateway knows the route (Envoy's own 404 has a code
        # name, a service's a number).
        url = re.sub(r"\{[^}]*\}", str(uuid.uuid4()), path)
        json_body: dict[str, Any] | None = (
            {} if "application/json" in operation.get("requestBody", {}).get("content", {}) else None
        )
        response = await api.request(method, url, headers=admin.headers, json=json_body)
        answer = response.json() if response.headers["content-type"].startswith("application/json") else {}
        assert isinstance(answer.get("code", 0), int), f"{method} {path}: {response.status_code} {response.text}"
        assert response.status_code < 500, f"{method} {path}: {response.status_code} {response.text}"


def dump_dom(url: str, profile: Path) -> str:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make test` installs it"
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=30000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


async def test_the_docs_page_renders_every_route_in_chromium(stack: Stack, tmp_path: Path) -> None:
    dom = dump_dom(f"{stack.gateway_url}/api/docs", tmp_path / "profile")
    rendered = {
        (method, html.unescape(path), html.unescape(summary))
        for method, path, summary in re.findall(
            r'class="opblock-summary-method">(\w+)<.*?data-path="([^"]*)".*?class="opblock-summary-description">([^<]*)<',
            dom,
            re.DOTALL,
        )
    }
    expected = {(method, path, operation["summary"]) for method, path, operation in operations(document())}
    assert rendered == expected
    assert "LocalPlus Event Engine" in dom


PROBE_PROTO = """
syntax = "proto3";
package localplus.events.v1;
import "google/api/annotations.proto";
import "google/api/field_behavior.proto";
import "google/api/httpbody.proto";
import "google/protobuf/empty.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";

// Probes the generator.
service ProbeService {
  // Reads a thing: with the details.
  rpc GetThing(GetThingRequest) returns (Thing) {
    option (google.api.http) = {get: "/api/things/{id}" additional_bindings {get: "/api/v2/things/{id}"}};
  }
  // Changes a thing.
  rpc UpdateThing(UpdateThingRequest) returns (Thing) {
    option (google.api.http) = {patch: "/api/things/{thing.id}" body: "thing"};
  }
  // Draws a thing.
  rpc DrawThing(GetThingRequest) returns (google.api.HttpBody) {
    option (google.api.http) = {get: "/api/things/{id}/picture.svg"};
  }
  // Takes a raw upload.
  rpc Upload(UploadRequest) returns (google.protobuf.Empty) {
    option (google.api.http) = {post: "/api/uploads/{name}" body: "payload"};
  }
  // Does something to a thing.
  rpc Act(ActRequest) returns (google.protobuf.Empty) {
    option (google.api.http) = {post: "/api/things/{id}:act" body: "*"};
  }
}
message Range { int64 low = 1; google.protobuf.Timestamp since = 2; }
message Filter { string text = 1; Range range = 2; repeated Filter children = 3; Filter parent = 4; }
message GetThingRequest {
  string id = 1;
  Filter filter = 2;
  repeated string tags = 3;
  map<string, string> labels = 4;
  google.protobuf.FieldMask read_mask = 5;
  google.protobuf.Struct extra = 6;
}
// A thing.
message Thing {
  // Its id.
  string id = 1 [(google.api.field_behavior) = IDENTIFIER];
  string name = 2 [(google.api.field_behavior) = REQUIRED];
  int64 size = 3;
  google.protobuf.Timestamp created_at = 4 [(google.api.field_behavior) = OUTPUT_ONLY];
  google.protobuf.Struct raw = 5;
  map<string, int32> counts = 6;
}
message UpdateThingRequest {
  Thing thing = 1 [(google.api.field_behavior) = REQUIRED];
  google.protobuf.FieldMask update_mask = 2;
}
message UploadRequest { string name = 1; google.api.HttpBody payload = 2; string note = 3; }
message ActRequest { string id = 1; string reason = 2 [(google.api.field_behavior) = REQUIRED]; }
"""


def test_the_generator_follows_the_transcoders_rules(tmp_path: Path) -> None:
    """On a proto made to have what the real ones may grow: nested query parameters, additional and
    field bindings, raw bodies, well-known types."""
    (tmp_path / "probe.proto").write_text(PROBE_PROTO)
    descriptor = tmp_path / "descriptor.pb"
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [f"-I{tmp_path}", f"-I{ROOT / 'protos' / 'third_party'}", f"-I{well_known}", "--include_imports"]
    assert (
        protoc.main(
            [
                "protoc",
                *args,
                "--include_source_info",
                f"--descriptor_set_out={descriptor}",
                "probe.proto",
                "google/rpc/error_details.proto",
            ]
        )
        == 0
    )
    doc = localplus_openapi.build(descriptor)
    validate(doc)
    paths = doc["paths"]

    get = paths["/api/things/{id}"]["get"]
    assert get["summary"] == "Reads a thing" and get["operationId"] == "ProbeService_GetThing"
    assert get["security"] == [{}, {"supabase": []}]
    # Repeated messages, maps and Structs cannot be given in a query string; recursion stops.
    query = [p["name"] for p in get["parameters"] if p["in"] == "query"]
    assert query == ["filter.text", "filter.range.low", "filter.range.since", "tags", "read_mask"]
    assert paths["/api/v2/things/{id}"]["get"]["operationId"] == "ProbeService_GetThing_2"

    patch = paths["/api/things/{id}"]["patch"]  # {thing.id} is named like GetThing's {id}
    assert patch["security"] == [{"supabase": []}]
    (path_parameter, mask) = patch["parameters"]
    assert "Sets `thing.id`." in path_parameter["description"] and mask["name"] == "update_mask"
    assert patch["requestBody"]["required"] is True
    assert patch["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/localplus.events.v1.Thing")
    thing = doc["components"]["schemas"]["localplus.events.v1.Thing"]
    assert thing["required"] == ["name"]
    assert thing["properties"]["id"] == {"type": "string", "description": "Its id.", "readOnly": True}
    assert thing["properties"]["size"]["type"] == "string"  # int64
    assert thing["properties"]["created_at"]["format"] == "date-time" and thing["properties"]["created_at"]["readOnly"]
    assert thing["properties"]["raw"] == {"$ref": "#/components/schemas/google.protobuf.Struct"}
    assert thing["properties"]["counts"]["additionalProperties"]["format"] == "int32"

    drawn = paths["/api/things/{id}/picture.svg"]["get"]["responses"]
    assert list(drawn["200"]["content"]) == ["image/svg+xml"]
    assert "application/json" in doc["components"]["responses"]["Error404"]["content"]

    upload = paths["/api/uploads/{name}"]["post"]
    assert list(upload["requestBody"]["content"]) == ["*/*"]
    assert [p["name"] for p in upload["parameters"] if p["in"] == "query"] == ["note"]
    assert upload["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("google.protobuf.Empty")
    assert doc["components"]["schemas"]["google.protobuf.Empty"]["additionalProperties"] is False

    act = paths["/api/things/{id}:act"]["post"]
    body = act["requestBody"]
    assert body["required"] is False  # the transcoder reads no body as {}
    assert set(body["content"]["application/json"]["schema"]["properties"]) == {"reason"}  # id is the path's
    assert not [p for p in act["parameters"] if p["in"] == "query"]
