"""YAML is read with limits: hostile documents are refused before anything is expanded, naming file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.connector.loader import load_connector, parse_connector
from hub.errors import ConfigError
from hub.limited_yaml import YamlLimits, parse_yaml, read_yaml
from tests.feeds import RIVERTON_PARTNER


def laughs(levels: int) -> str:
    """The "billion laughs" document: each level is a list of nine aliases of the level before it."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    names = "abcdefghijklmnop"
    for i in range(1, levels + 1):
        lines.append(f"{names[i]}: &{names[i]} [" + ",".join([f"*{names[i - 1]}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_the_billion_laughs_document_is_refused_at_the_alias_that_crosses_the_limit() -> None:
    text = laughs(8)  # 9**9 strings once expanded; it used 7 GB and over a minute before
    assert len(text) < 400
    with pytest.raises(ConfigError) as caught:
        parse_connector(text, "connectors/laughs.yaml")
    error = caught.value
    assert error.file == "connectors/laughs.yaml"
    assert error.line == 7  # g: the first level past a million nodes
    assert "expands to more than 1,000,000 nodes" in error.reason


def test_seven_levels_of_laughs_are_refused_too() -> None:
    with pytest.raises(ConfigError, match=r"laughs\.yaml:7: refused YAML: the document expands"):
        parse_connector(laughs(7), "laughs.yaml")


def test_the_node_limit_counts_aliases_expanded() -> None:
    text = laughs(3)  # about 7,400 nodes from four short lines
    assert parse_yaml(text, "f.yaml").data["d"][8][8][8] == ["lol"] * 9
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, "f.yaml", YamlLimits(max_nodes=1_000))
    assert caught.value.line == 4


def test_deep_nesting_is_refused_before_the_parser_recurses() -> None:
    flow = "a: " + "[" * 500 + "]" * 500 + "\n"
    with pytest.raises(ConfigError, match=r"deep\.yaml:1: refused YAML: nesting deeper than 64 levels"):
        parse_yaml(flow, "deep.yaml")
    with pytest.raises(ConfigError, match=r"deep\.yaml:1: (refused|invalid) YAML"):
        parse_yaml("a: " + "[" * 100_000 + "]" * 100_000 + "\n", "deep.yaml")
    block = "".join(" " * i + f"k{i}:\n" for i in range(100)) + " " * 100 + "x: 1\n"
    with pytest.raises(ConfigError) as caught:
        parse_yaml(block, "deep.yaml")
    assert caught.value.line == 64


def test_an_alias_deepens_the_document_by_the_depth_of_its_anchor() -> None:
    nested = "a: &a " + "[" * 40 + "]" * 40 + "\nb: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[*a]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n"
    with pytest.raises(ConfigError, match="nesting deeper than 64 levels") as caught:
        parse_yaml(nested, "f.yaml")
    assert caught.value.line == 2


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"f\.yaml:1: refused YAML: alias \*a refers to a node that contains it"):
        parse_yaml("a: &a [1, *a]\n", "f.yaml")


def test_too_many_aliases_are_refused() -> None:
    text = "a: &a 1\nb: [" + ", ".join(["*a"] * 200) + "]\n"
    with pytest.raises(ConfigError, match="more than 100 aliases"):
        parse_yaml(text, "f.yaml", YamlLimits(max_aliases=100))


def test_a_very_long_value_is_refused_with_its_line() -> None:
    text = RIVERTON_PARTNER.format(partner="p") + "feeds:\n  - name: " + "x" * 100_000 + "\n"
    with pytest.raises(ConfigError) as caught:
        parse_connector(text, "long.yaml")
    assert "a value longer than 65,536 characters" in caught.value.reason
    assert caught.value.line == text.count("\n")


def test_a_huge_file_is_refused_without_being_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("w") as f:
        f.write("a: 1\n")
        f.seek(10 * 1024 * 1024 * 1024)  # 10 GB, sparse
        f.write("\n")
    with pytest.raises(ConfigError, match=r"huge\.yaml: the file is larger than 4,194,304 bytes"):
        load_connector(path)
    with pytest.raises(ConfigError, match="at most 4,194,304 are read"):
        parse_yaml("a: " + "x" * (4 * 1024 * 1024) + "\n", "huge.yaml")


def test_characters_yaml_does_not_allow_are_named_with_their_line() -> None:
    with pytest.raises(ConfigError, match=r"nul\.yaml:2: invalid YAML: character 0x0 is not allowed"):
        parse_yaml("a: 1\nb: x\x00y\n", "nul.yaml")


def test_bytes_that_are_not_utf8_are_named_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"a: 1\nb: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1\.yaml:2: not UTF-8 text"):
        read_yaml(path)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("a: 2026-13-45\n", "f.yaml:1: invalid YAML: '2026-13-45' is not a valid value: month must be in 1..12"),
        ("a: " + "9" * 5000 + "\n", "f.yaml:1: invalid YAML: '9999.*' is not a valid value: Exceeds the limit"),
        ("a: 1\nb: !!int x\n", "f.yaml:2: invalid YAML: 'x' is not a valid value"),
        ("a: !!python/object:os.system x\n", "could not determine a constructor"),
        ("a: 1\n---\nb: 2\n", "expected a single document"),
    ],
)
def test_values_yaml_cannot_construct_are_config_errors(text: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_yaml(text, "f.yaml")


def test_plain_anchors_and_merge_keys_still_work() -> None:
    text = "base: &base {x: 1, y: 2}\nboth: {<<: *base, y: 3}\nagain: *base\n"
    doc = parse_yaml(text, "f.yaml")
    assert doc.data == {"base": {"x": 1, "y": 2}, "both": {"x": 1, "y": 3}, "again": {"x": 1, "y": 2}}
    assert doc.line_of(("both", "y")) == 2
    assert doc.line_of(("again", "x")) == 3  # keys under an alias take the alias's line
