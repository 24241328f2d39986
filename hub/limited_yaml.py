"""YAML read with limits, and the line of every key: the one way the hub reads a YAML file.

PyYAML's safe loader has no limits. Composing keeps an alias as a reference to its anchored node,
but everything that walks the document afterwards (constructing, validating, mapping lines) expands
it, so a few hundred bytes of nested aliases ("billion laughs") become billions of nodes. Here the
composer itself counts: every node, and for an alias the expanded size of the node it names, so a
document is refused at the alias where it crosses a limit, before anything is expanded. Depth is
bounded the same way (PyYAML composes recursively), and the text's size before it is parsed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, ScalarEvent
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from hub.errors import ConfigError

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class YamlLimits:
    """What one YAML document may hold. The defaults leave room for thousands of feeds in one file."""

    max_bytes: int = 4 * 1024 * 1024
    max_nodes: int = 1_000_000  # after aliases are expanded: what constructing and validating will walk
    max_depth: int = 64
    max_aliases: int = 10_000
    max_scalar_chars: int = 64 * 1024


DEFAULT_LIMITS = YamlLimits()


@dataclass(frozen=True)
class YamlDocument:
    """A document's data (plain dicts, lists and scalars) and the 1-based line of every key path."""

    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, loc: KeyPath) -> int | None:
        """The line of a key path, or of its nearest ancestor that is in the document."""
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in self.lines:
                return self.lines[loc[:cut]]
        return None


def field_name(loc: KeyPath) -> str:
    """('feeds', 0, 'time', 'field') -> 'feeds[0].time.field'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Refused(Exception):
    def __init__(self, reason: str, mark: yaml.Mark | None, what: str = "refused YAML") -> None:
        self.reason = f"{what}: {reason}"
        self.mark = mark


class _CountingComposer(Composer):
    """PyYAML's composer, counting what the document would expand to."""

    peek_event: Callable[[], Any]  # the parser's, mixed in beside this class

    def _start_counting(self, limits: YamlLimits) -> None:
        self.limits = limits
        self.nodes = 0  # composed so far, aliases counted expanded
        self.aliases = 0
        self.depth = 0
        self.deepest = 0
        self.open_anchors: set[str] = set()
        self.weight: dict[int, tuple[int, int]] = {}  # id(anchored node) -> (expanded nodes, expanded height)

    def _count(self, nodes: int, mark: yaml.Mark) -> None:
        self.nodes += nodes
        if self.nodes > self.limits.max_nodes:
            raise _Refused(
                f"the document expands to more than {self.limits.max_nodes:,} nodes"
                " (aliases nested in aliases, or simply too large)",
                mark,
            )

    def _reach(self, depth: int, mark: yaml.Mark) -> None:
        self.deepest = max(self.deepest, depth)
        if depth > self.limits.max_depth:
            raise _Refused(f"nesting deeper than {self.limits.max_depth} levels", mark)

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()
        mark = event.start_mark
        if isinstance(event, AliasEvent):
            anchor = str(event.anchor)
            if anchor in self.open_anchors:
                raise _Refused(f"alias *{anchor} refers to a node that contains it", mark)
            node = super().compose_node(parent, index)  # the anchored node itself, or "undefined alias"
            self.aliases += 1
            if self.aliases > self.limits.max_aliases:
                raise _Refused(f"more than {self.limits.max_aliases:,} aliases", mark)
            nodes, height = self.weight.get(id(node), (1, 1))
            self._reach(self.depth + height, mark)
            self._count(nodes, mark)
            return node
        if isinstance(event, ScalarEvent) and len(event.value) > self.limits.max_scalar_chars:
            raise _Refused(f"a value longer than {self.limits.max_scalar_chars:,} characters", mark)
        anchor = event.anchor
        if anchor is not None:
            self.open_anchors.add(anchor)
        self.depth += 1
        self._reach(self.depth, mark)
        self._count(1, mark)
        before, outer_deepest, self.deepest = self.nodes - 1, self.deepest, self.depth
        node = super().compose_node(parent, index)
        if anchor is not None:
            self.open_anchors.discard(anchor)
            self.weight[id(node)] = (self.nodes - before, self.deepest - self.depth + 1)
        self.depth -= 1
        self.deepest = max(outer_deepest, self.deepest)
        return node


class _MarkedConstructor(SafeConstructor):
    """The safe constructor, naming the line of a scalar that looks like a YAML type but is not a value of it:
    a date like 2026-13-45, an integer of more digits than Python converts."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            shown = node.value if len(str(node.value)) <= 40 else f"{str(node.value)[:40]}..."
            raise _Refused(f"{shown!r} is not a valid value: {exc}", node.start_mark, "invalid YAML") from None


if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _LimitedLoader(_CountingComposer, CParser, _MarkedConstructor, Resolver):
        """libyaml scans and parses (seven times faster than PyYAML's own scanner), the counting composer composes."""

        def __init__(self, text: str, limits: YamlLimits) -> None:
            CParser.__init__(self, text)
            Composer.__init__(self)
            _MarkedConstructor.__init__(self)
            Resolver.__init__(self)
            self._start_counting(limits)

else:  # pragma: no cover - PyYAML built without libyaml

    class _LimitedLoader(_CountingComposer, Reader, Scanner, Parser, _MarkedConstructor, Resolver):  # type: ignore[no-redef]
        def __init__(self, text: str, limits: YamlLimits) -> None:
            Reader.__init__(self, text)
            Scanner.__init__(self)
            Parser.__init__(self)
            Composer.__init__(self)
            _MarkedConstructor.__init__(self)
            Resolver.__init__(self)
            self._start_counting(limits)


def parse_yaml(text: str, file: str, limits: YamlLimits = DEFAULT_LIMITS) -> YamlDocument:
    """One YAML document, within `limits`; every problem is a ConfigError naming the file and line."""
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > limits.max_bytes:
        raise ConfigError(f"the file is {size:,} bytes; at most {limits.max_bytes:,} are read", file=file)
    loader = _LimitedLoader(text, limits)
    lines: dict[KeyPath, int] = {}
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDocument(None, lines)
        _map_lines(node, (), lines, file, set())  # before constructing, which merges `<<:` keys into the node
        data = loader.construct_document(node)
    except _Refused as exc:
        raise ConfigError(exc.reason, file=file, line=_line(exc.mark)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = "; ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise ConfigError(f"invalid YAML: {problem}", file=file, line=_line(mark)) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, other controls)
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(f"invalid YAML: {_reader_problem(exc)}", file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=file) from None
    finally:
        loader.dispose()
    return YamlDocument(data, lines)


def read_yaml(path: Path, limits: YamlLimits = DEFAULT_LIMITS) -> YamlDocument:
    """A YAML file, of which no more than `limits.max_bytes` (+1, to know it is larger) is read."""
    try:
        with path.open("rb") as f:
            raw = f.read(limits.max_bytes + 1)
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    if len(raw) > limits.max_bytes:
        raise ConfigError(f"the file is larger than {limits.max_bytes:,} bytes, the most that is read", file=str(path))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", file=str(path), line=line) from None
    return parse_yaml(text, str(path), limits)


def _line(mark: yaml.Mark | None) -> int | None:
    return mark.line + 1 if mark is not None else None


def _reader_problem(exc: yaml.reader.ReaderError) -> str:
    if isinstance(exc.character, int):
        return f"character {exc.character:#x} is not allowed in YAML ({exc.reason})"
    return str(exc.reason)


def _map_lines(node: yaml.Node, path: KeyPath, out: dict[KeyPath, int], file: str, seen: set[int]) -> None:
    """Map each key path to its line; a key given twice in one mapping is an error.

    YAML loaders keep the last of two equal keys silently, so a pasted duplicate would hide the first value.
    A node reached again through an alias is not walked again: the keys under an alias take the alias's line.
    """
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.CollectionNode):
        if id(node) in seen:
            return
        seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue  # a list or mapping as a key: the models refuse it with the key's own line
            line = key.start_mark.line + 1
            if key.value in first and key.tag != "tag:yaml.org,2002:merge":
                raise ConfigError(
                    f"key {key.value!r} is given twice in the same mapping (first on line {first[key.value]}); "
                    "remove one of them",
                    file=file,
                    line=line,
                    field=field_name((*path, key.value)),
                )
            first[key.value] = line
            child = (*path, key.value)
            out[child] = line
            _map_lines(value, child, out, file, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _map_lines(item, (*path, i), out, file, seen)
