"""Read connector configs from YAML with errors that name the file, line and key."""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from hub.connector.model import ConnectorConfig, LocatedError
from hub.errors import ConfigError
from hub.limited_yaml import DEFAULT_LIMITS, KeyPath, YamlDocument, YamlLimits, field_name, parse_yaml, read_yaml

Path_ = KeyPath


def parse_connector(text: str, file: str, limits: YamlLimits = DEFAULT_LIMITS) -> ConnectorConfig:
    return _validate(parse_yaml(text, file, limits), file)


def _validate(doc: YamlDocument, file: str) -> ConnectorConfig:
    data: Any = doc.data
    if not isinstance(data, dict):
        raise ConfigError("a connector config is a mapping with `partner:` and `feeds:`", file=file, line=1)
    try:
        return ConnectorConfig.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A misspelt key also makes the key it was meant to be "missing": name the typo first.
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc = _location(err, data)
        msg = err["msg"].removeprefix("Value error, ")
        others = len(errors) - 1
        if err["type"] == "extra_forbidden":
            meant = _suggestion(loc)
            hint = f", did you mean {meant!r}?" if meant else ""
            msg = f"unknown key {loc[-1]!r}{hint} (the keys are listed in docs/connector-config.md)"
            if any(e["type"] == "missing" and _location(e, data) == (*loc[:-1], meant) for e in errors):
                others -= 1  # the key it was meant to be is "missing": the same problem
        elif err["type"] == "missing":
            msg = f"required key {loc[-1]!r} is missing"
        more = f" (and {others} more problem{'s' if others > 1 else ''})" if others else ""
        raise ConfigError(msg + more, file=file, line=doc.line_of(loc), field=field_name(loc)) from None


_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _location(err: ErrorDetails, data: Any) -> Path_:
    """The key path an error concerns, without pydantic's own steps (validator and union member names)."""
    loc: Path_ = tuple(err["loc"])
    cause = err.get("ctx", {}).get("error")
    if isinstance(cause, LocatedError):
        loc = (*loc, *cause.loc)
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif isinstance(part, str) and (not _KEY.fullmatch(part) or part in _TYPE_TAGS):
            continue  # e.g. 'function-after[...]', 'str-enum[TimeFormat]', 'CsvOptions', 'str'
        else:
            node = None  # a missing key: the path ends here
        path.append(part)
    return tuple(path)


def _suggestion(loc: Path_) -> str | None:
    """The allowed key closest to an unknown one ('licnce' -> 'licence'), if any is close."""
    close = difflib.get_close_matches(str(loc[-1]), _allowed_keys(loc[:-1]), n=1, cutoff=0.6)
    return close[0] if close else None


def _allowed_keys(parent: Path_) -> list[str]:
    """The keys the connector model accepts at a key path (following lists, dicts and optional parts)."""
    annotation: Any = ConnectorConfig
    for part in parent:
        model = _model_of(annotation)
        if model is not None and isinstance(part, str):
            field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return []
            annotation = field.annotation
            continue
        args = [a for a in typing.get_args(_strip(annotation)) if a is not type(None)]
        if not args:
            return []
        annotation = args[-1]  # list[X] -> X, dict[str, X] -> X
    model = _model_of(annotation)
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]


def _strip(annotation: Any) -> Any:
    """`Annotated[X, ...]` -> X; `X | None` -> X."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _strip(members[0])
    return annotation


def _model_of(annotation: Any) -> type[BaseModel] | None:
    inner = _strip(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def load_connector(path: Path, limits: YamlLimits = DEFAULT_LIMITS) -> ConnectorConfig:
    return _validate(read_yaml(path, limits), str(path))


def connector_files(path: Path) -> list[Path]:
    """A file, or every *.yaml / *.yml file of a directory (sorted)."""
    if path.is_dir():
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        if not files:
            raise ConfigError("no connector configs (*.yaml) in this directory", file=str(path))
        return files
    return [path]


def key_line(path: Path, loc: Path_) -> int | None:
    """Line of a key path in a (valid) YAML file, for errors found after validation."""
    try:
        return read_yaml(path).line_of(loc)
    except ConfigError:
        return None
