"""Confluent Schema Registry REST routes, read-only: what producers and consumers (e.g. confluent-kafka's
`AvroDeserializer`) ask a registry. Registration, deletion and config changes answer 405: `hub apply` owns them.

Reference: https://docs.confluent.io/platform/current/schema-registry/develop/api.html
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from hub.api.errors import (
    INCOMPATIBLE,
    INVALID_VERSION,
    METHOD_NOT_ALLOWED,
    READ_ONLY,
    ApiError,
    invalid_schema,
    read_only,
    schema_not_found,
    subject_not_found,
    version_not_found,
)
from hub.api.limits import ApiLimits
from hub.errors import SchemaError, shortened
from hub.schema import registry
from hub.schema.registry import RegisteredVersion

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
MAX_VERSION = 2**31 - 1  # also the largest schema id (a PostgreSQL serial)


class RegistryJSON(JSONResponse):
    media_type = MEDIA_TYPE


def pool(request: Request) -> asyncpg.Pool:
    found: asyncpg.Pool = request.app.state.pool
    return found


# --------------------------------------------------------------------------- request parts


def parse_version(text: str) -> int | None:
    """A version path segment: a number from 1, or 'latest' (also -1) as None."""
    if text in ("latest", "-1"):
        return None
    try:
        number = int(text)
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_VERSION:
        raise ApiError(
            422,
            INVALID_VERSION,
            f"The specified version '{text}' is not a valid version id. "
            f'Allowed values are between [1, {MAX_VERSION}] and the string "latest"',
        )
    return number


def subject_param(request: Request) -> str:
    """The {subject} of a path. It reaches SQL, which cannot hold a NUL character (and answered 500)."""
    subject: str = request.path_params["subject"]
    if "\x00" in subject:
        raise ApiError(400, 400, "a subject name cannot contain a NUL character (%00)")
    return subject


async def read_body(request: Request) -> bytes:
    """The request body, refused (413) past the limit without reading the rest, and (408) if it comes too slowly.

    A body announced larger than the limit never gets here (limits.BodyLimit); this counts one sent
    without a length."""
    limits: ApiLimits = request.app.state.limits
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.max_body_bytes:
                    raise ApiError(
                        413,
                        413,
                        f"the request body is larger than {limits.max_body_bytes:,} bytes",
                        {"Connection": "close"},
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(
            408, 408, f"the request body took longer than {limits.body_timeout_s:.0f} s", {"Connection": "close"}
        ) from None
    return b"".join(chunks)


async def submitted_schema(request: Request) -> str:
    """The "schema" string of a request body; only Avro without references is accepted."""
    try:
        body: Any = json.loads(await read_body(request))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise invalid_schema(f"the request body is not JSON ({exc})") from None
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
        raise invalid_schema('the request body must be a JSON object with a "schema" string')
    kind = body.get("schemaType") or "AVRO"
    if kind != "AVRO":
        raise invalid_schema(f"schemaType {kind!r} is not supported: this registry holds Avro schemas only")
    if body.get("references"):
        raise invalid_schema("schema references are not supported: every feed schema is one self-contained record")
    text: str = body["schema"]
    return text


def schema_id_param(request: Request) -> int:
    """The {id} of /schemas/ids/{id}; ids are 4 bytes in the wire format, so a larger one cannot exist."""
    schema_id: int = request.path_params["id"]
    if schema_id > MAX_VERSION:
        raise schema_not_found(f"Schema {schema_id} not found")
    return schema_id


def flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "false").lower() == "true"


async def subject_history(request: Request, subject: str) -> list[RegisteredVersion]:
    found = await registry.history(pool(request), subject)
    if not found:
        raise subject_not_found(subject)
    return found


def pick(found: list[RegisteredVersion], subject: str, number: int | None) -> RegisteredVersion:
    if number is None:
        return found[-1]
    match = next((r for r in found if r.version == number), None)
    if match is None:
        raise version_not_found(subject, number)
    return match


# --------------------------------------------------------------------------- schemas by id


async def schema_by_id(request: Request) -> Response:
    schema_id = schema_id_param(request)
    text = await registry.schema_by_id(pool(request), schema_id)
    if text is None:
        raise schema_not_found(f"Schema {schema_id} not found")
    return RegistryJSON({"schema": text})


async def raw_schema_by_id(request: Request) -> Response:
    schema_id = schema_id_param(request)
    text = await registry.schema_by_id(pool(request), schema_id)
    if text is None:
        raise schema_not_found(f"Schema {schema_id} not found")
    return Response(text, media_type=MEDIA_TYPE)


async def schema_versions(request: Request) -> Response:
    schema_id = schema_id_param(request)
    uses = await registry.uses_of_schema(pool(request), schema_id)
    if not uses:
        raise schema_not_found(f"Schema {schema_id} not found")
    return RegistryJSON([{"subject": s, "version": v} for s, v in uses])


async def schema_subjects(request: Request) -> Response:
    schema_id = schema_id_param(request)
    uses = await registry.uses_of_schema(pool(request), schema_id)
    if not uses:
        raise schema_not_found(f"Schema {schema_id} not found")
    return RegistryJSON(sorted({s for s, _v in uses}))


async def schema_types(_request: Request) -> Response:
    return RegistryJSON(["AVRO"])


# --------------------------------------------------------------------------- subjects


async def list_subjects(request: Request) -> Response:
    return RegistryJSON(await registry.subjects(pool(request)))


async def list_versions(request: Request) -> Response:
    subject = subject_param(request)
    return RegistryJSON([r.version for r in await subject_history(request, subject)])


async def get_version(request: Request) -> Response:
    subject = subject_param(request)
    number = parse_version(request.path_params["version"])
    return RegistryJSON(pick(await subject_history(request, subject), subject, number).as_json())


async def get_version_schema(request: Request) -> Response:
    subject = subject_param(request)
    number = parse_version(request.path_params["version"])
    return Response(pick(await subject_history(request, subject), subject, number).schema, media_type=MEDIA_TYPE)


async def lookup(request: Request) -> Response:
    """POST /subjects/{subject}: is this schema registered under the subject? Its id and version if so."""
    subject = subject_param(request)
    found = await subject_history(request, subject)
    data = _parsed(await submitted_schema(request))
    match = registry.find_registered(data, found, normalize=flag(request, "normalize"))
    if match is None:
        raise schema_not_found(f"Schema not found under subject '{subject}'")
    return RegistryJSON(match.as_json())


async def register(request: Request) -> Response:
    """POST /subjects/{subject}/versions: answered only for a schema already registered (serializers that
    auto-register send what is registered); anything new is refused, saying how schemas are registered."""
    subject = subject_param(request)
    text = await submitted_schema(request)
    data = _parsed(text)
    found = await registry.history(pool(request), subject)
    match = registry.find_registered(data, found, normalize=flag(request, "normalize"))
    if match is not None:
        return RegistryJSON({"id": match.schema_id})
    if found:
        mode = await registry.compatibility(pool(request), subject) or registry.DEFAULT_COMPATIBILITY
        problems = _problems(text, found, mode)
        if problems:
            raise ApiError(
                409,
                INCOMPATIBLE,
                f"Schema being registered is incompatible with an earlier schema for subject '{subject}' "
                f"({mode}): {'; '.join(bounded_list(problems))}. Besides, {READ_ONLY}",
            )
    raise read_only(f"registering a new schema under subject '{subject}'", "GET")


async def test_compatibility(request: Request) -> Response:
    """POST /compatibility/subjects/{subject}/versions[/{version}] -> {"is_compatible", "messages"}.

    Checked with the feed's own compatibility mode: against the given version (and, for a transitive
    mode, every version before it), or against all versions when none is given.
    """
    subject = subject_param(request)
    found = await subject_history(request, subject)
    text = await submitted_schema(request)
    if "version" in request.path_params:
        target = pick(found, subject, parse_version(request.path_params["version"]))
        found = [r for r in found if r.version <= target.version]
    mode = await registry.compatibility(pool(request), subject) or registry.DEFAULT_COMPATIBILITY
    problems = _problems(text, found, mode)
    return RegistryJSON({"is_compatible": not problems, "messages": bounded_list(problems)})


# --------------------------------------------------------------------------- config and mode


async def global_config(_request: Request) -> Response:
    return RegistryJSON({"compatibilityLevel": registry.DEFAULT_COMPATIBILITY})


async def subject_config(request: Request) -> Response:
    subject = subject_param(request)
    mode = await registry.compatibility(pool(request), subject)
    if mode is None:
        if not await registry.versions(pool(request), subject):
            raise subject_not_found(subject)
        mode = registry.DEFAULT_COMPATIBILITY
    return RegistryJSON({"compatibilityLevel": mode})


async def mode(_request: Request) -> Response:
    return RegistryJSON({"mode": "READONLY"})


Endpoint = Callable[[Request], Awaitable[Response]]


def refuse(what: str, allow: str) -> Endpoint:
    async def endpoint(_request: Request) -> Response:
        raise read_only(what, allow)

    return endpoint


COMPATIBILITY_IS_CONFIG = (
    "changing compatibility over HTTP is refused: each feed's mode is the `compatibility:` key of its "
    "connector config, applied with `hub apply`"
)


def refuse_config(allow: str) -> Endpoint:
    async def endpoint(_request: Request) -> Response:
        raise ApiError(405, METHOD_NOT_ALLOWED, COMPATIBILITY_IS_CONFIG, {"Allow": allow})

    return endpoint


# --------------------------------------------------------------------------- helpers


def _parsed(text: str) -> Any:
    try:
        return registry.parse_submitted(text)
    except SchemaError as exc:
        raise invalid_schema(str(exc)) from None


MAX_PROBLEMS = 20
MAX_PROBLEM_CHARS = 500


def bounded_list(problems: list[str]) -> list[str]:
    """At most MAX_PROBLEMS problems of at most MAX_PROBLEM_CHARS characters each: they may quote the input."""
    shown = [shortened(p, MAX_PROBLEM_CHARS) for p in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        shown.append(f"... and {len(problems) - MAX_PROBLEMS} more")
    return shown


def _problems(text: str, against: list[RegisteredVersion], mode: str) -> list[str]:
    try:
        return registry.compatibility_problems(text, against, mode)
    except SchemaError as exc:
        raise invalid_schema(str(exc)) from None


ROUTES: list[BaseRoute] = [
    Route("/schemas/types", schema_types, methods=["GET"]),
    Route("/schemas/ids/{id:int}", schema_by_id, methods=["GET"]),
    Route("/schemas/ids/{id:int}/schema", raw_schema_by_id, methods=["GET"]),
    Route("/schemas/ids/{id:int}/versions", schema_versions, methods=["GET"]),
    Route("/schemas/ids/{id:int}/subjects", schema_subjects, methods=["GET"]),
    Route("/subjects", list_subjects, methods=["GET"]),
    Route("/subjects/{subject}", lookup, methods=["POST"]),
    Route("/subjects/{subject}", refuse("deleting a subject", "POST"), methods=["DELETE"]),
    Route("/subjects/{subject}/versions", list_versions, methods=["GET"]),
    Route("/subjects/{subject}/versions", register, methods=["POST"]),
    Route("/subjects/{subject}/versions/{version}", get_version, methods=["GET"]),
    Route("/subjects/{subject}/versions/{version}", refuse("deleting a schema version", "GET"), methods=["DELETE"]),
    Route("/subjects/{subject}/versions/{version}/schema", get_version_schema, methods=["GET"]),
    Route("/compatibility/subjects/{subject}/versions", test_compatibility, methods=["POST"]),
    Route("/compatibility/subjects/{subject}/versions/{version}", test_compatibility, methods=["POST"]),
    Route("/config", global_config, methods=["GET"]),
    Route("/config", refuse_config("GET"), methods=["PUT", "DELETE"]),
    Route("/config/{subject}", subject_config, methods=["GET"]),
    Route("/config/{subject}", refuse_config("GET"), methods=["PUT", "DELETE"]),
    Route("/mode", mode, methods=["GET"]),
    Route("/mode", refuse("changing the registry's mode", "GET"), methods=["PUT"]),
    Route("/mode/{subject}", mode, methods=["GET"]),
    Route("/mode/{subject}", refuse("changing a subject's mode", "GET"), methods=["PUT", "DELETE"]),
]
