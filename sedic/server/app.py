"""The FastAPI application: `create_app(settings)` builds it (tests build it in-process)."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..config import get_profile
from .errors import error_body, error_headers, one_line, status_of
from .gate import Gate
from .jobs import PIXEL_BUDGET_IMAGES, JobQueue
from .routes import RESPONSE_HEADERS, ServerState, build_router, warm_up
from .settings import ServerSettings
from .uploads import BodyLimit

log = logging.getLogger("sedic.server")
STATIC = Path(__file__).parent / "static"

DESCRIPTION = """HTTP API of sedic (SEDIC, arXiv 2503.00399): compress photos at 0.01-0.05 bpp and decode
them stage by stage. Errors are JSON `{"error": "<one line>", "status": <code>}`. When the server has an
API key (SEDIC_API_KEY), every /v1 request needs `Authorization: Bearer <key>`."""


def _api_docs(app: FastAPI) -> None:
    """/docs: Swagger UI 5 (it reads OpenAPI 3.1) from the assets packaged in fastapi-offline, served
    from this origin. No ReDoc: its bundle loads a logo from cdn.redoc.ly."""
    import fastapi_offline
    from fastapi.openapi.docs import get_swagger_ui_html

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="sedic API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon.png")


class Unexpected:
    """ASGI middleware: an exception no handler took is logged with its traceback (server side only)
    and answered `{"error": "internal error (see the server log)", "status": 500}` on a connection
    that stays usable. Once an answer has started (a stream), the exception passes on and the
    connection closes: the client must not take a cut stream for a whole one."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if started:
                raise
            log.error("unexpected error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
            response = JSONResponse(error_body(500, "internal error (see the server log)"), status_code=500)
            await response(scope, receive, send)


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings.from_env()
    queue = JobQueue(settings.queue, settings.cpu_workers, pixel_budget=PIXEL_BUDGET_IMAGES * settings.max_pixels)
    state = ServerState(settings, get_profile(settings.profile), queue)

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(warm_up(state)) if settings.warm else None
        try:
            yield
        finally:
            state.queue.shutdown()
            if task is not None:
                task.cancel()

    # /docs from the packaged Swagger UI (swagger-ui-bundle), never a CDN: it works offline, and no
    # third-party script runs on the origin where the page keeps the API key.
    app = FastAPI(title="sedic", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    _api_docs(app)
    app.state.sedic = state

    async def library_error(request, exc):
        status = status_of(exc) or 500
        return JSONResponse(error_body(status, str(exc)), status_code=status, headers=error_headers(exc))

    async def validation_error(request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", "invalid"))
        return JSONResponse(error_body(422, "; ".join(parts) or "invalid request"), status_code=422)

    async def http_error(request, exc: StarletteHTTPException):
        return JSONResponse(error_body(exc.status_code, one_line(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    from ..errors import SedicError
    from .jobs import JobCancelled, QueueFull

    for kind in (SedicError, QueueFull, JobCancelled):
        app.add_exception_handler(kind, library_error)
    # Starlette types every handler as taking Exception; these two get only their own class
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]

    router = build_router(state)
    app.include_router(router)
    methods_of: dict[str, set[str]] = {}
    for route in router.routes:
        if isinstance(route, APIRoute):
            methods_of.setdefault(route.path, set()).update(route.methods or ())

    # without this the page's mount at "/" answers every other /v1 request: "Not Found" even for
    # a GET on a POST endpoint
    @app.api_route("/v1/{rest:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
                   include_in_schema=False)
    async def no_such_endpoint(request: Request, rest: str):
        path = request.url.path
        allowed = sorted(methods_of.get(path, ()))
        if allowed:
            raise StarletteHTTPException(405, f"{request.method} {path}: use {' or '.join(allowed)}",
                                         headers={"Allow": ", ".join(allowed)})
        raise StarletteHTTPException(404, f"no endpoint {path} (the API is listed at /docs)")

    app.mount("/", StaticFiles(directory=STATIC, html=True), name="page")

    # innermost of the middlewares: an unhandled exception becomes the JSON 500 here, inside the
    # app (an exception handler for Exception answers from Starlette's outermost layer and then
    # re-raises, and uvicorn closes a connection whose app raised)
    app.add_middleware(Unexpected)

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
                           expose_headers=list(RESPONSE_HEADERS))
    app.add_middleware(BodyLimit, limit_mb=settings.max_upload_mb, grace_s=settings.client_timeout)
    app.add_middleware(Gate, allowed_hosts=settings.allowed_hosts, api_key=settings.api_key)  # outermost
    return app
