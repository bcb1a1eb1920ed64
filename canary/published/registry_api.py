"""The GitLab container registry's own API as a date source, through the pull's client and token.

`GET /gitlab/v1/repositories/<path>/tags/list/` lists tags with `published_at` (registry v3.85.0
and later), else `created_at` and `updated_at`, of which the later is the date. Pages are followed
through the `Link: <…>; rel="next"` header until the tag is found.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from canary.config import PublishedSource
from canary.published.judge import Observation
from canary.registry.auth import pull_scope
from canary.registry.client import RegistryClient
from canary.registry.errors import RegistryError
from canary.registry.media import parse_timestamp

SOURCE = PublishedSource.GITLAB_REGISTRY_API
PAGE_SIZE = 1000
MAX_PAGES = 50
MAX_PAGE_BYTES = 8 * 1024 * 1024
_NEXT_RE = re.compile(r'<([^>]+)>\s*;[^,]*\brel="?next"?')


async def published_at(client: RegistryClient, repository: str, tag: str) -> Observation:
    path: str | None = f"/gitlab/v1/repositories/{repository}/tags/list/?n={PAGE_SIZE}"
    for _ in range(MAX_PAGES):
        if path is None:
            return Observation(SOURCE, None, "the registry's tag list does not have the tag")
        try:
            async with client.open(
                "GET",
                path,
                scope=pull_scope(repository),
                subject="other",
                headers={"Accept": "application/json"},
                # Not a pull's request: a slow tag list must never take a pull's slot.
                limited=False,
            ) as response:
                status = response.raw.status
                if status != 200:
                    return Observation(
                        SOURCE, None, f"the registry's tag list answered HTTP {status}"
                    )
                body = await response.read_up_to(MAX_PAGE_BYTES + 1)
                link = response.raw.headers.get("Link", "")
        except RegistryError as exc:
            detail = exc.fetch.evidence.detail if exc.fetch.evidence else str(exc.fetch.outcome)
            return Observation(SOURCE, None, f"the registry's tag list: {detail}")
        if len(body) > MAX_PAGE_BYTES:
            return Observation(SOURCE, None, "a page of the registry's tag list exceeds 8 MiB")
        try:
            page = json.loads(body)
        except ValueError:
            return Observation(SOURCE, None, "the registry's tag list is not JSON")
        if not isinstance(page, list):
            return Observation(SOURCE, None, "the registry's tag list is not a JSON array")
        for entry in page:
            if isinstance(entry, dict) and entry.get("name") == tag:
                return _date(entry)
        found = _NEXT_RE.search(link)
        path = found.group(1) if found else None
    return Observation(SOURCE, None, f"the tag is not in the first {MAX_PAGES} pages")


def _date(entry: dict[str, Any]) -> Observation:
    """`published_at` if the registry gives it, else the later of `created_at`, `updated_at`."""
    if entry.get("published_at") is not None:
        return _parsed("published_at", entry["published_at"])
    dates: list[datetime] = []
    for field in ("created_at", "updated_at"):
        if entry.get(field) is not None:
            observed = _parsed(field, entry[field])
            if observed.timestamp is None:
                return observed
            dates.append(observed.timestamp)
    if not dates:
        return Observation(SOURCE, None, "the registry's tag has no published_at or created_at")
    return Observation(SOURCE, max(dates))


def _parsed(field: str, value: object) -> Observation:
    stamp = parse_timestamp(value) if isinstance(value, str) else None
    if stamp is None:
        return Observation(SOURCE, None, f"the registry's {field} is not a date: {value!r:.60}")
    return Observation(SOURCE, stamp)
