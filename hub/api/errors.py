"""Errors of the HTTP API in the Confluent Schema Registry's shape: {"error_code": 40401, "message": "..."}."""

from __future__ import annotations

from hub.errors import AccessDenied, ConfigError, NotFound, ServerUnavailable

SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
SCHEMA_NOT_FOUND = 40403
INVALID_SCHEMA = 42201
INVALID_VERSION = 42202
INCOMPATIBLE = 409
METHOD_NOT_ALLOWED = 405
STORE_ERROR = 50001

READ_ONLY = (
    "this registry is read-only: schemas are registered by `hub apply`, because connector configs are the "
    "source of truth. Put the schema in schemas/<name>.avsc, name it in the feed's connector config "
    "(`schema: <name>`), then run `hub plan` and `hub apply`"
)


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {"error_code": self.code, "message": self.message}


def subject_not_found(subject: str) -> ApiError:
    return ApiError(404, SUBJECT_NOT_FOUND, f"Subject '{subject}' not found.")


def version_not_found(subject: str, version: int) -> ApiError:
    return ApiError(404, VERSION_NOT_FOUND, f"Version {version} not found for subject '{subject}'.")


def schema_not_found(detail: str = "Schema not found") -> ApiError:
    return ApiError(404, SCHEMA_NOT_FOUND, detail)


def invalid_schema(reason: str) -> ApiError:
    return ApiError(422, INVALID_SCHEMA, f"Invalid schema: {reason}")


def read_only(what: str, allow: str) -> ApiError:
    return ApiError(405, METHOD_NOT_ALLOWED, f"{what} is refused: {READ_ONLY}", {"Allow": allow})


def from_hub_error(exc: Exception) -> ApiError:
    """A HubError raised by the planes below, as the HTTP status a client can act on."""
    if isinstance(exc, NotFound):
        return ApiError(404, 40401, str(exc))
    if isinstance(exc, AccessDenied):
        return ApiError(403, 40301, str(exc))
    if isinstance(exc, ConfigError):
        return ApiError(422, 42201, str(exc))
    if isinstance(exc, ServerUnavailable):
        return ApiError(503, 50301, str(exc))
    return ApiError(409, 40901, str(exc))
