"""A fake GitLab (aiohttp) for tests of the tag "published date" sources.

It serves, over one small in-memory model (projects → container repositories → tags):

- the REST API's `GET /api/v4/projects/:id/registry/repositories` and
  `GET /api/v4/projects/:id/registry/repositories/:repository_id/tags/:tag_name`
  (GitLab `doc/api/container_registry.md`), with `PRIVATE-TOKEN` auth and GitLab's
  offset pagination headers;
- the GitLab container registry's `GET /gitlab/v1/repositories/<path>/tags/list/`
  (container-registry `docs-gitlab/api.md`), with Bearer auth and marker pagination;
- optionally, every other request forwarded to an `upstream` registry, so that the registry API
  shares an origin with a real distribution registry's `/v2/`.

Per tag and per API, a test switches the date answer among the `DateMode`s; per API it switches
faults (an error status, or a stall). Every request is recorded in `requests`.
See /work/shared/context/registry-notes.md, "Tag published date".
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import json
import math
import re
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aiohttp
from aiohttp import web

from canary.registry.media import DOCKER_LIST, DOCKER_MANIFEST, INDEXES, OCI_INDEX, OCI_MANIFEST
from tests.loopback import ThreadedServer

Api = Literal["rest", "registry"]
RequestKind = Literal["rest", "registry", "proxy", "unknown"]

DEFAULT_CREATED = datetime(2023, 5, 1, 12, 0, tzinfo=UTC)  # `canary seed`'s default too
DEFAULT_TOKEN = "glpat-fake-canary-token"
DEFAULT_REALM = "https://gitlab.example.com/jwt/auth"
DEFAULT_REGISTRY_HOST = "registry.example.com"
EPOCH_TEXT = "1970-01-01T00:00:00.000Z"
ZERO_TEXT = "0001-01-01T00:00:00Z"  # Go's zero time.Time, as some Go services serialise it
FUTURE_OFFSET = timedelta(days=365)
REST_PER_PAGE = 20
REST_MAX_PER_PAGE = 100
REGISTRY_PAGE = 100
REGISTRY_MAX_PAGE = 1000
# What 2023 Rails accepted for a tag's manifest (`lib/container_registry/client.rb`), and indexes.
MANIFEST_ACCEPT = ", ".join([DOCKER_MANIFEST, OCI_MANIFEST, DOCKER_LIST, OCI_INDEX])
FORWARD_DROPPED = frozenset({"host", "content-length", "transfer-encoding", "connection"})

_REPOSITORIES_RE = re.compile(r"^/api/v4/projects/([^/]+)/registry/repositories$")
_TAG_RE = re.compile(r"^/api/v4/projects/([^/]+)/registry/repositories/([^/]+)/tags/([^/]+)$")
_TAGS_LIST_RE = re.compile(r"^/gitlab/v1/repositories/(.+)/tags/list/$")

_SESSION = web.AppKey("fake_gitlab_session", aiohttp.ClientSession)
_RELEASE = web.AppKey("fake_gitlab_release", asyncio.Event)


class DateMode(enum.Enum):
    """How one API answers one tag's date."""

    GOOD = "good"  # the test's date (`value`), or by default the tag's own date
    NULL = "null"  # JSON null (the registry API: all of its date fields null)
    EPOCH = "epoch"  # 1970-01-01T00:00:00.000Z
    ZERO = "zero"  # 0001-01-01T00:00:00Z
    NOW = "now"  # the time of the request
    FUTURE = "future"  # the time of the request plus a year
    OTHER = "other"  # a wrong date the test gives (`value`)
    FROM_CONFIG_BLOB = "from_config_blob"  # REST only: the config blob's `created`, as in 2023


@dataclass(frozen=True, slots=True)
class Answer:
    """A date answer: the mode, and the date for GOOD (optional) and OTHER (required)."""

    mode: DateMode
    value: datetime | None = None


@dataclass(frozen=True, slots=True)
class Fault:
    """An API's fault: answer `status`, or hold each request `stall` seconds (math.inf: until
    the server closes) and then answer normally."""

    status: int | None = None
    stall: float | None = None


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as received; `path` is raw (a `%2F` stays encoded), `query` decoded."""

    method: str
    path: str
    query: dict[str, str]
    host: str
    kind: RequestKind


@dataclass
class FakeTag:
    """A tag: `created` is the image config's `created`, `pushed` when the tag was created in
    the registry, `updated` when it was last re-pointed (None: never)."""

    name: str
    digest: str
    config_digest: str | None
    created: datetime | None
    pushed: datetime
    updated: datetime | None
    media_type: str
    size_bytes: int
    answers: dict[Api, Answer] = field(default_factory=dict)


@dataclass
class FakeRepository:
    """A container repository; `published_at` False emulates a registry older than v3.85.0."""

    id: int
    path: str
    project: FakeProject
    created: datetime
    published_at: bool = True
    tags: dict[str, FakeTag] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The path below the project's; empty for the project's root repository."""
        return self.path.removeprefix(self.project.path).removeprefix("/")


@dataclass
class FakeProject:
    id: int
    path: str
    repositories: dict[str, FakeRepository] = field(default_factory=dict)


@dataclass
class _ConfigFetch:
    """What 2023 Rails read from the registry for a tag: manifest digest, config digest, the
    config's `created` (None when absent, unparsable, or the blob could not be fetched)."""

    digest: str
    config_digest: str | None
    created: datetime | None
    total_size: int | None


def fake_digest(*parts: str) -> str:
    return "sha256:" + hashlib.sha256("/".join(parts).encode()).hexdigest()


def rest_time(moment: datetime) -> str:
    """GitLab REST's rendering: `2019-01-06T16:49:51.272+00:00`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def registry_time(moment: datetime) -> str:
    """The registry API's rendering: `2022-06-07T12:10:12.412Z`."""
    return rest_time(moment).replace("+00:00", "Z")


def rest_error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def registry_error(
    status: int,
    code: str,
    message: str,
    detail: object = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"errors": [{"code": code, "message": message, "detail": detail}]}
    return web.json_response(body, status=status, headers=headers)


class FakeGitLab:
    """The model, the switches and the request log; `app()` serves them.

    `token` is the accepted PRIVATE-TOKEN (None: the REST API is open). The registry API wants a
    Bearer token unless `registry_auth` is False; any non-empty one, or with `registry_tokens`
    one of those. `registry_url` is where FROM_CONFIG_BLOB reads manifests and config blobs
    (default: `upstream`). `upstream`, when set, receives every request outside the APIs.
    `registry_host` is the host in REST `location`s (default: `registry_url`'s, or
    registry.example.com).
    """

    def __init__(
        self,
        *,
        token: str | None = DEFAULT_TOKEN,
        registry_auth: bool = True,
        registry_tokens: set[str] | None = None,
        realm: str = DEFAULT_REALM,
        registry_url: str | None = None,
        upstream: str | None = None,
        registry_host: str | None = None,
    ) -> None:
        self.token = token
        self.registry_auth = registry_auth
        self.registry_tokens = registry_tokens
        self.realm = realm
        self.registry_url = registry_url.rstrip("/") if registry_url else None
        self.upstream = upstream.rstrip("/") if upstream else None
        self._registry_host = registry_host
        self.projects: dict[str, FakeProject] = {}
        self.faults: dict[Api, Fault] = {}
        self.requests: list[RecordedRequest] = []
        self.stalled = threading.Event()  # set when a request starts stalling
        self.stalled_count = 0
        self._next_project_id = 1
        self._next_repository_id = 1001  # apart from project ids, so that a mix-up shows

    # --- the model ----------------------------------------------------------------------------

    @property
    def registry_host(self) -> str:
        if self._registry_host is not None:
            return self._registry_host
        source = self.registry_url or self.upstream
        return urllib.parse.urlsplit(source).netloc if source else DEFAULT_REGISTRY_HOST

    def add_project(self, path: str) -> int:
        """Add a project at full path `path` (e.g. `group/project`); its id."""
        if path in self.projects:
            raise ValueError(f"project {path!r} exists")
        project = FakeProject(self._next_project_id, path)
        self._next_project_id += 1
        self.projects[path] = project
        return project.id

    def add_repository(
        self,
        project_path: str,
        repository_path: str,
        *,
        created: datetime = DEFAULT_CREATED,
        published_at: bool = True,
    ) -> int:
        """Add a container repository (the project's root one when `repository_path` is the
        project's path), adding the project if need be; its id."""
        if project_path not in self.projects:
            self.add_project(project_path)
        project = self.projects[project_path]
        if repository_path != project_path and not repository_path.startswith(project_path + "/"):
            raise ValueError(f"{repository_path!r} is not under project {project_path!r}")
        if self._find_repository(repository_path) is not None:
            raise ValueError(f"repository {repository_path!r} exists")
        repository = FakeRepository(
            self._next_repository_id, repository_path, project, created, published_at
        )
        self._next_repository_id += 1
        project.repositories[repository_path] = repository
        return repository.id

    def add_tag(
        self,
        repository_path: str,
        tag: str,
        *,
        digest: str | None = None,
        config_digest: str | None = None,
        created: datetime | None = DEFAULT_CREATED,
        pushed: datetime | None = None,
        updated: datetime | None = None,
        media_type: str = OCI_MANIFEST,
        size_bytes: int = 4096,
    ) -> FakeTag:
        """Tag `repository_path` (which must exist). Digests default to fake, stable ones (no
        config digest for an index); `pushed` defaults to `created`."""
        repository = self.repository(repository_path)
        if config_digest is None and media_type not in INDEXES:
            config_digest = fake_digest(repository_path, tag, "config")
        fake = FakeTag(
            name=tag,
            digest=digest or fake_digest(repository_path, tag, "manifest"),
            config_digest=config_digest,
            created=created,
            pushed=pushed or created or DEFAULT_CREATED,
            updated=updated,
            media_type=media_type,
            size_bytes=size_bytes,
        )
        repository.tags[tag] = fake
        return fake

    def project(self, key: str | int) -> FakeProject:
        """A project by full path or id; KeyError if there is none."""
        found = self._find_project(key)
        if found is None:
            raise KeyError(f"no project {key!r}")
        return found

    def repository(self, path: str) -> FakeRepository:
        """A repository by full path; KeyError if there is none."""
        found = self._find_repository(path)
        if found is None:
            raise KeyError(f"no repository {path!r}")
        return found

    def tag(self, repository_path: str, tag: str) -> FakeTag:
        return self.repository(repository_path).tags[tag]

    def _find_project(self, key: str | int) -> FakeProject | None:
        if isinstance(key, int):
            return next((p for p in self.projects.values() if p.id == key), None)
        return self.projects.get(key)

    def _find_repository(self, path: str) -> FakeRepository | None:
        for project in self.projects.values():
            if path in project.repositories:
                return project.repositories[path]
        return None

    # --- switches -----------------------------------------------------------------------------

    def set_answer(
        self,
        repository_path: str,
        tag: str,
        api: Api,
        mode: DateMode,
        value: datetime | None = None,
    ) -> None:
        """From now on, `api` answers `mode` for the tag's date; `value` is the date of GOOD
        (default: the tag's own) and OTHER (required), and not allowed for other modes."""
        if mode is DateMode.OTHER and value is None:
            raise ValueError("OTHER needs the wrong date as `value`")
        if value is not None and mode not in (DateMode.GOOD, DateMode.OTHER):
            raise ValueError(f"{mode.name} takes no value")
        if mode is DateMode.FROM_CONFIG_BLOB:
            if api != "rest":
                raise ValueError("FROM_CONFIG_BLOB is how the REST API answered; not the registry")
            if self.registry_source is None:
                raise ValueError("FROM_CONFIG_BLOB needs `registry_url` or `upstream`")
        self.tag(repository_path, tag).answers[api] = Answer(mode, value)

    def fail(self, api: Api, status: int | None = None, *, stall: float | None = None) -> None:
        """Make `api` answer `status` to every request, or hold each `stall` seconds
        (math.inf: until the server closes) before answering normally."""
        if (status is None) == (stall is None):
            raise ValueError("give exactly one of `status` and `stall`")
        self.faults[api] = Fault(status, stall)

    def heal(self, api: Api | None = None) -> None:
        """Clear `api`'s fault, or every fault (requests already stalled stay stalled)."""
        if api is None:
            self.faults.clear()
        else:
            self.faults.pop(api, None)

    @property
    def registry_source(self) -> str | None:
        return self.registry_url or self.upstream

    def count(self, path: str, method: str = "GET") -> int:
        """How many `method` requests arrived for raw `path` (query excluded)."""
        return sum(1 for r in self.requests if r.path == path and r.method == method)

    # --- serving ------------------------------------------------------------------------------

    def app(self, *, rest: bool = True, registry: bool = True) -> web.Application:
        """An application serving the REST API (`rest`) and/or the registry API and any proxying
        (`registry`), so that one model can back a GitLab host and a registry host apart."""
        app = web.Application()
        self.install(app, rest=rest, registry=registry)
        return app

    def install(self, app: web.Application, *, rest: bool = True, registry: bool = True) -> None:
        """Route every request of `app` here, as `app()` does (for `FakeGitLabServer`)."""

        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._handle(request, rest=rest, registry=registry)

        async def startup(app: web.Application) -> None:
            app[_RELEASE] = asyncio.Event()
            app[_SESSION] = aiohttp.ClientSession(
                auto_decompress=False, timeout=aiohttp.ClientTimeout(total=30)
            )

        async def shutdown(app: web.Application) -> None:
            app[_RELEASE].set()  # stalled handlers answer now rather than hold the cleanup

        async def cleanup(app: web.Application) -> None:
            await app[_SESSION].close()

        app.on_startup.append(startup)
        app.on_shutdown.append(shutdown)
        app.on_cleanup.append(cleanup)
        app.router.add_route("*", "/{tail:.*}", handle)

    async def _handle(
        self, request: web.Request, *, rest: bool, registry: bool
    ) -> web.StreamResponse:
        raw_path = request.rel_url.raw_path
        kind: RequestKind = "unknown"
        if rest and raw_path.startswith("/api/v4/"):
            kind = "rest"
        elif registry and raw_path.startswith("/gitlab/v1/"):
            kind = "registry"
        elif registry and self.upstream is not None:
            kind = "proxy"
        self.requests.append(
            RecordedRequest(request.method, raw_path, dict(request.query), request.host, kind)
        )
        if kind == "proxy":
            return await self._forward(request)
        if kind == "unknown":
            return web.Response(status=404, text="404 page not found\n")
        fault = self.faults.get(kind)
        if fault is not None and fault.status is not None:
            return _fault_answer(kind, fault.status)
        if fault is not None and fault.stall is not None:
            self.stalled_count += 1
            self.stalled.set()
            release = request.app[_RELEASE]
            timeout = None if math.isinf(fault.stall) else fault.stall
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release.wait(), timeout)
            if release.is_set():  # the server is closing
                return web.Response(status=503)
        if kind == "rest":
            return await self._rest(request, raw_path)
        return self._registry(request, raw_path)

    # --- REST API -----------------------------------------------------------------------------

    async def _rest(self, request: web.Request, raw_path: str) -> web.Response:
        if self.token is not None and request.headers.get("PRIVATE-TOKEN") != self.token:
            return rest_error(401, "401 Unauthorized")
        if request.method != "GET":
            return web.json_response({"error": "405 Not Allowed"}, status=405)
        if match := _REPOSITORIES_RE.match(raw_path):
            project = self._project_of(match.group(1))
            if project is None:
                return rest_error(404, "404 Project Not Found")
            return self._rest_repositories(request, raw_path, project)
        if match := _TAG_RE.match(raw_path):
            project = self._project_of(match.group(1))
            if project is None:
                return rest_error(404, "404 Project Not Found")
            repository_id = match.group(2)
            repository = next(
                (r for r in project.repositories.values() if str(r.id) == repository_id), None
            )
            if repository is None:
                return rest_error(404, "404 Repository Not Found")
            tag = repository.tags.get(urllib.parse.unquote(match.group(3)))
            if tag is None:
                return rest_error(404, "404 Tag Not Found")
            return await self._rest_tag(request, repository, tag)
        return web.json_response({"error": "404 Not Found"}, status=404)

    def _project_of(self, segment: str) -> FakeProject | None:
        """`:id` is a numeric id or the URL-encoded full path (its slashes as %2F)."""
        if segment.isdigit():
            return self._find_project(int(segment))
        return self._find_project(urllib.parse.unquote(segment))

    def _rest_repositories(
        self, request: web.Request, raw_path: str, project: FakeProject
    ) -> web.Response:
        try:
            page = max(1, int(request.query.get("page", "1")))
        except ValueError:
            return web.json_response({"error": "page is invalid"}, status=400)
        try:
            per_page = int(request.query.get("per_page", str(REST_PER_PAGE)))
        except ValueError:
            return web.json_response({"error": "per_page is invalid"}, status=400)
        per_page = REST_PER_PAGE if per_page < 1 else min(per_page, REST_MAX_PER_PAGE)
        repositories = sorted(project.repositories.values(), key=lambda r: r.id)
        total = len(repositories)
        total_pages = max(1, math.ceil(total / per_page))
        chosen = repositories[(page - 1) * per_page : page * per_page]
        body = [
            {
                "id": r.id,
                "name": r.name,
                "path": r.path,
                "project_id": project.id,
                "location": f"{self.registry_host}/{r.path}",
                "created_at": registry_time(r.created),
                "cleanup_policy_started_at": None,
                "status": None,
            }
            for r in chosen
        ]
        headers = {
            "X-Page": str(page),
            "X-Per-Page": str(per_page),
            "X-Next-Page": str(page + 1) if page < total_pages else "",
            "X-Prev-Page": str(page - 1) if page > 1 else "",
            "X-Total": str(total),
            "X-Total-Pages": str(total_pages),
        }
        kept = [(k, v) for k, v in request.query.items() if k not in ("page", "per_page")]

        def link(target: int, rel: str) -> str:
            query = urllib.parse.urlencode([*kept, ("page", target), ("per_page", per_page)])
            return f'<{request.scheme}://{request.host}{raw_path}?{query}>; rel="{rel}"'

        links = []
        if page > 1:
            links.append(link(page - 1, "prev"))
        if page < total_pages:
            links.append(link(page + 1, "next"))
        links += [link(1, "first"), link(total_pages, "last")]
        headers["Link"] = ", ".join(links)
        return web.json_response(body, headers=headers)

    async def _rest_tag(
        self, request: web.Request, repository: FakeRepository, tag: FakeTag
    ) -> web.Response:
        answer = tag.answers.get("rest", Answer(DateMode.GOOD))
        digest, config_digest, total_size = tag.digest, tag.config_digest, tag.size_bytes
        created: str | None
        if answer.mode is DateMode.FROM_CONFIG_BLOB:
            fetched = await self._fetch_config(request.app[_SESSION], repository.path, tag.name)
            if fetched is None:  # Rails: no manifest, so `tag.valid?` is false
                return rest_error(404, "404 Tag Not Found")
            digest, config_digest = fetched.digest, fetched.config_digest
            total_size = fetched.total_size if fetched.total_size is not None else total_size
            created = rest_time(fetched.created) if fetched.created is not None else None
        else:
            created = _render(answer, tag.created, rest_time)
        revision = config_digest.partition(":")[2] if config_digest else None
        body = {
            "name": tag.name,
            "path": f"{repository.path}:{tag.name}",
            "location": f"{self.registry_host}/{repository.path}:{tag.name}",
            "revision": revision,
            "short_revision": revision[:9] if revision else None,
            "digest": digest,
            "created_at": created,
            "total_size": total_size,
        }
        return web.json_response(body)

    async def _fetch_config(
        self, session: aiohttp.ClientSession, repository: str, tag: str
    ) -> _ConfigFetch | None:
        """Read the tag as 2023 Rails did (`lib/container_registry/tag.rb`): the manifest, then
        the config blob, anonymously; None when there is no manifest to read."""
        base = self.registry_source
        assert base is not None
        try:
            async with session.get(
                f"{base}/v2/{repository}/manifests/{tag}",
                headers={"Accept": MANIFEST_ACCEPT},
                allow_redirects=False,
            ) as response:
                if response.status != 200:
                    return None
                body = await response.read()
                digest = response.headers.get("Docker-Content-Digest") or (
                    "sha256:" + hashlib.sha256(body).hexdigest()
                )
            manifest = json.loads(body)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        config = manifest.get("config") if isinstance(manifest, dict) else None
        if not isinstance(config, dict) or not isinstance(config.get("digest"), str):
            return _ConfigFetch(digest, None, None, None)  # an index: no config, no date
        layers = manifest.get("layers")
        total_size = (
            sum(int(layer.get("size", 0)) for layer in layers if isinstance(layer, dict))
            if isinstance(layers, list)
            else None
        )
        config_digest: str = config["digest"]
        return _ConfigFetch(
            digest,
            config_digest,
            await self._config_created(session, base, repository, config_digest),
            total_size,
        )

    @staticmethod
    async def _config_created(
        session: aiohttp.ClientSession, base: str, repository: str, config_digest: str
    ) -> datetime | None:
        """The config blob's `created`; None if the blob cannot be fetched (404 BLOB_UNKNOWN in
        the incident), is not JSON, or has no parsable `created`."""
        try:
            async with session.get(f"{base}/v2/{repository}/blobs/{config_digest}") as response:
                if response.status != 200:
                    return None
                document: Any = json.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        created = document.get("created") if isinstance(document, dict) else None
        if not isinstance(created, str):
            return None
        try:
            moment = datetime.fromisoformat(created)
        except ValueError:
            return None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

    # --- registry API -------------------------------------------------------------------------

    def _registry(self, request: web.Request, raw_path: str) -> web.Response:
        match = _TAGS_LIST_RE.match(raw_path)
        if match is None:
            return web.Response(status=404, text="404 page not found\n")
        path = urllib.parse.unquote(match.group(1))
        refused = self._registry_refusal(request, path)
        if refused is not None:
            return refused
        if request.method != "GET":
            return registry_error(405, "UNSUPPORTED", "The operation is unsupported.")
        repository = self._find_repository(path)
        if repository is None:
            return registry_error(
                404, "NAME_UNKNOWN", "repository name not known to registry", {"name": path}
            )
        return self._registry_tags(request, raw_path, repository)

    def _registry_refusal(self, request: web.Request, path: str) -> web.Response | None:
        if not self.registry_auth:
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        challenge = (
            f'Bearer realm="{self.realm}",service="container_registry",'
            f'scope="repository:{path}:pull"'
        )
        if scheme.lower() == "bearer" and token.strip():
            if self.registry_tokens is None or token.strip() in self.registry_tokens:
                return None
            challenge += ',error="invalid_token"'
        return registry_error(
            401,
            "UNAUTHORIZED",
            "authentication required",
            headers={"WWW-Authenticate": challenge},
        )

    def _registry_tags(
        self, request: web.Request, raw_path: str, repository: FakeRepository
    ) -> web.Response:
        query = request.query
        try:
            size = int(query.get("n", str(REGISTRY_PAGE)))
        except ValueError:
            return registry_error(
                400,
                "INVALID_QUERY_PARAMETER_TYPE",
                "the value of a query parameter is of an invalid type",
                {"parameter": "n", "value": query.get("n"), "types": ["int"]},
            )
        if not 1 <= size <= REGISTRY_MAX_PAGE:
            return _invalid_value("n", query.get("n"))
        last, before = query.get("last"), query.get("before")
        if last is not None and before is not None:
            return _invalid_value("before", before)
        names = sorted(repository.tags)
        if "name_exact" in query:
            chosen = [n for n in names if n == query["name_exact"]]
            return web.json_response(
                [self._registry_tag(repository, repository.tags[n]) for n in chosen]
            )
        if "name" in query:
            names = [n for n in names if query["name"] in n]
        if before is not None:
            end = sum(1 for n in names if n < before)
            start = max(0, end - size)
        else:
            start = sum(1 for n in names if n <= last) if last is not None else 0
            end = min(len(names), start + size)
        chosen = names[start:end]
        kept = [(k, v) for k, v in query.items() if k not in ("n", "last", "before")]

        def link(marker: str, value: str, rel: str) -> str:
            params = urllib.parse.urlencode([*kept, ("n", size), (marker, value)])
            return f'<{request.scheme}://{request.host}{raw_path}?{params}>; rel="{rel}"'

        # As documented: a Link only while more remain in the direction of travel; a previous
        # link besides once a marker has been followed.
        links: list[str] = []
        if chosen and before is None and end < len(names):
            if last is not None and start > 0:
                links.append(link("before", chosen[0], "previous"))
            links.append(link("last", chosen[-1], "next"))
        elif chosen and before is not None and start > 0:
            links.append(link("before", chosen[0], "previous"))
            if end < len(names):
                links.append(link("last", chosen[-1], "next"))
        headers = {"Link": ", ".join(links)} if links else None
        body = [self._registry_tag(repository, repository.tags[n]) for n in chosen]
        return web.json_response(body, headers=headers)

    @staticmethod
    def _registry_tag(repository: FakeRepository, tag: FakeTag) -> dict[str, object]:
        """One tag's details. By default the dates are the tag's own (`updated_at` only once
        re-pointed, `published_at` the later); any other answer renders in every date field
        present, and NULL makes all three null."""
        item: dict[str, object] = {"name": tag.name, "digest": tag.digest}
        if tag.config_digest is not None:
            item["config_digest"] = tag.config_digest
        item["media_type"] = tag.media_type
        item["size_bytes"] = tag.size_bytes
        answer = tag.answers.get("registry", Answer(DateMode.GOOD))
        dates: dict[str, str | None]
        if answer.mode is DateMode.NULL:
            dates = {"created_at": None, "updated_at": None, "published_at": None}
        elif answer.mode is DateMode.GOOD and answer.value is None:
            dates = {"created_at": registry_time(tag.pushed)}
            if tag.updated is not None:
                dates["updated_at"] = registry_time(tag.updated)
            dates["published_at"] = registry_time(max(tag.pushed, tag.updated or tag.pushed))
        else:
            text = _render(answer, tag.pushed, registry_time)
            dates = {"created_at": text}
            if tag.updated is not None:
                dates["updated_at"] = text
            dates["published_at"] = text
        if not repository.published_at:
            dates.pop("published_at")
        item.update(dates)
        return item

    # --- proxy --------------------------------------------------------------------------------

    async def _forward(self, request: web.Request) -> web.Response:
        """Forward as is to `upstream` (redirects are passed back, not followed)."""
        assert self.upstream is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with request.app[_SESSION].request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as upstream:
            body = await upstream.read()
            return web.Response(
                status=upstream.status,
                body=body,
                headers={
                    k: v for k, v in upstream.headers.items() if k.lower() not in FORWARD_DROPPED
                },
            )


def _render(
    answer: Answer, own: datetime | None, formatter: Callable[[datetime], str]
) -> str | None:
    """The date text of a non-FROM_CONFIG_BLOB `answer`; `own` is the tag's date for GOOD."""
    now = datetime.now(UTC)
    match answer.mode:
        case DateMode.GOOD:
            moment = answer.value or own
            return formatter(moment) if moment is not None else None
        case DateMode.OTHER:
            assert answer.value is not None
            return formatter(answer.value)
        case DateMode.NULL:
            return None
        case DateMode.EPOCH:
            return EPOCH_TEXT
        case DateMode.ZERO:
            return ZERO_TEXT
        case DateMode.NOW:
            return formatter(now)
        case DateMode.FUTURE:
            return formatter(now + FUTURE_OFFSET)
        case DateMode.FROM_CONFIG_BLOB:
            raise AssertionError("FROM_CONFIG_BLOB is fetched, not rendered")


def _invalid_value(parameter: str, value: str | None) -> web.Response:
    return registry_error(
        400,
        "INVALID_QUERY_PARAMETER_VALUE",
        "the value of a query parameter is invalid",
        {"parameter": parameter, "value": value},
    )


def _fault_answer(api: Api, status: int) -> web.Response:
    if api == "rest":
        reasons = {404: "404 Not Found", 500: "500 Internal Server Error"}
        return rest_error(status, reasons.get(status, f"{status} Error"))
    if status == 404:
        return registry_error(404, "NAME_UNKNOWN", "repository name not known to registry")
    code = {401: "UNAUTHORIZED", 403: "DENIED", 429: "TOOMANYREQUESTS", 503: "UNAVAILABLE"}
    return registry_error(status, code.get(status, "UNKNOWN"), "unknown error")


class FakeGitLabServer(ThreadedServer):
    """`fake` served on a loopback port of its own thread, for subprocess tests; `url` is its
    base. `rest` and `registry` choose what it serves, as in `FakeGitLab.app`."""

    def __init__(
        self,
        fake: FakeGitLab,
        *,
        rest: bool = True,
        registry: bool = True,
        name: str = "fake gitlab",
    ) -> None:
        super().__init__(name)
        self.fake = fake
        self.rest = rest
        self.registry = registry

    def _add_routes(self, app: web.Application) -> None:
        self.fake.install(app, rest=self.rest, registry=self.registry)

    def __enter__(self) -> FakeGitLabServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
