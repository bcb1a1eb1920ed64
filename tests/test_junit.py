"""JUnit reports built from constructed results: valid against Jenkins' schema, and complete."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest
import xmlschema

from canary.junit import render_junit
from canary.report import render_text
from canary.results import (
    BlobKind,
    BlobResult,
    Evidence,
    Hop,
    ImageResult,
    ManifestResult,
    Outcome,
    PublishedResult,
    PublishedStatus,
)

SCHEMA_PATH = Path(__file__).parent / "schemas" / "junit-10.xsd"
MANIFEST = "sha256:" + "a" * 64
CONFIG = "sha256:" + "c" * 64
LAYER = "sha256:" + "d" * 64
OTHER_LAYER = "sha256:" + "e" * 64
STARTED = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(SCHEMA_PATH))


def validated(schema: xmlschema.XMLSchema, document: str) -> ET.Element:
    """Parse a report after asserting that the vendored XSD accepts it."""
    schema.validate(document)
    return ET.fromstring(document.encode("utf-8"))  # noqa: S314 - a report these tests made


def manifest(served: str = MANIFEST) -> ManifestResult:
    return ManifestResult(
        digest=MANIFEST, outcome=Outcome.OK, status=200, served_digest=served, request_id="m-1"
    )


def blob(
    digest: str,
    kind: BlobKind = BlobKind.LAYER,
    outcome: Outcome = Outcome.OK,
    message: str = "blob unknown to registry",
) -> BlobResult:
    evidence = None
    if outcome is not Outcome.OK:
        evidence = Evidence(
            detail=f"HTTP 404 BLOB_UNKNOWN: {message}",
            url=f"https://registry.example/v2/team/app/blobs/{digest}",
            status=404,
            code="BLOB_UNKNOWN",
            message=message,
            request_id=f"req-{digest[7:11]}",
        )
    return BlobResult(
        digest=digest,
        kind=kind,
        platform=None,
        outcome=outcome,
        hop=Hop.REGISTRY,
        status=404 if evidence else 200,
        bytes=0 if evidence else 1024,
        first_outcome=outcome,
        duration_seconds=0.01,
        request_id=evidence.request_id if evidence else None,
        evidence=evidence,
    )


def image(
    repository: str = "team/app",
    environment: str = "staging",
    blobs: tuple[BlobResult, ...] = (),
    published: tuple[PublishedResult, ...] = (),
    pinned: str | None = None,
) -> ImageResult:
    blobs = blobs or (blob(CONFIG, BlobKind.CONFIG), blob(LAYER))
    failed = [b.outcome for b in blobs if b.outcome is not Outcome.OK]
    return ImageResult(
        environment=environment,
        repository=repository,
        tag="v1",
        outcome=failed[0] if failed else Outcome.OK,
        manifests=(manifest(),),
        blobs=blobs,
        published=published,
        started_at=STARTED,
        duration_seconds=0.25,
        pinned_digest=pinned,
    )


def broken(message: str = "blob unknown to registry") -> ImageResult:
    """An image whose config and one of two layers are confirmed unknown."""
    return image(
        repository="team/broken",
        blobs=(
            blob(CONFIG, BlobKind.CONFIG, Outcome.BLOB_UNKNOWN, message),
            blob(LAYER, BlobKind.LAYER, Outcome.BLOB_UNKNOWN, message),
            blob(OTHER_LAYER),
        ),
    )


class TestValidity:
    def test_healthy_and_failed_reports_validate(self, schema: xmlschema.XMLSchema) -> None:
        """A report with passed and failed cases in two environments is valid JUnit XML."""
        results = [image(), broken(), image(environment="production")]
        root = validated(schema, render_junit(results))
        assert root.tag == "testsuites"
        assert [s.get("name") for s in root.iter("testsuite")] == ["staging", "production"]

    def test_empty_report_validates(self, schema: xmlschema.XMLSchema) -> None:
        """A probe of nothing is still a valid report with zero tests."""
        root = validated(schema, render_junit([]))
        assert (root.get("tests"), root.get("failures")) == ("0", "0")

    def test_attempts_validate_and_are_in_system_out(self, schema: xmlschema.XMLSchema) -> None:
        """The schema has no properties inside a testcase, so attempts are in system-out."""
        results = [image(), broken()]
        attempts = {("staging", "team/app", "v1"): 1, ("staging", "team/broken", "v1"): 4}
        root = validated(schema, render_junit(results, attempts))
        outs = {case.get("name"): case.findtext("system-out", "") for case in root.iter("testcase")}
        assert "attempts: 1" in outs["team/app:v1"].splitlines()
        assert "attempts: 4" in outs["team/broken:v1"].splitlines()
        assert root.find(".//testcase/properties") is None


class TestCounts:
    def test_suite_and_root_counts(self, schema: xmlschema.XMLSchema) -> None:
        """tests and failures count cases per environment and in all; errors and skipped are 0."""
        results = [image(), broken(), image(environment="production"), image(repository="x/y")]
        root = validated(schema, render_junit(results))
        assert (root.get("name"), root.get("tests"), root.get("failures"), root.get("errors")) == (
            "registry-canary",
            "4",
            "1",
            "0",
        )
        suites = {s.get("name"): s for s in root.iter("testsuite")}
        staging = suites["staging"]
        assert (staging.get("tests"), staging.get("failures"), staging.get("errors")) == (
            "3",
            "1",
            "0",
        )
        assert staging.get("skipped") == "0"
        assert staging.get("timestamp") == "2024-03-01T12:00:00"
        assert (suites["production"].get("tests"), suites["production"].get("failures")) == (
            "1",
            "0",
        )
        assert len(staging.findall("testcase")) == 3

    def test_case_names(self, schema: xmlschema.XMLSchema) -> None:
        """Each case is named repository:tag in the class registry-canary.<environment>."""
        root = validated(schema, render_junit([image(environment="eu-west")]))
        case = root.find(".//testcase")
        assert case is not None
        assert (case.get("classname"), case.get("name"), case.get("time")) == (
            "registry-canary.eu-west",
            "team/app:v1",
            "0.250",
        )
        assert case.find("failure") is None


class TestFailureEvidence:
    def test_failure_type_and_short_message(self, schema: xmlschema.XMLSchema) -> None:
        """The failure's type is the outcome and its message gives the counts on one line."""
        root = validated(schema, render_junit([broken()]))
        failure = root.find(".//testcase/failure")
        assert failure is not None
        assert failure.get("type") == "blob_unknown"
        assert failure.get("message") == "blob_unknown: 2 of 3 blobs confirmed unknown"

    def test_failure_text_carries_the_evidence(self, schema: xmlschema.XMLSchema) -> None:
        """Each failing blob's digest, kind, hop, status, code, request id and URL are there."""
        root = validated(schema, render_junit([broken()]))
        text = root.findtext(".//testcase/failure", "")
        for digest, kind in ((CONFIG, "config"), (LAYER, "layer")):
            assert f"{kind} {digest}: blob_unknown via registry" in text
            assert f"request id: req-{digest[7:11]}" in text
            assert f"url: https://registry.example/v2/team/app/blobs/{digest}" in text
        assert "HTTP 404 BLOB_UNKNOWN: blob unknown to registry" in text
        assert "confirmed on a second fetch" in text
        assert OTHER_LAYER not in text

    def test_text_report_explains_the_same_way(self) -> None:
        """The text report's explanation of a failed pull is the JUnit failure text, indented."""
        root = ET.fromstring(render_junit([broken()]).encode())  # noqa: S314 - made here
        junit_lines = root.findtext(".//testcase/failure", "").splitlines()
        text = render_text([broken()])
        assert "\n".join(f"    {line}" for line in junit_lines) in text

    def test_storage_hop_and_a_status_outside_the_detail(self, schema: xmlschema.XMLSchema) -> None:
        """A failure at storage names that hop, and a status the detail lacks is still shown."""
        corrupt = BlobResult(
            digest=LAYER,
            kind=BlobKind.LAYER,
            platform="linux/arm64",
            outcome=Outcome.DIGEST_MISMATCH,
            hop=Hop.STORAGE,
            status=200,
            bytes=1024,
            first_outcome=Outcome.DIGEST_MISMATCH,
            duration_seconds=0.1,
            request_id="s3-req-9",
            evidence=Evidence(
                detail="hashes to sha256:" + "f" * 64,
                url="https://storage.example/blobs/data",
                status=200,
                request_id="s3-req-9",
            ),
        )
        result = image(blobs=(blob(CONFIG, BlobKind.CONFIG), corrupt))
        root = validated(schema, render_junit([result]))
        failure = root.find(".//testcase/failure")
        assert failure is not None
        assert failure.get("message") == "digest_mismatch: 1 of 2 blobs confirmed digest_mismatch"
        text = failure.text or ""
        assert (
            f"layer {LAYER} (linux/arm64): digest_mismatch via storage, HTTP 200 "
            "(confirmed on a second fetch)" in text
        )
        assert "request id: s3-req-9" in text

    def test_failure_without_items_shows_the_pull_evidence(
        self, schema: xmlschema.XMLSchema
    ) -> None:
        """A pull that failed before any manifest answered explains itself with its own evidence."""
        result = ImageResult(
            environment="staging",
            repository="team/app",
            tag="v1",
            outcome=Outcome.CONNECTION_ERROR,
            manifests=(),
            blobs=(),
            published=(),
            started_at=STARTED,
            duration_seconds=1.0,
            evidence=Evidence(detail="cannot connect: Connection refused", url="https://r/v2/"),
        )
        failure = validated(schema, render_junit([result])).find(".//testcase/failure")
        assert failure is not None
        assert failure.get("message") == "connection_error: cannot connect: Connection refused"
        assert failure.text == "cannot connect: Connection refused"


class TestEscaping:
    @pytest.mark.parametrize(
        "message",
        [
            "quoted \"name\" and 'tag'",
            "<html>&nbsp;</html> & more",
            "bell\x07 null\x00 escape\x1b[31m vertical\x0b form\x0c",
            "lone surrogate \udc80 and \ufffe",
            "]]> ends a CDATA section",
        ],
    )
    def test_registry_message_stays_valid_xml(
        self, schema: xmlschema.XMLSchema, message: str
    ) -> None:
        """Whatever a registry puts in its error message, the report parses and validates."""
        root = validated(schema, render_junit([broken(message)]))
        text = root.findtext(".//testcase/failure", "")
        printable = "".join(c for c in message if c.isprintable() and c not in "\udc80\ufffe")
        assert printable.split()[0] in text
        assert not {"\x00", "\x07", "\x0b", "\x1b"} & set(text)

    def test_special_characters_round_trip(self, schema: xmlschema.XMLSchema) -> None:
        """Quotes, angle brackets and ampersands come back unchanged after parsing."""
        message = 'tag "v1" <latest> & co'
        root = validated(schema, render_junit([broken(message)]))
        assert f"HTTP 404 BLOB_UNKNOWN: {message}" in root.findtext(".//testcase/failure", "")

    def test_control_characters_in_names(self, schema: xmlschema.XMLSchema) -> None:
        """Control characters in an environment name are replaced, not written raw."""
        root = validated(schema, render_junit([image(environment="stag\x01ing")]))
        suite = root.find("testsuite")
        assert suite is not None
        assert suite.get("name") == "stag\ufffding"


class TestSystemOut:
    def test_published_problems_are_output_not_failures(self, schema: xmlschema.XMLSchema) -> None:
        """A wrong published date is reported in system-out and does not fail the case."""
        published = (
            PublishedResult(
                timestamp=datetime(2020, 1, 1, tzinfo=UTC),
                source="config",
                status=PublishedStatus.MISMATCH,
                detail="the pin says 2023-05-01T12:00:00Z",
            ),
            PublishedResult(timestamp=STARTED, source="gitlab", status=PublishedStatus.OK),
        )
        root = validated(schema, render_junit([image(published=published)]))
        assert (root.get("failures"), root.find(".//failure")) == ("0", None)
        out = root.findtext(".//testcase/system-out", "")
        assert "config: mismatch: the pin says 2023-05-01T12:00:00Z" in out
        assert "gitlab" not in out

    def test_served_and_pinned_digests(self, schema: xmlschema.XMLSchema) -> None:
        """The served digest, the pin and whether they match are in system-out."""
        pinned = "sha256:" + "9" * 64
        root = validated(schema, render_junit([image(pinned=pinned), image(repository="a/b")]))
        outs = [case.findtext("system-out", "") for case in root.iter("testcase")]
        assert f"served digest: {MANIFEST}" in outs[0]
        assert f"pinned digest: {pinned} (served matches: no)" in outs[0]
        assert f"served digest: {MANIFEST}" in outs[1]
        assert "pinned digest" not in outs[1]
