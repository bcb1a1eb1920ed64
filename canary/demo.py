"""`make demo`: a local registry, the demo catalog seeded, a probe, the incident, a probe."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import urllib.request
from pathlib import Path

import yaml

from canary.cli import main as cli
from canary.testbed import start_registry

DEMO_CATALOG = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"
BROKEN = "canary/alpine"


def _say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def _status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback registry
        status: int = response.status
        return status


def run(catalog: Path, keep: bool) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="registry-canary-demo-"))
    try:
        with start_registry(workdir / "registry") as registry:
            document = yaml.safe_load(catalog.read_text())
            for environment in document["environments"]:
                environment["url"] = registry.url
            config = workdir / "catalog.yaml"
            config.write_text(yaml.safe_dump(document, sort_keys=False))
            _say(f"registry {registry.url} (storage {registry.storage}); catalog {config}")

            _say("seed: pushing the demo catalog (the only command that writes)")
            if cli(["seed", "--config", str(config), "--environment", "local"]) != 0:
                return 1
            _say("probe: every image pulled and verified")
            healthy = cli(["probe", "--config", str(config)])

            _say(f"injecting the incident: removing {BROKEN}'s _layers links on disk")
            registry.remove_layer_links(BROKEN)
            tags = _status(f"{registry.url}/v2/{BROKEN}/tags/list")
            print(f"GET /v2/{BROKEN}/tags/list still answers {tags}, as it did in the incident")
            _say("probe: the canary sees what push-then-pull tests did not")
            broken = cli(["probe", "--config", str(config)])
            print(f"\nexit status: healthy run {healthy}, after the incident {broken}")
            if keep:
                print(f"kept {workdir}")
            return 0 if (healthy, broken) == (0, 1) else 1
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m canary.demo", description=__doc__)
    parser.add_argument("--catalog", type=Path, default=DEMO_CATALOG)
    parser.add_argument("--keep", action="store_true", help="keep the temporary registry root")
    args = parser.parse_args()
    return run(args.catalog, args.keep)


if __name__ == "__main__":
    raise SystemExit(main())
