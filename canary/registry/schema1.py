"""Docker image manifest schema 1: the payload its digest is taken over, its layers, and the image
config embedded in its history."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
UNSIGNED = "application/vnd.docker.distribution.manifest.v1+json"
MEDIA_TYPES = frozenset({SIGNED, UNSIGNED})
# registry.access.redhat.com served schema 1 as text/plain; containerd reads it as schema 1.
PLAIN_TEXT = "text/plain"
# Schema 1 names no layer media type; containerd's converter calls every layer this.
LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


class Schema1Error(ValueError):
    """A schema 1 manifest whose signature block cannot be read."""


def _base64url(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise Schema1Error(f"{what} is not a string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise Schema1Error(f"{what} is not base64url") from None


def payload(body: bytes) -> bytes:
    """The bytes a schema 1 manifest's digest is taken over.

    A signed manifest (libtrust's "pretty" JWS) is the signed JSON with a `signatures` member
    spliced in before its last bytes; the first signature's protected header says how long the
    signed part is (`formatLength`) and what followed it (`formatTail`). The digest registries
    and runtimes give the manifest (distribution's `SignedManifest.Canonical`, containerd's
    `stripSignature`) is that of the signed part plus the tail. An unsigned manifest is its own
    payload.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise Schema1Error("the manifest is not JSON") from None
    if not isinstance(document, dict):
        raise Schema1Error("the manifest is not a JSON object")
    signatures = document.get("signatures")
    if signatures is None:
        return body
    if not isinstance(signatures, list) or not signatures or not isinstance(signatures[0], dict):
        raise Schema1Error("`signatures` is not a list of signatures")
    try:
        protected = json.loads(_base64url(signatures[0].get("protected"), "`protected`"))
    except (ValueError, RecursionError):
        raise Schema1Error("the protected header is not JSON") from None
    if not isinstance(protected, dict):
        raise Schema1Error("the protected header is not a JSON object")
    length = protected.get("formatLength")
    if not isinstance(length, int) or isinstance(length, bool) or not 0 < length <= len(body):
        raise Schema1Error("formatLength does not fit the manifest")
    return body[:length] + _base64url(protected.get("formatTail"), "formatTail")


def is_empty_layer(compatibility: dict[str, Any]) -> bool:
    """Whether a history entry says its layer is empty: `throwaway`, else a `Size` of 0; with
    neither, it cannot tell and the layer counts as not empty (containerd's `isEmptyLayer`)."""
    throwaway = compatibility.get("throwaway")
    if isinstance(throwaway, bool):
        return throwaway
    size = compatibility.get("Size")
    return isinstance(size, int) and not isinstance(size, bool) and size == 0


def may_be_schema1(body: bytes, content_type: str | None) -> bool:
    """Whether the digest of `body` may have to be taken over its payload: the server says
    schema 1, or a body of another declared type carries a signature block."""
    declared = (content_type or "").split(";")[0].strip()
    return declared in MEDIA_TYPES or declared == PLAIN_TEXT or b'"signatures"' in body
