"""The page at GET /: what the model knows and what it does not. One HTML file, its script and its
stylesheet, shipped in the package (service/http/static/); no CDN, no build step. The page calls
the service's own API, so it needs nothing here beyond the files."""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from starlette.responses import Response

from service.http.errors import ApiError

router = APIRouter(tags=["page"])

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# No inline script or style anywhere (the script sets sizes through the CSSOM, which CSP allows),
# fetches only to this origin, never framed (clickjacking), no referrer leaving the page.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate, so a new release's page and script arrive together
}


@cache
def asset(name: str) -> bytes:
    """A file of the page, read once from the installed package."""
    return resources.files("service.http").joinpath("static", name).read_bytes()


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def page() -> Response:
    return Response(asset("index.html"), media_type=ASSETS["index.html"], headers=SECURITY_HEADERS)


@router.api_route("/static/{file}", methods=["GET", "HEAD"], include_in_schema=False)
async def static_file(file: str) -> Response:
    if file not in ASSETS:
        raise ApiError(404, f"no static file {file[:100]!r}; the page is at /")
    return Response(asset(file), media_type=ASSETS[file], headers=SECURITY_HEADERS)
