"""The OpenAPI 3.1 document of the JSON API, from the protos' descriptor set (`make gen` writes
gen/openapi.json; the gateway serves it at /api/openapi.json and Swagger UI at /api/docs).

It describes each route as Envoy's grpc_json_transcoder exposes it with the print options in
envoy.yaml.tmpl (CONTRACT §4, §7): proto field names, enums by name, 64-bit integers as strings,
well-known types in their JSON forms, `google.api.HttpBody` as a raw body; path and query parameters
and the body as the `google.api.http` bindings say; the error bodies of the services and of Envoy;
and who needs a token, from the same rule the gateway's jwt_authn rules come from (`Method.token`).
Descriptions are the protos' doc comments; REQUIRED fields are required, OUTPUT_ONLY and IDENTIFIER
fields read-only (the server sets them, or takes them from the path)."""

from __future__ import annotations

import argparse
import json
import mimetypes
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor_pb2

from localplus_gateway import DEFAULT_DESCRIPTOR, LOCAL_REPLY_CODES, load_methods

Schema = dict[str, Any]
FieldProto = descriptor_pb2.FieldDescriptorProto
MessageProto = descriptor_pb2.DescriptorProto

HTTP_BODY = "google.api.HttpBody"
# Raw responses whose path does not end in a file name (that says its media type): their media type.
RAW_MEDIA_TYPES = {"/api/unsubscribe/{token}": "text/html"}
INT32: Schema = {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
UINT32: Schema = {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}
# 64-bit integers print as JSON strings (and are accepted as strings or numbers).
INT64: Schema = {"type": "string", "format": "int64", "pattern": "^-?[0-9]{1,19}$"}
UINT64: Schema = {"type": "string", "format": "uint64", "pattern": "^[0-9]{1,20}$"}
SCALARS: dict[int, Schema] = {
    FieldProto.TYPE_STRING: {"type": "string"},
    FieldProto.TYPE_BOOL: {"type": "boolean"},
    FieldProto.TYPE_BYTES: {"type": "string", "format": "byte"},
    FieldProto.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldProto.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldProto.TYPE_INT32: INT32,
    FieldProto.TYPE_SINT32: INT32,
    FieldProto.TYPE_SFIXED32: INT32,
    FieldProto.TYPE_UINT32: UINT32,
    FieldProto.TYPE_FIXED32: UINT32,
    FieldProto.TYPE_INT64: INT64,
    FieldProto.TYPE_SINT64: INT64,
    FieldProto.TYPE_SFIXED64: INT64,
    FieldProto.TYPE_UINT64: UINT64,
    FieldProto.TYPE_FIXED64: UINT64,
}
WRAPPERS = {
    "DoubleValue": FieldProto.TYPE_DOUBLE,
    "FloatValue": FieldProto.TYPE_FLOAT,
    "Int64Value": FieldProto.TYPE_INT64,
    "UInt64Value": FieldProto.TYPE_UINT64,
    "Int32Value": FieldProto.TYPE_INT32,
    "UInt32Value": FieldProto.TYPE_UINT32,
    "BoolValue": FieldProto.TYPE_BOOL,
    "StringValue": FieldProto.TYPE_STRING,
    "BytesValue": FieldProto.TYPE_BYTES,
}
# Well-known types in their JSON forms; the query-string ones can be path or query parameters.
WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time", "description": "RFC 3339"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$", "examples": ["1.5s"]},
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Field paths separated by commas, e.g. `title,starts_at`",
    },
    **{f"google.protobuf.{name}": SCALARS[kind] for name, kind in WRAPPERS.items()},
}
JSON_ONLY: dict[str, Schema] = {
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}}, "required": ["@type"]},
}
ERROR_DETAILS = ("google.rpc.ErrorInfo", "google.rpc.BadRequest")
# HTTP status -> when; every route may answer these, with a `google.rpc.Status` or a `LocalReply`.
ERROR_STATUSES = {
    "400": "Bad input: the service names the field (`BadRequest`), the gateway a body or query it cannot read",
    "401": "No valid token where one is needed, or a token that is invalid or expired",
    "403": "The caller may not do this",
    "404": "No such resource, or one the caller may not see",
    "409": "A conflict: a stale `etag`, or the resource changed meanwhile (ErrorInfo's reason says which)",
    "503": "A service or the database cannot be reached; try again",
}
TOO_LARGE = "413"  # routes with a body: over the gateway's 1 MiB cap (a LocalReply)
BEARER = "supabase"
VARIABLE = re.compile(r"\{([a-z0-9_.]+)(?:=([^}]*))?\}")


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _text(comment: str) -> str:
    """A proto comment as Markdown: its wrapped lines joined, blank lines kept as paragraph breaks."""
    paragraphs = re.split(r"\n\s*\n", comment.strip())
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _summary(text: str) -> str:
    """The comment's first clause: up to the first `.`, `:` or `;` outside parentheses."""
    depth = 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and char in ".:;" and text[i + 1 : i + 2] in ("", " "):
            return text[:i]
    return text


class Descriptors:
    """Messages, enums and services of a descriptor set by full name, with their doc comments."""

    def __init__(self, descriptor_path: Path) -> None:
        files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_path.read_bytes()).file
        self.messages: dict[str, MessageProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.comments: dict[str, str] = {}  # full name (or `message.field`, `enum.VALUE`) -> comment
        self.services: list[tuple[str, descriptor_pb2.ServiceDescriptorProto]] = []
        for file in files:
            located = {tuple(loc.path): _text(loc.leading_comments) for loc in file.source_code_info.location}
            for i, message in enumerate(file.message_type):
                self._add_message(f"{file.package}.{message.name}", message, (4, i), located)
            for i, enum in enumerate(file.enum_type):
                self._add_enum(f"{file.package}.{enum.name}", enum, (5, i), located)
            for i, service in enumerate(file.service):
                name = f"{file.package}.{service.name}"
                self.comments[name] = located.get((6, i), "")
                for j, method in enumerate(service.method):
                    self.comments[f"{name}.{method.name}"] = located.get((6, i, 2, j), "")
                if file.package.startswith("localplus."):
                    self.services.append((file.package, service))

    def _add_message(self, name: str, message: MessageProto, path: tuple[int, ...], located: dict) -> None:
        self.messages[name] = message
        self.comments[name] = located.get(path, "")
        for i, field in enumerate(message.field):
            self.comments[f"{name}.{field.name}"] = located.get((*path, 2, i), "")
        for i, nested in enumerate(message.nested_type):
            self._add_message(f"{name}.{nested.name}", nested, (*path, 3, i), located)
        for i, enum in enumerate(message.enum_type):
            self._add_enum(f"{name}.{enum.name}", enum, (*path, 4, i), located)

    def _add_enum(
        self, name: str, enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], located: dict
    ) -> None:
        self.enums[name] = enum
        self.comments[name] = located.get(path, "")
        for i, value in enumerate(enum.value):
            self.comments[f"{name}.{value.name}"] = located.get((*path, 2, i), "")

    def field(self, message: str, path: str) -> FieldProto:
        """The field at a dotted path (`event.id`) from a message."""
        *parents, last = path.split(".")
        for name in parents:
            message = self.field(message, name).type_name.lstrip(".")
        return next(f for f in self.messages[message].field if f.name == last)


def _is_map(descriptors: Descriptors, field: FieldProto) -> bool:
    entry = descriptors.messages.get(field.type_name.lstrip("."))
    return entry is not None and entry.options.map_entry


class Generator:
    def __init__(self, descriptors: Descriptors) -> None:
        self.d = descriptors
        self.schemas: dict[str, Schema] = {}

    # --- schemas -----------------------------------------------------------------------------------

    def type_schema(self, field: FieldProto) -> Schema:
        """The schema of one value of a field (an item, if it is repeated)."""
        name = field.type_name.lstrip(".")
        if field.type == FieldProto.TYPE_ENUM:
            return self.enum_ref(name)
        if field.type == FieldProto.TYPE_MESSAGE:
            return self.message_ref(name)
        return dict(SCALARS[field.type])

    def field_schema(self, message: str, field: FieldProto) -> Schema:
        if _is_map(self.d, field):
            _key, value = self.d.messages[field.type_name.lstrip(".")].field
            schema: Schema = {"type": "object", "additionalProperties": self.type_schema(value)}
        elif field.label == FieldProto.LABEL_REPEATED:
            schema = {"type": "array", "items": self.type_schema(field)}
        else:
            schema = self.type_schema(field)
        if description := self.d.comments.get(f"{message}.{field.name}"):
            schema["description"] = description
        behaviours = field.options.Extensions[field_behavior_pb2.field_behavior]
        if {field_behavior_pb2.OUTPUT_ONLY, field_behavior_pb2.IDENTIFIER} & set(behaviours):
            schema["readOnly"] = True
        return schema

    def message_ref(self, name: str) -> Schema:
        if name in WELL_KNOWN:
            return dict(WELL_KNOWN[name])
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: recursive messages refer to themselves
            self.schemas[name] = self.message_schema(name)
        return _ref(name)

    def message_schema(self, name: str, *, without: frozenset[str] = frozenset()) -> Schema:
        if name in JSON_ONLY:
            return dict(JSON_ONLY[name])
        message = self.d.messages[name]
        fields = [f for f in message.field if f.name not in without]
        schema: Schema = {"type": "object", "properties": {f.name: self.field_schema(name, f) for f in fields}}
        required = [
            f.name
            for f in fields
            if field_behavior_pb2.REQUIRED in f.options.Extensions[field_behavior_pb2.field_behavior]
        ]
        if required:
            schema["required"] = required
        if description := self.d.comments.get(name):
            schema["description"] = description
        return schema

    def enum_ref(self, name: str) -> Schema:
        if name == "google.protobuf.NullValue":
            return {"type": "null"}
        if name not in self.schemas:
            enum = self.d.enums[name]
            values = "\n".join(f"- `{v.name}`: {self.d.comments.get(f'{name}.{v.name}', '')}" for v in enum.value)
            self.schemas[name] = {
                "type": "string",
                "enum": [v.name for v in enum.value],
                "description": f"{self.d.comments.get(name, '')}\n\n{values}".strip(),
            }
        return _ref(name)

    def error_schemas(self) -> None:
        """`google.rpc.Status` with the details the services send, and Envoy's own error body."""
        details = []
        for name in ERROR_DETAILS:
            self.message_ref(name)
            type_url = {"const": f"type.googleapis.com/{name}"}
            details.append({"allOf": [_ref(name)], "properties": {"@type": type_url}, "required": ["@type"]})
        self.schemas["google.rpc.Status"] = {
            "type": "object",
            "description": "An error from a service: the gRPC status as the gateway renders it.",
            "properties": {
                "code": {"type": "integer", "description": "The gRPC status code (3 is INVALID_ARGUMENT, ...)"},
                "message": {"type": "string", "description": "What went wrong, for people"},
                "details": {
                    "type": "array",
                    "items": {"oneOf": details},
                    "description": "An ErrorInfo (`reason`, `metadata.request_id`); for bad input a BadRequest "
                    "naming the field",
                },
            },
            "required": ["code", "message"],
        }
        self.schemas["LocalReply"] = {
            "type": "object",
            "description": "An error from the gateway itself (token, routing, request body).",
            "properties": {
                "code": {"type": "string", "enum": sorted(set(LOCAL_REPLY_CODES.values()))},
                "message": {"type": "string"},
                "status": {"type": "integer", "description": "The HTTP status"},
            },
            "required": ["code", "message", "status"],
        }

    # --- operations --------------------------------------------------------------------------------

    def parameter(self, message: str, path: str, where: str, name: str | None = None) -> Schema:
        field = self.d.field(message, path)
        parent = message if "." not in path else self.d.field(message, path.rsplit(".", 1)[0]).type_name.lstrip(".")
        schema = self.field_schema(parent, field)
        description = schema.pop("description", "")
        schema.pop("readOnly", None)
        parameter: Schema = {"name": name or path, "in": where, "schema": schema}
        if field_behavior_pb2.REQUIRED in field.options.Extensions[field_behavior_pb2.field_behavior]:
            parameter["required"] = True
        if where == "path":
            parameter["required"] = True
            schema["minLength"] = 1
            if name != path:
                description = f"{description} Sets `{path}`.".strip()
        if description:
            parameter["description"] = description
        return parameter

    def query_fields(self, message: str, skip: set[str], prefix: str = "", seen: tuple[str, ...] = ()) -> Iterator[str]:
        """Every field the transcoder takes from the query string: scalars, enums, repeated ones and
        well-known types as values, other messages' fields in dotted form; maps and repeated
        messages cannot be given there."""
        for field in self.d.messages[message].field:
            path = f"{prefix}{field.name}"
            type_name = field.type_name.lstrip(".")
            if path in skip:
                continue
            if field.type != FieldProto.TYPE_MESSAGE or type_name in WELL_KNOWN:
                yield path
            elif (
                field.label != FieldProto.LABEL_REPEATED
                and type_name not in JSON_ONLY
                and type_name not in (*seen, message)  # not again inside itself (it could nest forever)
            ):
                yield from self.query_fields(type_name, skip, f"{path}.", (*seen, message))

    def operation(
        self,
        package: str,
        service: str,
        method: descriptor_pb2.MethodDescriptorProto,
        token: str,
        verb: str,
        template: str,
        body: str,
        names: list[str],
    ) -> Schema:
        full = f"{package}.{service}.{method.name}"
        request = method.input_type.lstrip(".")
        response = method.output_type.lstrip(".")
        bound = [m[1] for m in VARIABLE.finditer(template)]
        text = self.d.comments.get(full, "")
        access = {
            "none": "No token: the caller authenticates otherwise (e.g. a signature).",
            "optional": "Anyone; a token is optional (an invalid one is still a 401).",
            "required": "Needs a token.",
        }[token]
        operation: Schema = {
            "tags": [service],
            "summary": _summary(text) or method.name,
            "description": f"{text}\n\n{access} gRPC: `{package}.{service}/{method.name}`.",
            "parameters": [self.parameter(request, p, "path", n) for p, n in zip(bound, names, strict=True)],
            "security": {"none": [], "optional": [{}, {BEARER: []}], "required": [{BEARER: []}]}[token],
        }
        if body != "*":
            skip = {*bound, body}
            operation["parameters"] += [self.parameter(request, p, "query") for p in self.query_fields(request, skip)]
        if body:
            operation["requestBody"] = self.request_body(request, body, frozenset(bound))
        if response == HTTP_BODY:
            guessed = mimetypes.guess_type(template.rsplit("/", 1)[-1])[0]
            kind = RAW_MEDIA_TYPES.get(template) or guessed or "application/octet-stream"
            # A JSON feed is still JSON to a client; images and calendars are bytes.
            raw: Schema = {"type": "object"} if kind == "application/json" else {"type": "string", "format": "binary"}
            content: Schema = {kind: {"schema": raw}}
        else:
            content = {"application/json": {"schema": self.message_ref(response)}}
        described = response if response == "google.protobuf.Empty" else None
        operation["responses"] = {
            "200": {"description": "`{}`" if described else "OK", "content": content},
            **{status: {"$ref": f"#/components/responses/Error{status}"} for status in ERROR_STATUSES},
        }
        if body:
            operation["responses"][TOO_LARGE] = {"$ref": f"#/components/responses/Error{TOO_LARGE}"}
        operation["responses"] = dict(sorted(operation["responses"].items()))
        return operation

    def request_body(self, request: str, body: str, bound: frozenset[str]) -> Schema:
        if body == "*":
            # The whole request, but for what the path sets; the transcoder reads no body as `{}`.
            kind, required = request, False
            schema = self.message_schema(request, without=bound) if request != HTTP_BODY else None
        else:
            field = self.d.field(request, body)
            kind = field.type_name.lstrip(".")
            required = field_behavior_pb2.REQUIRED in field.options.Extensions[field_behavior_pb2.field_behavior]
            schema = self.field_schema(request, field) if kind != HTTP_BODY else None
        if kind == HTTP_BODY:
            raw = {"schema": {"type": "string", "format": "binary"}}
            return {
                "description": "The raw body, passed on byte for byte with its content type",
                "content": {"*/*": raw},
            }
        assert schema is not None
        return {"required": required, "content": {"application/json": {"schema": schema}}}

    def paths(self, descriptor_path: Path) -> dict[str, Schema]:
        tokens = {m.path: m.token for m in load_methods(descriptor_path)}
        paths: dict[str, Schema] = {}
        names_of: dict[str, list[str]] = {}  # a path's shape -> the parameter names it was first given
        for package, service in self.d.services:
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                rule = method.options.Extensions[annotations_pb2.http]
                for n, binding in enumerate([rule, *rule.additional_bindings], start=1):
                    verb, template, body = _binding(binding)
                    # Parameters are named by their field (`id` for `event.id`); paths alike but for those
                    # names are one path in OpenAPI, so the first binding's names stand for all of them.
                    shape = VARIABLE.sub("{}", template)
                    names = names_of.setdefault(shape, _parameter_names(template))
                    path = _with_names(template, names)
                    item = paths.setdefault(path, {})
                    if verb in item:
                        raise ValueError(f"{verb.upper()} {path} is bound twice")
                    grpc_path = f"/{package}.{service.name}/{method.name}"
                    operation = self.operation(
                        package, service.name, method, tokens[grpc_path], verb, template, body, names
                    )
                    operation["operationId"] = f"{service.name}_{method.name}" + (f"_{n}" if n > 1 else "")
                    item[verb] = operation
        return paths


def _parameter_names(template: str) -> list[str]:
    fields = [match[1] for match in VARIABLE.finditer(template)]
    short = [path.rsplit(".", 1)[-1] for path in fields]
    return short if len(set(short)) == len(short) else fields


def _with_names(template: str, names: list[str]) -> str:
    """The path template with its variables renamed, `{field.path=*}` becoming `{name}`."""
    pieces, end = [], 0
    for match, name in zip(VARIABLE.finditer(template), names, strict=True):
        pieces += [template[end : match.start()], "{" + name + "}"]
        end = match.end()
    return "".join(pieces) + template[end:]


def _binding(rule: http_pb2.HttpRule) -> tuple[str, str, str]:
    verb = rule.WhichOneof("pattern")
    if verb is None or verb == "custom":
        raise ValueError(f"unsupported HTTP binding {rule}")
    template: str = getattr(rule, verb)
    for match in VARIABLE.finditer(template):
        if match[2] not in (None, "*"):
            raise ValueError(f"{template}: only single-segment path variables are supported")
    return verb, template, rule.body


def build(descriptor_path: Path = DEFAULT_DESCRIPTOR) -> Schema:
    descriptors = Descriptors(descriptor_path)
    generator = Generator(descriptors)
    paths = generator.paths(descriptor_path)
    generator.error_schemas()
    error = {"oneOf": [_ref("google.rpc.Status"), _ref("LocalReply")]}
    request_id = {"description": "The request's id, as in the error's ErrorInfo", "schema": {"type": "string"}}
    responses = {
        f"Error{status}": {
            "description": description,
            "headers": {"x-request-id": request_id},
            "content": {"application/json": {"schema": error}},
        }
        for status, description in ERROR_STATUSES.items()
    }
    responses[f"Error{TOO_LARGE}"] = {
        "description": "The JSON body is over the gateway's 1 MiB cap",
        "content": {"application/json": {"schema": _ref("LocalReply")}},
    }
    tags = [
        {"name": service.name, "description": descriptors.comments[f"{package}.{service.name}"]}
        for package, service in descriptors.services
    ]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "LocalPlus Event Engine",
            "version": ", ".join(sorted({package.rsplit(".", 1)[-1] for package, _ in descriptors.services})),
            "description": (
                "The JSON API of the gateway, generated from the protos (`make gen`). Field names are the "
                "protos' (snake_case); enums are their value names; 64-bit integers are strings; times are "
                "RFC 3339. Unknown body fields are ignored; unknown query parameters are a 400. Errors from "
                "the services are a `google.rpc.Status`, the gateway's own a `LocalReply`."
            ),
        },
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": dict(sorted(generator.schemas.items())),
            "responses": responses,
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A Supabase access token (audience `authenticated`, or a `service_role` key): "
                    "HS256 with the project's JWT secret, or ES256/RS256 from its JWKS.",
                }
            },
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localplus_openapi")
    parser.add_argument("--descriptor", type=Path, default=DEFAULT_DESCRIPTOR)
    parser.add_argument("--out", type=Path, help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    text = json.dumps(build(args.descriptor), indent=2, ensure_ascii=False) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
