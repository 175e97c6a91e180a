"""The playground: a chat page served by sluice itself (sluice/api/playground/, plain HTML, CSS
and JavaScript, no external asset, so it works offline). A browser opening the server's root is
sent there; health checks on `GET /` (which ask for no HTML) keep TGI's answer."""

from importlib import resources

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from sluice.api.state import serving_state

PAGE_PATH = "/playground"
ASSETS = {
    "playground.css": "text/css; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
}

router = APIRouter(include_in_schema=False)


def wants_page(request: Request) -> bool:
    """A browser navigating to the page (health checkers do not ask for HTML)."""
    return "text/html" in request.headers.get("accept", "")


def page_redirect() -> Response:
    return RedirectResponse(PAGE_PATH, status_code=307)


@router.get(PAGE_PATH)
async def page(request: Request) -> Response:
    html = _read("index.html")
    if serving_state(request).config.server.api_key is not None:
        # Told up front, so that the page asks for the key instead of meeting a 401.
        html = html.replace(b'data-needs-key="false"', b'data-needs-key="true"')
    return Response(html, media_type="text/html; charset=utf-8")


@router.get(PAGE_PATH + "/{name}")
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise HTTPException(status_code=404)
    return Response(_read(name), media_type=ASSETS[name])


def _read(name: str) -> bytes:
    return resources.files("sluice.api").joinpath("playground", name).read_bytes()
