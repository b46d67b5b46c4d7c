"""The dashboard: one page and its two files, served from the package, and the chart's series.

No build step and no network: `static/` holds the page, its script and its style as they are
served. The page runs under a Content-Security-Policy that lets it load only those files and
talk only to this coordinator (no inline script, no other origin, no frames, no forms), so a
status field that held markup could not run in it either (the script writes text, never HTML).
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from coordinator.dashboard.series import DEFAULT_POINTS, MAX_POINTS, FillSeries, Live
from coordinator.errors import BadRequest, NotFound

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_TYPES = {
    "index.html": "text/html",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
ASSETS = web.AppKey("dashboard_assets", dict[str, bytes])
SERIES = web.AppKey("fill_series", FillSeries)


def load_assets() -> dict[str, bytes]:
    """The page's files, from the installed package."""
    folder = resources.files("coordinator.dashboard") / "static"
    return {name: (folder / name).read_bytes() for name in _TYPES}


# Read when this module is imported (before the event loop runs: `coordinator.api.app` imports
# it at its top), so that serving the page never reads a file inside the loop.
_ASSETS = load_assets()


def add_dashboard_routes(app: web.Application, series: FillSeries) -> None:
    app[ASSETS] = _ASSETS
    app[SERIES] = series
    app.router.add_get("/", get_page)
    app.router.add_get("/ui/", get_page)
    app.router.add_get("/ui/{file}", get_asset)
    app.router.add_get("/bots/{name}/series", get_series)


def _asset(request: web.Request, name: str) -> web.Response:
    body = request.app[ASSETS].get(name)
    if body is None:
        raise NotFound(f"/ui/{name}: no such dashboard file (it has {', '.join(_TYPES)})")
    response = web.Response(body=body, content_type=_TYPES[name], charset="utf-8")
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["Cache-Control"] = "no-cache"  # a new version is seen at the next load
    return response


async def get_page(request: web.Request) -> web.Response:
    return _asset(request, "index.html")


async def get_asset(request: web.Request) -> web.Response:
    return _asset(request, request.match_info["file"])


async def get_series(request: web.Request) -> web.Response:
    """The bot's position and PnL over time (`?points=`, 1-2000, default 300), downsampled
    from the journal; the last point is the bot's book now."""
    from coordinator.api.app import COORDINATOR, fast_json  # the app imports this module

    unknown = sorted(set(request.query) - {"points"})
    if unknown:
        raise BadRequest(f"{unknown[0]}: unknown query parameter (known: points)")
    raw = request.query.get("points", str(DEFAULT_POINTS))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_POINTS:
        raise BadRequest(f"points: must be a whole number from 1 to {MAX_POINTS}, got {raw!r}")
    coordinator = request.app[COORDINATOR]
    runner = coordinator.supervisor.runner(request.match_info["name"])  # UnknownBot: 404
    document = coordinator.bot_status(runner)
    config = runner.parts.config
    live = Live(
        position=document["position"]["base"],
        pnl=document["pnl"]["total"],
        price=document["last_price"],
    )
    series = await request.app[SERIES].series(
        runner.name, config.base_asset, config.quote_asset, int(raw), live, coordinator.clock()
    )
    return fast_json(series)
