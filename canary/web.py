"""The daemon's own HTTP server: the status page, /metrics, /healthz, /readyz and /status, all
read-only."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from canary.statuspage import CSP, render

# No endpoint takes a body; anything larger than a request line and headers is refused.
MAX_REQUEST_BYTES = 16 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(document: Any, status: int = 200) -> web.Response:
    # Compact: the C encoder is 5 times faster than an indented dump, and the loop waits for it.
    return web.Response(
        text=json.dumps(document),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


@web.middleware
async def _bounded_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse bodies over the limit even where no handler reads them (none does)."""
    if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_REQUEST_BYTES, request.content_length)
    if request.body_exists:
        seen = len(await request.content.read(MAX_REQUEST_BYTES + 1))
        if seen > MAX_REQUEST_BYTES:
            raise web.HTTPRequestEntityTooLarge(MAX_REQUEST_BYTES, seen)
    return await handler(request)


def make_app(
    registry: CollectorRegistry,
    healthy: Callable[[], bool],
    ready: Callable[[], bool],
    environments: Callable[[], dict[str, bool]],
    status: Callable[[], dict[str, Any]],
) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(request: web.Request) -> web.Response:
        ok = healthy()
        return _json({"healthy": ok}, 200 if ok else 503)

    async def readyz(request: web.Request) -> web.Response:
        ok = ready()
        return _json({"ready": ok, "environments": environments()}, 200 if ok else 503)

    async def status_json(request: web.Request) -> web.Response:
        return _json(status())

    async def status_page(request: web.Request) -> web.Response:
        return web.Response(
            text=render(status()),
            content_type="text/html",
            headers={
                "Cache-Control": "no-store",
                "Content-Security-Policy": CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[_bounded_body])
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status_json)
    app.router.add_get("/", status_page)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
