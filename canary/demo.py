"""`make demo`: a local registry, a seeded catalog, probes around the incident, the daemon."""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
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


def _daemon(config: Path, listen: str, run_for: float | None, keep: bool, workdir: Path) -> int:
    """Run the daemon on the broken registry until Ctrl-C (or `run_for` seconds)."""
    base = f"http://{listen}"
    _say("the daemon: probing every interval, with the incident still in place")
    print(f"metrics  {base}/metrics")
    print(f"status   {base}/status")
    print(f"health   {base}/healthz   ready {base}/readyz")
    print(
        "Ctrl-C stops the daemon and the registry."
        if run_for is None
        else f"stopping after {run_for:g}s",
        flush=True,
    )
    if keep:
        print(f"kept {workdir}")
    child = subprocess.Popen(
        [sys.executable, "-m", "canary", "run", "--config", str(config), "--listen", listen]
    )
    try:
        child.wait(timeout=run_for)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGTERM)
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)  # already sent by the terminal; harmless twice
    try:
        status = child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        status = child.wait()
    return 0 if status == 0 else 1


def run(
    catalog: Path, keep: bool, listen: str = "127.0.0.1:9321", run_for: float | None = None
) -> int:
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
            if (healthy, broken) != (0, 1):
                return 1
            return _daemon(config, listen, run_for, keep, workdir)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m canary.demo", description=__doc__)
    parser.add_argument("--catalog", type=Path, default=DEMO_CATALOG)
    parser.add_argument("--keep", action="store_true", help="keep the temporary registry root")
    parser.add_argument("--listen", default="127.0.0.1:9321", help="where the daemon serves")
    parser.add_argument(
        "--run-for",
        type=float,
        metavar="SECONDS",
        help="stop the daemon after this long instead of waiting for Ctrl-C",
    )
    args = parser.parse_args()
    return run(args.catalog, args.keep, args.listen, args.run_for)


if __name__ == "__main__":
    raise SystemExit(main())
