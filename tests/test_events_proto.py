"""events.proto documents itself: a doc comment on every service, method, message, field, enum and
value, and every field the server alone sets marked OUTPUT_ONLY (AIP-192, AIP-203)."""

from __future__ import annotations

from pathlib import Path

from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
EVENTS_PROTO = "localplus/events/v1/events.proto"
# FileDescriptorProto field numbers, as source_code_info paths use them.
MESSAGE, FIELD, NESTED, FILE_ENUM, ENUM_VALUE, SERVICE, METHOD = 4, 2, 3, 5, 2, 6, 2

# What the server alone sets, per message ("*": every field).
OUTPUT_ONLY = {
    "Event": {
        "created_by",
        "created_at",
        "updated_at",
        "source",
        "status_reason",
        "submitted_at",
        "published_at",
        "distance_km",
    },
    "Participant": {"event_id", "created_at", "updated_at"},
    "Permission": {"event_id", "granted_by", "created_at"},
    "ModerationLogEntry": {"*"},
    "SavedEvent": {"*"},
    "MyEvent": {"*"},
    "DailyCount": {"*"},
    "EventStats": {"*"},
    "BusinessStats": {"*"},
}


def events_file() -> descriptor_pb2.FileDescriptorProto:
    files = descriptor_pb2.FileDescriptorSet.FromString((ROOT / "gen" / "descriptor.pb").read_bytes()).file
    return next(file for file in files if file.name == EVENTS_PROTO)


def documented_paths(file: descriptor_pb2.FileDescriptorProto) -> set[tuple[int, ...]]:
    return {tuple(location.path) for location in file.source_code_info.location if location.leading_comments.strip()}


def elements(file: descriptor_pb2.FileDescriptorProto) -> list[tuple[str, tuple[int, ...]]]:
    """(name, source path) of every element that needs a comment; map entries are generated, not written."""
    found: list[tuple[str, tuple[int, ...]]] = []

    def message(proto: descriptor_pb2.DescriptorProto, path: tuple[int, ...], name: str) -> None:
        if proto.options.map_entry:
            return
        found.append((name, path))
        for i, field in enumerate(proto.field):
            found.append((f"{name}.{field.name}", (*path, FIELD, i)))
        for i, nested in enumerate(proto.nested_type):
            message(nested, (*path, NESTED, i), f"{name}.{nested.name}")

    for i, proto in enumerate(file.message_type):
        message(proto, (MESSAGE, i), proto.name)
    for i, enum in enumerate(file.enum_type):
        found.append((enum.name, (FILE_ENUM, i)))
        found += [(f"{enum.name}.{value.name}", (FILE_ENUM, i, ENUM_VALUE, j)) for j, value in enumerate(enum.value)]
    for i, service in enumerate(file.service):
        found.append((service.name, (SERVICE, i)))
        found += [(f"{service.name}.{rpc.name}", (SERVICE, i, METHOD, j)) for j, rpc in enumerate(service.method)]
    return found


def test_every_element_of_events_proto_has_a_doc_comment() -> None:
    file = events_file()
    documented = documented_paths(file)
    missing = [name for name, path in elements(file) if path not in documented]
    assert not missing, f"no doc comment on: {', '.join(missing)}"


def test_server_set_fields_are_output_only() -> None:
    messages = {proto.name: proto for proto in events_file().message_type}
    wrong = []
    for name, expected in OUTPUT_ONLY.items():
        for field in messages[name].field:
            behaviors = field.options.Extensions[field_behavior_pb2.field_behavior]
            marked = field_behavior_pb2.OUTPUT_ONLY in behaviors
            if marked != ("*" in expected or field.name in expected):
                wrong.append(f"{name}.{field.name} ({'marked' if marked else 'not marked'})")
    assert not wrong, f"OUTPUT_ONLY is wrong on: {', '.join(wrong)}"
