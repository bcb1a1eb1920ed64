"""A minimal GitLab REST stand-in for benchmarks/published.py, run as its own process so its CPU
is not counted as the canary's: every project holds one root container repository, and every
tag was created on 2023-05-01."""

from __future__ import annotations

import sys
import zlib
from urllib.parse import unquote

from aiohttp import web

CREATED = "2023-05-01T12:00:00.000+00:00"


def _ids(project: str) -> tuple[int, int]:
    checksum = zlib.crc32(project.encode())
    return checksum % 1_000_000 + 1, checksum % 1_000_000 + 1_000_001


async def repositories(request: web.Request) -> web.Response:
    project = unquote(request.match_info["project"])
    project_id, repository_id = _ids(project)
    entry = {"id": repository_id, "name": "", "path": project, "project_id": project_id}
    return web.json_response([entry], headers={"X-Next-Page": ""})


async def tag(request: web.Request) -> web.Response:
    return web.json_response({"name": request.match_info["tag"], "created_at": CREATED})


def main() -> None:
    app = web.Application()
    app.router.add_get("/api/v4/projects/{project}/registry/repositories", repositories)
    app.router.add_get(
        "/api/v4/projects/{project}/registry/repositories/{repository}/tags/{tag}", tag
    )
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
