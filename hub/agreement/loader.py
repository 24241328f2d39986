"""Read organisation and agreement files with errors that name the file, line and key.

Every YAML file of the hub is read by hub/limited_yaml.py (bounded size, nodes, depth and aliases, the
line of every key), and validation errors are located as the connector loader locates them, so every
config file the hub reads reports its errors the same way.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from hub.agreement.model import Agreement, AgreementsFile, Organisation, OrganisationFile
from hub.connector.loader import _location, _model_of, _strip
from hub.errors import ConfigError
from hub.limited_yaml import YamlDocument, field_name, parse_yaml

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Located:
    """A validated document with the line of every key path, for errors found after validation."""

    file: str
    document: YamlDocument

    def line(self, *loc: str | int) -> int | None:
        return self.document.line_of(loc)

    def error(self, message: str, *loc: str | int) -> ConfigError:
        return ConfigError(message, file=self.file, line=self.line(*loc), field=field_name(loc) or None)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(path)) from None


def refuse_anchors(text: str, file: str) -> None:
    """Anchors and aliases are refused in these files, before anything else: no agreement needs them, and a
    reviewer should see every value where it applies. (hub/limited_yaml.py bounds them everywhere else.)"""
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ConfigError(
                    "YAML anchors and aliases (&name, *name) are not accepted here: write the values out",
                    file=file,
                    line=event.start_mark.line + 1 if event.start_mark else None,
                )
    except yaml.YAMLError:
        pass  # parse_yaml reports it, with its line


def parse_document(text: str, file: str, model: type[M], shape: str) -> tuple[M, Located]:
    """Validate a YAML document against `model`; `shape` says what the file should look like."""
    refuse_anchors(text, file)
    document = parse_yaml(text, file)
    data = document.data
    if not isinstance(data, dict):
        raise ConfigError(f"expected {shape}", file=file, line=1)
    located = Located(file, document)
    try:
        return model.model_validate(data), located
    except ValidationError as exc:
        errors = exc.errors()
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc = _location(err, data)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            meant = difflib.get_close_matches(str(loc[-1]), _allowed_keys(model, loc[:-1]), n=1, cutoff=0.6)
            hint = f", did you mean {meant[0]!r}?" if meant else ""
            msg = f"unknown key {loc[-1]!r}{hint} (the keys are listed in docs/agreements.md)"
        elif err["type"] == "missing":
            msg = f"required key {loc[-1]!r} is missing"
        elif err["type"] in ("literal_error", "list_type") and loc and loc[-1] == "consumers":
            msg = "consumers is a list of organisation ids, or the word everyone (open data)"
        others = (
            len([e for e in errors if _location(e, data) != loc]) if loc and loc[-1] == "consumers" else len(errors) - 1
        )
        more = f" (and {others} more problem{'s' if others > 1 else ''})" if others else ""
        raise located.error(msg + more, *loc) from None


def _allowed_keys(model: type[BaseModel], parent: Loc) -> list[str]:
    annotation: Any = model
    for part in parent:
        current = _model_of(annotation)
        if current is not None and isinstance(part, str):
            found = current.model_fields.get(part)
            if found is None:
                return []
            annotation = found.annotation
            continue
        args = [a for a in getattr(_strip(annotation), "__args__", ()) if a is not type(None)]
        annotation = args[0] if args else None
    current = _model_of(annotation)
    return list(current.model_fields) if current is not None else []


@dataclass(frozen=True)
class LoadedOrganisation:
    organisation: Organisation
    where: Located


@dataclass(frozen=True)
class LoadedAgreement:
    agreement: Agreement
    where: Located
    index: int  # position under `agreements:` in its file

    @property
    def file(self) -> str:
        return self.where.file

    def line(self, *loc: str | int) -> int | None:
        return self.where.line("agreements", self.index, *loc)

    def error(self, message: str, *loc: str | int) -> ConfigError:
        return self.where.error(message, "agreements", self.index, *loc)


def load_organisation(path: Path) -> LoadedOrganisation:
    doc, where = parse_document(
        read_text(path), str(path), OrganisationFile, "an organisation file: a mapping with `organisation:`"
    )
    return LoadedOrganisation(doc.organisation, where)


def parse_agreements(text: str, file: str) -> list[LoadedAgreement]:
    doc, where = parse_document(text, file, AgreementsFile, "an agreements file: a mapping with `agreements:`")
    return [LoadedAgreement(a, where, i) for i, a in enumerate(doc.agreements)]


def load_agreements(path: Path) -> list[LoadedAgreement]:
    return parse_agreements(read_text(path), str(path))
