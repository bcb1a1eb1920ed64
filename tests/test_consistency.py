"""Comparing environments: which catalog tags are healthy in one environment and failing in
another, or serve different manifests, from the image entries of /status."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from canary.consistency import differences
from canary.results import ImageResult, ManifestResult, Outcome
from canary.sinks.state import StateSink
from tests.conftest import to_config

STARTED = datetime(2026, 1, 1, tzinfo=UTC)
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def pull(
    environment: str,
    outcome: Outcome = Outcome.OK,
    served: str | None = A,
    repository: str = "canary/a",
) -> ImageResult:
    """A pull whose top manifest arrived as `served` (None: no manifest body came back)."""
    manifest = (
        ManifestResult(None, Outcome.UNAVAILABLE, 503)
        if served is None
        else ManifestResult(None, Outcome.OK, 200, served_digest=served)
    )
    return ImageResult(
        environment=environment,
        repository=repository,
        tag="v1",
        outcome=outcome,
        manifests=(manifest,),
        blobs=(),
        published=(),
        started_at=STARTED,
        duration_seconds=0.1,
    )


def images(
    *pulls: ImageResult,
    environments: tuple[str, ...] = ("prod", "staging"),
    catalog: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The /status image entries after `pulls`, as the state sink makes them."""
    document = {
        "environments": [
            {"name": name, "url": f"http://127.0.0.1:{5000 + i}"}
            for i, name in enumerate(environments)
        ],
        "images": catalog or [{"repository": "canary/a", "tag": "v1"}],
    }
    state = StateSink()
    state.track(list(to_config(document).targets()))
    for pulled in pulls:
        state.consume(pulled)
    return state.snapshot()


class TestDifferences:
    def test_healthy_in_one_failing_in_another(self) -> None:
        """A tag that verifies in one environment and fails in another is listed for health, with
        each environment's outcome and served manifest."""
        found = differences(
            images(pull("prod"), pull("staging", Outcome.BLOB_UNKNOWN)),
        )
        assert found == [
            {
                "repository": "canary/a",
                "tag": "v1",
                "reasons": ["health"],
                "healthy_in": ["prod"],
                "failing_in": ["staging"],
                "outcomes": {"prod": "ok", "staging": "blob_unknown"},
                "served_digests": {"prod": A, "staging": A},
            }
        ]

    def test_different_manifests_for_the_same_tag(self) -> None:
        """A tag that verifies everywhere but serves another manifest in one environment is
        listed for its digest."""
        [found] = differences(images(pull("prod"), pull("staging", served=B)))
        assert found["reasons"] == ["digest"]
        assert found["healthy_in"] == ["prod", "staging"]
        assert found["failing_in"] == []
        assert found["served_digests"] == {"prod": A, "staging": B}

    def test_health_and_digest_both(self) -> None:
        """A tag failing in one environment on another manifest is listed for both reasons."""
        [found] = differences(
            images(pull("prod"), pull("staging", Outcome.DIGEST_MISMATCH, served=B))
        )
        assert found["reasons"] == ["health", "digest"]
        assert found["failing_in"] == ["staging"]

    def test_environments_that_agree_are_not_listed(self) -> None:
        """Verified everywhere on one manifest, or failing everywhere on it, is no difference."""
        assert differences(images(pull("prod"), pull("staging"))) == []
        failing = images(
            pull("prod", Outcome.BLOB_UNKNOWN), pull("staging", Outcome.UNAVAILABLE, served=None)
        )
        assert differences(failing) == []

    def test_a_tag_in_one_environment_is_never_listed(self) -> None:
        """A tag the catalog probes in one environment only has nothing to compare with."""
        catalog = [{"repository": "canary/a", "tag": "v1", "environments": ["staging"]}]
        found = images(pull("staging", Outcome.BLOB_UNKNOWN, served=B), catalog=catalog)
        assert len(found) == 1
        assert differences(found) == []

    def test_unprobed_environments_are_left_out(self) -> None:
        """An environment that has not pulled the tag yet neither makes nor joins a difference."""
        environments = ("dev", "prod", "staging")
        only_one = images(pull("prod", Outcome.BLOB_UNKNOWN), environments=environments)
        assert differences(only_one) == []
        [found] = differences(
            images(
                pull("prod"),
                pull("staging", Outcome.BLOB_UNKNOWN, served=B),
                environments=environments,
            )
        )
        assert found["healthy_in"] == ["prod"]
        assert found["failing_in"] == ["staging"]
        assert set(found["outcomes"]) == {"prod", "staging"}
        assert set(found["served_digests"]) == {"prod", "staging"}

    def test_an_unknown_served_digest_is_no_digest_difference(self) -> None:
        """A pull that got no manifest body says nothing about which manifest is served."""
        [found] = differences(images(pull("prod"), pull("staging", Outcome.UNAVAILABLE, None)))
        assert found["reasons"] == ["health"]
        assert found["served_digests"] == {"prod": A, "staging": None}

    def test_environment_lists_are_sorted(self) -> None:
        """Healthy and failing environments are listed by name, not in catalog order."""
        environments = ("zeta", "alpha", "mid", "beta")
        [found] = differences(
            images(
                pull("zeta"),
                pull("alpha"),
                pull("mid", Outcome.BLOB_UNKNOWN),
                pull("beta", Outcome.TIMEOUT, served=None),
                environments=environments,
            )
        )
        assert found["healthy_in"] == ["alpha", "zeta"]
        assert found["failing_in"] == ["beta", "mid"]

    def test_each_tag_is_judged_on_its_own(self) -> None:
        """Only the tags whose environments disagree are listed, in catalog order."""
        catalog = [
            {"repository": "canary/a", "tag": "v1"},
            {"repository": "canary/b", "tag": "v1"},
            {"repository": "canary/c", "tag": "v1"},
        ]
        found = differences(
            images(
                pull("prod", repository="canary/a"),
                pull("staging", repository="canary/a"),
                pull("prod", repository="canary/b", served=B),
                pull("staging", repository="canary/b"),
                pull("prod", repository="canary/c"),
                pull("staging", Outcome.DENIED, served=None, repository="canary/c"),
                catalog=catalog,
            )
        )
        assert [(f["repository"], f["reasons"]) for f in found] == [
            ("canary/b", ["digest"]),
            ("canary/c", ["health"]),
        ]
