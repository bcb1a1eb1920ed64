"""Splits a catalog across replicas: each keeps the entries whose stable hash falls in its shard."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

Key = tuple[str, str, str]  # (environment, repository, tag)
_TRAILING_NUMBER = re.compile(r"-(\d+)$")


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `index` of `count`; N replicas with indexes 0..N-1 cover every entry exactly once."""

    index: int
    count: int

    def owns(self, key: Key) -> bool:
        # sha256, not hash(): the same entry lands in the same shard in every process, always.
        digest = hashlib.sha256("\0".join(key).encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str, hostname: str = "") -> Shard:
    """INDEX/COUNT; INDEX may be `ordinal`: the number a StatefulSet puts at the end of its pods'
    hostnames (`canary-2` is shard 2)."""
    index_text, sep, count_text = text.strip().partition("/")
    if not sep or not count_text.isdigit() or int(count_text) < 1:
        raise ValueError(f"{text!r} is not INDEX/COUNT, such as 0/3 or ordinal/3")
    count = int(count_text)
    if index_text == "ordinal":
        found = _TRAILING_NUMBER.search(hostname)
        if found is None:
            raise ValueError(f"the hostname {hostname!r} ends in no -NUMBER to take the shard from")
        index_text = found.group(1)
    if not index_text.isdigit() or int(index_text) >= count:
        raise ValueError(
            f"the shard index must be a number from 0 to {count - 1}, not {index_text!r}"
        )
    return Shard(int(index_text), count)
