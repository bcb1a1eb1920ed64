"""The status page: what it shows for a status document, how it escapes, and how it is served."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from canary.statuspage import CSP, ago, render
from canary.web import make_app

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


def stamp(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def image(repository: str, environment: str = "prod", **fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "environment": environment,
        "repository": repository,
        "tag": "v1",
        "ok": True,
        "outcome": "ok",
        "last_probe": stamp(12),
        "last_success": stamp(12),
        "published": [
            {
                "timestamp": "2023-05-01T12:00:00Z",
                "source": "config",
                "status": "ok",
                "detail": None,
            }
        ],
        "result": {"manifest": None, "platform_manifests": [], "blobs": [], "evidence": None},
        "suspect": False,
        "next_probe": stamp(-30),
    }
    document.update(fields)
    return document


BROKEN_BLOB = {
    "digest": "sha256:" + "ab" * 32,
    "kind": "config",
    "platform": "linux/amd64",
    "outcome": "blob_unknown",
    "first_outcome": "blob_unknown",
    "hop": "registry",
    "status": 404,
    "bytes": 0,
    "request_id": "req-7f3a",
    "duration_seconds": 0.01,
    "evidence": {
        "detail": "HTTP 404 BLOB_UNKNOWN: blob unknown to <registry>",
        "url": "https://registry.example.com/v2/canary/lost/blobs/sha256:abab",
        "status": 404,
        "code": "BLOB_UNKNOWN",
        "message": "blob unknown to registry",
        "request_id": "req-7f3a",
    },
}


def status(*images: dict[str, Any], environments: tuple[str, ...] = ("prod",)) -> dict[str, Any]:
    return {
        "version": "0.1.0",
        "started_at": stamp(3600),
        "ready": True,
        "environments": [{"name": name, "ready": True} for name in environments],
        "images": list(images),
        "alerts": {"alertmanagers": 0, "firing": []},
    }


def lost(**fields: Any) -> dict[str, Any]:
    return image(
        "canary/lost",
        ok=False,
        outcome="blob_unknown",
        last_success=stamp(7200),
        published=[
            {
                "timestamp": None,
                "source": "config",
                "status": "missing",
                "detail": "the config blob could not be read (blob_unknown)",
            }
        ],
        result={
            "manifest": {"digest": "sha256:" + "cd" * 32, "outcome": "ok"},
            "platform_manifests": [],
            "blobs": [BROKEN_BLOB],
            "evidence": None,
        },
        **fields,
    )


def cell(page: str, label: str) -> str:
    found = re.search(rf'<td class="cell (\w+)" data-image="{re.escape(label)}"', page)
    assert found, f"no cell for {label}"
    return found.group(1)


class TestRender:
    def test_matrix_colours_each_environment_and_image(self) -> None:
        """Each image gets a cell per environment: green when verified, loss when data is gone,
        grey before its first pull, and a dash where it is not probed."""
        page = render(
            status(
                image("canary/alpine"),
                image("canary/alpine", environment="staging", ok=None, outcome=None),
                lost(),
                environments=("prod", "staging"),
            ),
            NOW,
        )
        assert cell(page, "prod canary/alpine:v1") == "ok"
        assert cell(page, "staging canary/alpine:v1") == "none"
        assert cell(page, "prod canary/lost:v1") == "loss"
        assert page.count('<td class="cell none">–</td>') == 1  # canary/lost is not in staging
        assert "1 of 3 image pulls failing" in page
        assert "<title>FAILING · registry-canary</title>" in page

    def test_failing_image_shows_each_failed_request_and_its_dates(self) -> None:
        """Under the matrix, a failing image lists its failed blobs with outcome, hop, status and
        request id, and its published-date statuses."""
        page = render(status(image("canary/alpine"), lost()), NOW)
        section = page[page.index('<h2 id="failing">') :]
        assert "prod · canary/lost:v1" in section
        for text in ("sha256:abababababab", "blob_unknown", "(confirmed)", "registry", "404"):
            assert text in section
        assert "req-7f3a" in section
        assert 'published date (config): <span class="outcome">missing</span>' in section
        assert "missing" in section
        assert "the config blob could not be read (blob_unknown)" in section
        assert "canary/alpine" not in section
        assert "last verified pull <time" in section
        assert "2 h ago" in section

    def test_times_read_as_how_long_ago(self) -> None:
        """Probe and success times are shown relative to now, with the instant kept in the tag."""
        assert ago(stamp(12), NOW) == "12 s ago"
        assert ago(stamp(600), NOW) == "10 min ago"
        assert ago(stamp(3 * 3600), NOW) == "3 h ago"
        assert ago(stamp(3 * 86400), NOW) == "3 d ago"
        assert ago(None, NOW) == "never"
        page = render(status(image("canary/alpine")), NOW)
        assert f'<time datetime="{stamp(12)}" title="{stamp(12)}">12 s ago</time>' in page

    def test_text_from_registries_is_escaped(self) -> None:
        """Whatever a registry wrote into an error is shown as text, never as markup."""
        page = render(status(lost()), NOW)
        assert "blob unknown to &lt;registry&gt;" in page
        assert "<registry>" not in page

    def test_refreshes_itself_without_script_or_outside_assets(self) -> None:
        """The page reloads through a meta refresh, fits a phone, and loads nothing else."""
        page = render(status(image("canary/alpine")), NOW)
        assert '<meta http-equiv="refresh" content="10">' in page
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
        assert "<script" not in page
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
        assert "<link" not in page

    def test_dates_that_are_wrong_on_verified_pulls_are_listed(self) -> None:
        """A pull that verifies but shows users a default date is listed under its own heading."""
        dated = image(
            "canary/alpine",
            published=[
                {
                    "timestamp": "0001-01-01T00:00:00Z",
                    "source": "gitlab_api",
                    "status": "default",
                    "detail": "a zero date (0001-01-01T00:00:00Z)",
                }
            ],
        )
        page = render(status(dated), NOW)
        section = page[page.index('<h2 id="dates">') :]
        assert "gitlab_api" in section
        assert "default" in section
        assert "a zero date" in section
        assert "all 1 image pulls verified" in page

    def test_a_rate_limited_environment_says_until_when(self) -> None:
        """An environment backing off after a 429 says so at the top of the page."""
        document = status(image("canary/alpine"))
        document["environments"][0]["backoff_until"] = "2026-11-28T12:02:00Z"
        page = render(document, NOW)
        assert "prod asked for no requests until 2026-11-28T12:02:00Z (429 Retry-After)" in page

    def test_nothing_probed_yet_says_so(self) -> None:
        """Before the first pull finishes the page says so rather than showing green."""
        page = render(status(image("canary/alpine", ok=None, outcome=None)), NOW)
        assert "no pull has finished yet" in page
        assert '<div class="summary none"' in page


class TestServed:
    async def test_root_serves_the_page_with_a_strict_policy(self) -> None:
        """GET / answers HTML with a policy that lets nothing load or run."""
        document = status(lost())
        app = make_app(
            CollectorRegistry(),
            lambda: True,
            lambda: True,
            lambda: {"prod": True},
            lambda: document,
        )
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            response = await client.get("/")
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/html; charset=utf-8"
            assert response.headers["Content-Security-Policy"] == CSP
            assert response.headers["Cache-Control"] == "no-store"
            body = await response.text()
            assert "canary/lost" in body
            status_json = await client.get("/status")
            assert (await status_json.json())["images"][0]["repository"] == "canary/lost"
