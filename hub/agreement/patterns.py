"""Device patterns of agreements: `*` is any run of characters, everything else is literal.

The SQL form (`LIKE` with the wildcards of LIKE itself escaped) and the Python form must agree on every
id: the views use the first, the live share streams and the validator the second.
"""

from __future__ import annotations

import re


def is_pattern(device: str) -> bool:
    return "*" in device


def glob_to_like(pattern: str) -> str:
    r"""`st_0*` -> `st\_0%`: LIKE's own `%`, `_` and its escape `\` are escaped, so an `_` in an id can
    never widen a grant (a naive translation lets `st_0*` match `stX01`)."""
    out = []
    for ch in pattern:
        if ch == "*":
            out.append("%")
        elif ch in "%_\\":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def glob_match(pattern: str, device_id: str) -> bool:
    """Python twin of `device_id LIKE glob_to_like(pattern)`: case-sensitive, `*` may match nothing."""
    regex = "".join(".*" if ch == "*" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, device_id, flags=re.DOTALL) is not None
