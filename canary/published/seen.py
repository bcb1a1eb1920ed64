"""When the canary first saw each tag with its digest, optionally kept in a file across restarts.

A published date newer than that is a default: the tag existed, with that content, before it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Key = tuple[str, str, str]  # (environment, repository, tag)
# New sightings are written at most this often (and at flush), not once per tag at start-up.
SAVE_EVERY_SECONDS = 5.0


class FirstSeen:
    """One sighting per tag: a new digest starts it again. Never raises on a bad file."""

    def __init__(self, path: Path | None = None, log: Any = None) -> None:
        self.path = path
        self._log = log
        self._seen: dict[Key, tuple[str, datetime]] = {}
        self._dirty = False
        self._saved_at = float("-inf")
        if path is not None:
            self._load(path)

    def observe(self, key: Key, digest: str, now: datetime) -> datetime:
        """The first time `key` was seen with `digest`; `now` if this is it."""
        known = self._seen.get(key)
        if known is None or known[0] != digest:
            known = (digest, now)
            self._seen[key] = known
            self._dirty = True
        if self._dirty and time.monotonic() - self._saved_at >= SAVE_EVERY_SECONDS:
            self.flush()
        return known[1]

    def forget_except(self, keys: set[Key]) -> None:
        """Drop tags that left the catalog, so the file stays as small as the catalog."""
        gone = [key for key in self._seen if key not in keys]
        for key in gone:
            del self._seen[key]
        if gone:
            self._dirty = True
            self.flush()

    def _load(self, path: Path) -> None:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            for entry in document["tags"]:
                key = (entry["environment"], entry["repository"], entry["tag"])
                seen = datetime.fromisoformat(entry["first_seen"])
                if seen.tzinfo is None:
                    raise ValueError("first_seen without a time zone")
                self._seen[key] = (str(entry["digest"]), seen.astimezone(UTC))
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Losing the sightings only weakens one check; refusing to start would be worse.
            self._seen.clear()
            if self._log is not None:
                self._log.warning("state_file_unreadable", path=str(path), error=type(exc).__name__)

    def flush(self) -> None:
        """Write the sightings if any changed since the last write."""
        if self.path is None or not self._dirty:
            return
        self._dirty = False
        self._saved_at = time.monotonic()
        tags = [
            {
                "environment": environment,
                "repository": repository,
                "tag": tag,
                "digest": digest,
                "first_seen": seen.isoformat(),
            }
            for (environment, repository, tag), (digest, seen) in sorted(self._seen.items())
        ]
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            temporary.write_text(json.dumps({"version": 1, "tags": tags}, indent=1) + "\n")
            os.replace(temporary, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            if self._log is not None:
                self._log.warning("state_file_not_written", path=str(self.path), error=exc.strerror)
