"""Per-image choices for data beyond plain images: foreign layers, and which referrers (signatures,
attestations, SBOMs) an image must have."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from pydantic import BeforeValidator, model_validator

from canary.schema import Model


class ForeignLayers(StrEnum):
    """What a pull does with a non-distributable (foreign) layer, which the registry never held."""

    SKIP = "skip"  # reported as skipped, with the reason; never a failure
    URLS = "urls"  # fetched from the urls the manifest gives, verified under the same blob_check


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of referrer a catalog can require by name: cosign's tag suffix for it, and the
    artifact types cosign (OCI 1.1 mode) and notation give it."""

    cosign_suffix: str
    artifact_types: frozenset[str]


KINDS = {
    "signature": Kind(
        "sig",
        frozenset(
            {
                "application/vnd.dev.cosign.artifact.sig.v1+json",
                "application/vnd.cncf.notary.signature",
            }
        ),
    ),
    "attestation": Kind(
        "att",
        frozenset({"application/vnd.dsse.envelope.v1+json", "application/vnd.in-toto+json"}),
    ),
    "sbom": Kind(
        "sbom",
        frozenset(
            {
                "application/vnd.dev.cosign.artifact.sbom.v1+json",
                "application/spdx+json",
                "text/spdx",
                "application/vnd.cyclonedx+json",
                "application/vnd.cyclonedx+xml",
            }
        ),
    ),
}
# RFC 6838 type/subtype, with the suffixes OCI media types use.
_MEDIA_TYPE_RE = re.compile(r"[A-Za-z0-9][\w!#$&^.+-]{0,126}/[A-Za-z0-9][\w!#$&^.+-]{0,126}")


def _requirements(value: object) -> object:
    if not isinstance(value, list | tuple):
        raise ValueError("require is a list such as [signature] or [application/spdx+json]")
    for item in value:
        if not isinstance(item, str) or not (item in KINDS or _MEDIA_TYPE_RE.fullmatch(item)):
            raise ValueError(
                f"{item!r} is neither {', '.join(KINDS)} nor an artifact media type "
                "such as application/spdx+json"
            )
    if len(set(value)) != len(value):
        raise ValueError("a requirement is listed more than once")
    return tuple(value)


class Referrers(Model):
    """Check an image's referrers after its pull: list them (OCI 1.1 API, tag schema, cosign's
    tags), pull and verify each, and fail the pull if a required kind is missing."""

    enabled: bool = True
    require: Annotated[tuple[str, ...], BeforeValidator(_requirements)] = ()

    @model_validator(mode="after")
    def _require_needs_enabled(self) -> Referrers:
        if self.require and not self.enabled:
            raise ValueError("require has no effect with enabled: false")
        return self


def meets(requirement: str, artifact_type: str | None, cosign_suffix: str | None) -> bool:
    """Whether a referrer of `artifact_type` (or found under cosign's tag `cosign_suffix`) is
    what `requirement` asks for."""
    kind = KINDS.get(requirement)
    if kind is None:
        return artifact_type == requirement
    if cosign_suffix is not None:
        return cosign_suffix == kind.cosign_suffix
    return artifact_type in kind.artifact_types
