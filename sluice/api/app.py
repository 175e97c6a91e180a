"""Builds the FastAPI application: routes, error handlers, and the engine output task."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from sluice import __version__
from sluice.api import openai_routes, playground_routes, tgi_routes, tokenize_routes
from sluice.api.error_mapping import error_body, status_for
from sluice.api.middleware import RequestGate
from sluice.api.state import ServingState
from sluice.api.tracing import TracingMiddleware
from sluice.errors import SluiceError

logger = logging.getLogger(__name__)


def create_app(state: ServingState) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(state.client.run_output_loop())
        yield
        task.cancel()

    app = FastAPI(title="Text Generation Inference", version=__version__, lifespan=lifespan)
    app.state.serving = state
    app.include_router(tgi_routes.router)
    app.include_router(openai_routes.router)
    app.include_router(tokenize_routes.router)
    app.include_router(playground_routes.router)
    app.add_exception_handler(RequestValidationError, _malformed_body)
    app.add_exception_handler(SluiceError, _sluice_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_api_route("/api-doc/openapi.json", lambda: app.openapi(), include_in_schema=False)
    server = state.config.server
    app.add_middleware(
        RequestGate,
        api_key=server.api_key,
        payload_limit=state.config.api.payload_limit,
        shutdown=state.shutdown,
        send_timeout_s=server.client_stall_timeout,
    )
    if server.otlp_endpoint is not None:
        app.add_middleware(TracingMiddleware)
    if server.cors_allow_origin:
        # Outermost, so that CORS preflight requests are answered before the API key check.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(server.cors_allow_origin),
            allow_methods=["GET", "POST"],
            allow_headers=["content-type", "authorization"],
        )
    return app


async def _malformed_body(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = error.errors()
    if any(p.get("type") == "json_invalid" for p in problems):
        detail = "; ".join(str(p.get("msg", "")) for p in problems)
        return JSONResponse(
            {
                "error": f"Failed to parse the request body as JSON: {detail}",
                "error_type": "validation",
            },
            status_code=400,
        )
    detail = "; ".join(
        f"{'.'.join(str(part) for part in p.get('loc', ())[1:])}: {p.get('msg', '')}"
        for p in problems
    )
    return JSONResponse(
        {
            "error": f"Failed to deserialize the JSON body into the target type: {detail}",
            "error_type": "validation",
        },
        status_code=422,
    )


async def _sluice_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, SluiceError)
    return JSONResponse(error_body(error), status_code=status_for(error))


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    """A bug must not leak a traceback or a plain-text body: log it, answer TGI's JSON shape."""
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"error": "Internal server error", "error_type": "internal"}, 500)
