"""What `hub plan` and `hub apply` read: files and directories, each YAML file sorted by its top-level key.

`partner:` is a connector config, `organisation:` an organisation, `agreements:` a list of agreements.
Anything else is read as a connector config, whose loader then says what is wrong with it. Which files and
directories were read matters too: an agreement applied from a file that `hub apply` reads again and no
longer finds there is withdrawn; agreements from files it did not read are left as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hub.errors import ConfigError
from hub.limited_yaml import read_yaml

KINDS = {"organisation": "organisations", "agreements": "agreements"}


@dataclass
class Sources:
    connectors: list[Path] = field(default_factory=list)
    organisations: list[Path] = field(default_factory=list)
    agreements: list[Path] = field(default_factory=list)
    files: set[Path] = field(default_factory=set)  # resolved
    directories: set[Path] = field(default_factory=set)  # resolved

    def covers(self, source: str) -> bool:
        """Whether a file recorded in the catalog was read again by this run (itself, or its directory)."""
        path = Path(source).resolve()
        return path in self.files or path.parent in self.directories


def yaml_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        if not files:
            raise ConfigError("no *.yaml files in this directory", file=str(path))
        return files
    if not path.exists():
        raise ConfigError("file not found", file=str(path))
    return [path]


def kind_of(path: Path) -> str:
    """`connectors`, `organisations` or `agreements`, by the document's top-level keys.

    Read with the same limits as every YAML file (hub/limited_yaml.py); a file that breaks them, or is no
    YAML, is handed to the connector loader, which reports it with its line.
    """
    try:
        data = read_yaml(path).data
    except ConfigError:
        return "connectors"
    if isinstance(data, dict):
        keys = {k for k in data if isinstance(k, str)}
        for key, kind in KINDS.items():
            if key in keys and "partner" not in keys:
                return kind
    return "connectors"


def classify(paths: Path | Sequence[Path]) -> Sources:
    out = Sources()
    for path in [paths] if isinstance(paths, Path) else paths:
        if path.is_dir():
            out.directories.add(path.resolve())
        for file in yaml_files(path):
            resolved = file.resolve()
            if resolved in out.files:
                continue
            out.files.add(resolved)
            getattr(out, kind_of(file)).append(file)
    return out
