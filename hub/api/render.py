"""Server-rendered HTML for the page: Jinja2 templates (autoescaped) in hub/api/templates, one stylesheet and
one small script in hub/api/static, nothing from any other host (the hub runs offline)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from hub.catalog.tokens import Bearer

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"

# Only this site's own script and stylesheet; no inline script, no frames, forms post only here.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def ago(t: datetime | None, now: datetime | None = None) -> str:
    """'3 min ago', '2 h ago', '5 days ago', or 'never'."""
    if t is None:
        return "never"
    s = int(((now or datetime.now(UTC)) - t).total_seconds())
    if s < 0:
        return "in the future"
    for size, unit in ((86400, "days"), (3600, "h"), (60, "min")):
        if s >= size:
            return f"{s // size} {unit} ago"
    return f"{s} s ago"


def day(t: datetime | None) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if t else ""


_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["ago"] = ago
_env.filters["day"] = day


def wants_html(request: Request) -> bool:
    """A browser asking for a page (its Accept starts with text/html), not a script asking for JSON."""
    return "text/html" in request.headers.get("accept", "")


def page(request: Request, template: str, *, bearer: Bearer | None, status: int = 200, **context: Any) -> HTMLResponse:
    body = _env.get_template(template).render(
        request=request, signed_in=bearer, path=request.url.path, site=request.app.state.site, **context
    )
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)
