"""What does the status page cost? Rendering `/` for a large catalog, against `/status`'s JSON.

Run by `make bench`. In process, best of 5: a status document of 1,000 images in 2 environments,
a tenth of them failing with 3 failed blobs each (an incident), is rendered as the HTML page and,
as the reference, serialised as `/status` does (compact JSON). Writes .bench/statuspage.json.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import best_cpu, images_main, verdict

from canary.statuspage import render

IMAGES = 1000
REPEATS = 5
OUTPUT = Path(".bench/statuspage.json")


def document(images: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    stamp = (now - timedelta(seconds=20)).isoformat().replace("+00:00", "Z")
    entries = []
    for index in range(images):
        failing = index % 10 == 0
        blob = {
            "digest": "sha256:" + f"{index:064x}",
            "kind": "layer",
            "outcome": "blob_unknown" if failing else "ok",
            "first_outcome": "blob_unknown" if failing else "ok",
            "hop": "registry",
            "status": 404 if failing else 200,
            "request_id": f"req-{index}",
            "evidence": {"detail": "HTTP 404 BLOB_UNKNOWN: blob unknown to registry"}
            if failing
            else None,
        }
        entries.append(
            {
                "environment": ("production", "staging")[index % 2],
                "repository": f"team/image-{index // 2:04d}",
                "tag": "v1",
                "ok": not failing,
                "outcome": "blob_unknown" if failing else "ok",
                "last_probe": stamp,
                "last_success": stamp,
                "published": [
                    {"timestamp": stamp, "source": "config", "status": "ok", "detail": None}
                ],
                "result": {"manifest": None, "platform_manifests": [], "blobs": [blob] * 3},
                "suspect": failing,
                "next_probe": stamp,
            }
        )
    return {
        "version": "bench",
        "started_at": stamp,
        "ready": True,
        "environments": [{"name": n, "ready": True} for n in ("production", "staging")],
        "images": entries,
        "alerts": {"alertmanagers": 0, "firing": []},
    }


def bench(images: int, work: Path) -> dict[str, Any]:
    status = document(images)
    page = render(status)
    reference = best_cpu(lambda: json.dumps(status), REPEATS)
    rendering = best_cpu(lambda: render(status), REPEATS)
    return {
        "images": images,
        "page_bytes": len(page.encode()),
        "json_bytes": len(json.dumps(status).encode()),
        "render_ms": rendering * 1000,
        "json_ms": reference * 1000,
        "ratio": rendering / reference,
    }


def report(f: dict[str, Any]) -> str:
    return (
        f"status page, {f['images']} images, a tenth failing\n"
        f"  /status JSON (reference) {f['json_ms']:7.1f} CPU ms, {f['json_bytes'] // 1024} KiB\n"
        f"  / rendered               {f['render_ms']:7.1f} CPU ms, {f['page_bytes'] // 1024} KiB"
        f"  ({f['ratio']:.2f}× the JSON; target ≤ 2×: {verdict(f['ratio'] <= 2)})\n"
    )


def main() -> int:
    return images_main(__doc__, IMAGES, OUTPUT, (), "canary-bench-statuspage-", bench, report)


if __name__ == "__main__":
    sys.exit(main())
