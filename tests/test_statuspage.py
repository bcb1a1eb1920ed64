"""The status page: what it shows for a status document, how it escapes, and how it is served."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from canary.budget import BlobBudget
from canary.config import Budget
from canary.consistency import differences
from canary.daemon import _budget
from canary.diagnosis import EXPLANATIONS, Kind, Signature
from canary.results import ControlResult, ControlStep, Evidence, Outcome
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
        assert (
            "<tr><td>config</td><td><code>sha256:abababababab</code></td>"
            '<td class="outcome">blob_unknown <span class="small">(confirmed)</span></td>'
            "<td>registry</td><td>404</td><td><code>req-7f3a</code></td>"
            "<td>HTTP 404 BLOB_UNKNOWN: blob unknown to &lt;registry&gt;</td></tr>"
        ) in section
        assert (
            '<li>published date (config): <span class="outcome">missing</span> — '
            "the config blob could not be read (blob_unknown)</li>"
        ) in section
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


A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def served(digest: str | None) -> dict[str, Any]:
    """An image's `result` whose top manifest came back as `digest`."""
    manifest = (
        None if digest is None else {"digest": None, "served_digest": digest, "outcome": "ok"}
    )
    return {"manifest": manifest, "platform_manifests": [], "blobs": [], "evidence": None}


def environment(
    name: str,
    diagnosis: dict[str, Any] | None = None,
    control: dict[str, Any] | None = None,
    budget: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An entry of the status document's `environments`, with the keys Daemon.status() gives."""
    return {
        "name": name,
        "ready": True,
        "backoff_until": None,
        "diagnosis": diagnosis,
        "control": control,
        "budget": budget,
    }


def full_status(images: list[dict[str, Any]], *environments: dict[str, Any]) -> dict[str, Any]:
    """A status document as Daemon.status() builds it, differences included."""
    document = status(*images)
    document["environments"] = list(environments)
    document["differences"] = differences(images)
    return document


def diagnosis(name: str, *signatures: Signature) -> dict[str, Any]:
    """The shape of Diagnoser.summary() for an environment showing `signatures`."""
    return {
        "environment": name,
        "total": 4,
        "counts": {str(kind): 1 if kind is Kind.DATA_LOSS else 0 for kind in Kind},
        "control": {"ok": True, "outcome": "ok", "age_seconds": 12.0, "stale": False},
        "signatures": [
            {"signature": str(s), "explanation": EXPLANATIONS[s]}
            for s in Signature
            if s in signatures
        ],
    }


def control(
    outcome: Outcome = Outcome.OK,
    failed_step: ControlStep | None = None,
    deleted: bool | None = True,
    repository: str = "canary/control",
    detail: str | None = None,
) -> dict[str, Any]:
    """An environment's control entry as StateSink.controls() gives it, finished 30 s ago."""
    result = ControlResult(
        environment="prod",
        repository=repository,
        tag="registry-canary-control-1795867200-0a1b2c3d",
        digest="sha256:" + "e" * 64,
        outcome=outcome,
        failed_step=failed_step,
        durations=((ControlStep.PUSH, 0.2),),
        writes=(),
        deleted=deleted,
        started_at=NOW - timedelta(seconds=31),
        evidence=None if detail is None else Evidence(detail=detail),
    )
    return {**result.to_dict(), "finished_at": stamp(30)}


SETTINGS = Budget(bytes_per_hour=3_600_000, full_verify_within="24h")


def budget(first_seen_ago: float = 60.0, size: int = 1000) -> dict[str, Any]:
    """An environment's budget entry as Daemon.status() gives it, with one layer of `size` bytes
    first seen `first_seen_ago` seconds ago and never verified."""
    first_seen = time.time() - first_seen_ago
    counted = BlobBudget(SETTINGS, hold=240, now=first_seen)
    counted.take("sha256:" + "f" * 64, size, first_seen)
    return _budget(SETTINGS, counted, 120.0)


def section(page: str, heading_id: str) -> str:
    """The page from the heading with `heading_id` to the next heading."""
    start = page.index(f'<h2 id="{heading_id}">')
    following = page.find("<h2", start + 1)
    return page[start : following if following != -1 else len(page)]


class TestDiagnoses:
    def test_each_active_signature_is_listed_with_its_explanation(self) -> None:
        """Every active signature of every environment is an item naming both, with the
        explanation, above the matrix."""
        page = render(
            full_status(
                [image("canary/alpine")],
                environment("prod", diagnosis("prod", Signature.LEGACY_DATA_UNREADABLE)),
                environment(
                    "staging",
                    diagnosis("staging", Signature.STORAGE_UNREACHABLE, Signature.AUTH_BROKEN),
                ),
            ),
            NOW,
        )
        listed = re.findall(r'<li data-signature="(\w+)"><strong>([^<]+)</strong>', page)
        assert listed == [
            ("legacy_data_unreadable", "prod: legacy_data_unreadable"),
            ("storage_unreachable", "staging: storage_unreachable"),
            ("auth_broken", "staging: auth_broken"),
        ]
        assert EXPLANATIONS[Signature.LEGACY_DATA_UNREADABLE] in page
        assert page.index('<h2 id="diagnosis">') < page.index('<table id="matrix">')

    def test_nothing_active_shows_no_diagnosis(self) -> None:
        """Without an active signature, or without a diagnosis, there is no diagnosis section."""
        page = render(
            full_status(
                [image("canary/alpine")],
                environment("prod", diagnosis("prod")),
                environment("staging"),
            ),
            NOW,
        )
        assert 'id="diagnosis"' not in page
        assert "data-signature" not in page


def disagreeing() -> list[dict[str, Any]]:
    """canary/alpine verified in prod and lost in staging; canary/busybox fine in both."""
    return [
        image("canary/alpine", result=served(A)),
        image(
            "canary/alpine",
            environment="staging",
            ok=False,
            outcome="blob_unknown",
            result=served(A),
        ),
        image("canary/busybox", result=served(B)),
        image("canary/busybox", environment="staging", result=served(B)),
    ]


class TestDifferences:
    def test_a_differing_tag_is_listed_and_linked_from_the_matrix(self) -> None:
        """A tag healthy in one environment and failing in another gets a row under "Differs
        between environments", and only its matrix row links there."""
        page = render(full_status(disagreeing(), environment("prod"), environment("staging")), NOW)
        differs = section(page, "differences")
        assert '<h2 id="differences">Differs between environments</h2>' in differs
        assert (
            '<tr data-image="canary/alpine:v1"><td><code>canary/alpine:v1</code></td>'
            "<td>prod</td><td>staging</td>"
        ) in differs
        assert "prod: ok <code>sha256:aaaaaaaaaaaa</code>" in differs
        assert "staging: blob_unknown <code>sha256:aaaaaaaaaaaa</code>" in differs
        assert "canary/busybox" not in differs
        link = ' <a class="differs" href="#differences">differs between environments</a>'
        assert page.count(link) == 1
        assert f"<code>canary/alpine:v1</code>{link}</th>" in page
        assert "<code>canary/busybox:v1</code></th>" in page

    def test_environments_that_agree_show_no_section_or_link(self) -> None:
        """When every tag agrees across environments there is neither the section nor a link."""
        images = [image("canary/busybox"), image("canary/busybox", environment="staging")]
        page = render(full_status(images, environment("prod"), environment("staging")), NOW)
        assert 'id="differences"' not in page
        assert 'class="differs"' not in page


class TestControls:
    def test_a_good_round_is_ok_and_deleted(self) -> None:
        """An environment's good control round shows its repository, ok, when, and that its image
        was deleted."""
        page = render(
            full_status([image("canary/alpine")], environment("prod", control=control())), NOW
        )
        rows = section(page, "control")
        assert (
            "<tr><td>prod</td><td><code>canary/control</code></td>"
            '<td class="ok"><span class="outcome">ok</span></td>'
        ) in rows
        assert ">30 s ago</time></td><td>deleted</td><td></td></tr>" in rows

    def test_a_failed_round_names_its_step_and_evidence(self) -> None:
        """A failed round is bad, says at which step, and shows its evidence."""
        failed = control(
            Outcome.BLOB_UNKNOWN,
            ControlStep.PULL,
            deleted=False,
            detail="HTTP 404 BLOB_UNKNOWN on the pull back",
        )
        page = render(
            full_status([image("canary/alpine")], environment("prod", control=failed)), NOW
        )
        rows = section(page, "control")
        assert '<td class="bad"><span class="outcome">blob_unknown</span> at pull</td>' in rows
        assert "<td>not deleted</td><td>HTTP 404 BLOB_UNKNOWN on the pull back</td>" in rows

    @pytest.mark.parametrize(
        ("deleted", "text"),
        [(True, "deleted"), (False, "not deleted"), (None, "deletes off")],
    )
    def test_the_clean_up_column(self, deleted: bool | None, text: str) -> None:
        """The clean-up column says whether the round's image was deleted, or deletes are off."""
        entry = environment("prod", control=control(deleted=deleted))
        page = render(full_status([image("canary/alpine")], entry), NOW)
        assert f"</time></td><td>{text}</td>" in section(page, "control")

    def test_only_environments_with_control_have_a_row(self) -> None:
        """Environments without control get no row, and no control at all means no section."""
        page = render(
            full_status(
                [image("canary/alpine")],
                environment("prod", control=control()),
                environment("staging"),
            ),
            NOW,
        )
        assert "<td>staging</td>" not in section(page, "control")
        page = render(full_status([image("canary/alpine")], environment("prod")), NOW)
        assert 'id="control"' not in page


class TestBudgets:
    def test_a_budget_that_keeps_up(self) -> None:
        """A budget on time shows its rate, what it measured and the oldest verification as ok."""
        page = render(
            full_status([image("canary/alpine")], environment("prod", budget=budget())), NOW
        )
        rows = section(page, "budget")
        assert (
            "<tr><td>prod</td><td>3.4 MiB/h</td><td>1 layers, 1000 B</td>"
            '<td class="ok">0.0 h (limit 24.0 h)</td><td>enough</td></tr>'
        ) in rows

    def test_a_shortfall_is_said_and_bad(self) -> None:
        """A budget that cannot keep up says why, and its row is bad."""
        short = budget(size=4_000_000)
        assert short["shortfall"]
        page = render(full_status([image("canary/alpine")], environment("prod", budget=short)), NOW)
        rows = section(page, "budget")
        assert '<td class="bad">' in rows
        assert "larger than bytes_per_hour (3.4 MiB) can never be downloaded in full" in rows

    def test_an_overdue_verification_is_bad(self) -> None:
        """A layer unverified for longer than full_verify_within is shown as bad, even when the
        budget would keep up."""
        overdue = budget(first_seen_ago=2 * 86400)
        page = render(
            full_status([image("canary/alpine")], environment("prod", budget=overdue)), NOW
        )
        rows = section(page, "budget")
        assert '<td class="bad">48.0 h (limit 24.0 h)</td><td>enough</td>' in rows

    def test_no_budget_no_section(self) -> None:
        """Without a budgeted environment there is no budget section."""
        page = render(full_status([image("canary/alpine")], environment("prod")), NOW)
        assert 'id="budget"' not in page


SCRIPT = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


class TestNewSectionsEscape:
    def test_repository_names_are_escaped_everywhere(self) -> None:
        """A repository name carrying markup is text in the matrix, the failures and the
        differences table."""
        images = [
            image(SCRIPT, result=served(A)),
            image(
                SCRIPT, environment="staging", ok=False, outcome="blob_unknown", result=served(B)
            ),
        ]
        page = render(full_status(images, environment("prod"), environment("staging")), NOW)
        assert "<script" not in page
        assert f'<tr data-image="{ESCAPED}:v1"><td><code>{ESCAPED}:v1</code></td>' in page
        assert f'<code>{ESCAPED}:v1</code> <a class="differs"' in page

    def test_control_text_is_escaped(self) -> None:
        """A control repository or evidence carrying markup is shown as text."""
        entry = environment(
            "prod", control=control(Outcome.DENIED, ControlStep.PUSH, None, SCRIPT, SCRIPT)
        )
        page = render(full_status([image("canary/alpine")], entry), NOW)
        rows = section(page, "control")
        assert "<script" not in page
        assert f"<td><code>{ESCAPED}</code></td>" in rows
        assert f"<td>deletes off</td><td>{ESCAPED}</td>" in rows

    def test_diagnosis_text_is_escaped(self) -> None:
        """An environment name or explanation carrying markup is shown as text."""
        entry = environment(SCRIPT, diagnosis(SCRIPT, Signature.AUTH_BROKEN))
        entry["diagnosis"]["signatures"][0]["explanation"] = SCRIPT
        page = render(full_status([image("canary/alpine", environment=SCRIPT)], entry), NOW)
        assert "<script" not in page
        assert f"<strong>{ESCAPED}: auth_broken</strong> — {ESCAPED}</li>" in page
