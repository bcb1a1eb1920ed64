"""Process-wide start-up settings."""

from __future__ import annotations

import sys

import pytest

from canary.process import tune_allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_allocator_tuning_applies_on_glibc() -> None:
    """On glibc both malloc thresholds are accepted, so read buffers stay on the heap."""
    assert tune_allocator() is True
