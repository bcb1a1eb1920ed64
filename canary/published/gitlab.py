"""GitLab's REST API as a date source: a tag's `created_at`, its repository's id looked up once.

`GET /api/v4/projects/:id/registry/repositories` (paginated) finds the container repository;
`GET /api/v4/projects/:id/registry/repositories/:repository_id/tags/:tag_name` gives the date.
Without a configured project, the longest prefix of the repository's path that GitLab knows as a
project holding it is used. Every failure is an Observation with its reason, never an exception.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import aiohttp
from multidict import CIMultiDictProxy

from canary.config import PublishedSource
from canary.published.judge import Observation
from canary.registry.client import USER_AGENT, ssl_context
from canary.registry.media import parse_timestamp
from canary.servers import GitLab

SOURCE = PublishedSource.GITLAB_API
PER_PAGE = 100
MAX_PAGES = 100  # 10,000 container repositories in one project
MAX_BODY_BYTES = 8 * 1024 * 1024


class _Failed(Exception):
    """A request that did not give what was asked; the message is the observation's reason."""


class _NotFound(_Failed):
    pass


def candidate_projects(repository: str) -> list[str]:
    """The paths that may be the project of `repository`, longest first (a project has at least
    a namespace and a name)."""
    parts = repository.split("/")
    return ["/".join(parts[:n]) for n in range(len(parts), 1, -1)]


class GitLabClient:
    """Reads tag dates from one GitLab instance with its own session and timeout."""

    def __init__(self, settings: GitLab) -> None:
        self.settings = settings
        self._api = settings.url + "/api/v4"
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context(settings), limit=8),
            timeout=aiohttp.ClientTimeout(total=settings.timeout),
            headers={"User-Agent": USER_AGENT},
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        # (configured project or None, repository) → (project id, repository id)
        self._ids: dict[tuple[str | None, str], tuple[int, int]] = {}
        self._lookups: dict[tuple[str | None, str], asyncio.Lock] = {}

    async def close(self) -> None:
        await self._session.close()

    async def created_at(self, repository: str, tag: str, project: str | None) -> Observation:
        try:
            project_id, repository_id = await self._repository(project, repository)
            path = (
                f"/projects/{project_id}/registry/repositories/{repository_id}"
                f"/tags/{quote(tag, safe='')}"
            )
            document, _ = await self._get(path)
        except _Failed as exc:
            return Observation(SOURCE, None, str(exc))
        value = document.get("created_at") if isinstance(document, dict) else None
        if value is None:
            return Observation(SOURCE, None, "GitLab's tag has no created_at (null)")
        stamp = parse_timestamp(value) if isinstance(value, str) else None
        if stamp is None:
            return Observation(SOURCE, None, f"GitLab's created_at is not a date: {value!r:.60}")
        return Observation(SOURCE, stamp)

    async def _repository(self, project: str | None, repository: str) -> tuple[int, int]:
        key = (project, repository)
        if key in self._ids:
            return self._ids[key]
        # Images of one repository share the lookup instead of each listing the project.
        async with self._lookups.setdefault(key, asyncio.Lock()):
            if key not in self._ids:
                self._ids[key] = await self._find(project, repository)
        return self._ids[key]

    async def _find(self, project: str | None, repository: str) -> tuple[int, int]:
        candidates = [project] if project else candidate_projects(repository)
        for candidate in candidates:
            try:
                listed = await self._repositories(candidate)
            except _NotFound:
                continue
            for entry in listed:
                if isinstance(entry, dict) and entry.get("path") == repository:
                    try:
                        return int(entry["project_id"]), int(entry["id"])
                    except (KeyError, TypeError, ValueError):
                        raise _Failed("GitLab's repository entry has no numeric ids") from None
        if project:
            raise _Failed(f"GitLab project {project} has no container repository {repository}")
        raise _Failed(f"no GitLab project has the container repository {repository}")

    async def _repositories(self, project: str) -> list[Any]:
        """Every container repository of `project`, following GitLab's pagination."""
        listed: list[Any] = []
        page: str | None = "1"
        path = f"/projects/{quote(project, safe='')}/registry/repositories"
        for _ in range(MAX_PAGES):
            if not page:
                return listed
            document, headers = await self._get(f"{path}?per_page={PER_PAGE}&page={page}")
            if not isinstance(document, list):
                raise _Failed("GitLab's repository list is not a JSON array")
            listed += document
            page = headers.get("X-Next-Page")
        raise _Failed(f"GitLab lists more than {MAX_PAGES} pages of repositories for {project}")

    async def _get(self, path: str) -> tuple[Any, CIMultiDictProxy[str]]:
        token = self.settings.secret.get_secret_value()
        try:
            async with self._session.get(
                self._api + path, headers={"PRIVATE-TOKEN": token}, allow_redirects=False
            ) as response:
                status = response.status
                if status == 404:
                    raise _NotFound("GitLab answered 404: " + await _message(response))
                if status in (401, 403):
                    raise _Failed(f"GitLab refused the token (HTTP {status})")
                if status != 200:
                    # Never followed: the token must not travel to wherever it points.
                    raise _Failed(f"GitLab answered HTTP {status}")
                body = await response.content.read(MAX_BODY_BYTES + 1)
                headers = response.headers
        except TimeoutError:
            raise _Failed(f"no answer within {self.settings.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise _Failed(f"cannot reach GitLab: {type(exc).__name__}") from None
        if len(body) > MAX_BODY_BYTES:
            raise _Failed("GitLab's answer is larger than 8 MiB")
        try:
            return json.loads(body), headers
        except ValueError:
            raise _Failed("GitLab's answer is not JSON") from None


async def _message(response: aiohttp.ClientResponse) -> str:
    """GitLab's `message`, such as "404 Tag Not Found", or the status alone."""
    try:
        document = json.loads(await response.content.read(4096))
    except ValueError:
        return f"HTTP {response.status}"
    message = document.get("message") if isinstance(document, dict) else None
    return f"{message}"[:120] if message else f"HTTP {response.status}"
