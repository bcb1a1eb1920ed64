"""The `registry-canary` commands: run, probe, check-config, seed, healthcheck."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from canary import __version__
from canary.process import tune_allocator

if TYPE_CHECKING:
    from canary.config import Config
    from canary.seed import SeedReport

# Each command imports what it needs: `healthcheck` runs every 30 s in a container and needs
# only the standard library, and the daemon's stack would slow every one-shot `probe`.

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="registry-canary",
        description="Pull long-lived images from container registries and verify every byte.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    probe = commands.add_parser("probe", help="pull the catalog once; exit 1 if any pull failed")
    probe.add_argument("--config", required=True, help="catalog file (YAML)")
    probe.add_argument(
        "--environment",
        action="append",
        default=[],
        metavar="NAME",
        help="only this environment (repeatable; default all)",
    )
    probe.add_argument("--format", choices=("text", "json"), default="text")

    run = commands.add_parser("run", help="probe the catalog forever and serve metrics")
    run.add_argument(
        "--config",
        default=os.environ.get("CANARY_CONFIG"),
        help="catalog file (YAML); default $CANARY_CONFIG",
    )
    run.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default=os.environ.get("CANARY_LISTEN"),
        help="serve /, /metrics, /healthz, /readyz, /status here "
        "(default $CANARY_LISTEN, else from the config)",
    )
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    run.add_argument(
        "--shard",
        metavar="INDEX/COUNT",
        default=os.environ.get("CANARY_SHARD"),
        help="probe only this shard of the catalog, such as 0/3, or ordinal/3 to take the index "
        "from a StatefulSet pod's hostname (default $CANARY_SHARD; all)",
    )

    health = commands.add_parser(
        "healthcheck", help="exit 0 if a running daemon answers /healthz (for container checks)"
    )
    health.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default=os.environ.get("CANARY_LISTEN") or "127.0.0.1:9321",
        help="where the daemon listens (default $CANARY_LISTEN, else 127.0.0.1:9321)",
    )

    check = commands.add_parser("check-config", help="validate a catalog file; exit 2 if invalid")
    check.add_argument("file")

    seed = commands.add_parser(
        "seed", help="push synthetic images for entries an environment lacks, and print their pins"
    )
    seed.add_argument("--config", required=True)
    seed.add_argument("--environment", required=True, metavar="NAME")
    seed.add_argument("--layers", type=int, default=2, help="layers per image (default 2)")
    seed.add_argument(
        "--layer-size",
        default="16KiB",
        help="bytes per layer, e.g. 4096, 64KiB, 32MiB (default 16KiB)",
    )
    seed.add_argument(
        "--repush",
        action="store_true",
        help="push again tags that hold exactly what seed makes (restores lost blob links); "
        "never overwrites other content",
    )
    return parser


def _environments(config: Config, names: Sequence[str]) -> tuple[str, ...]:
    known = {env.name for env in config.environments}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise _UsageError(
            f"unknown environment {unknown[0]!r}; the config has {', '.join(sorted(known))}"
        )
    return tuple(names)


def _probe(args: argparse.Namespace) -> int:
    from canary.config import load_config
    from canary.probe import probe_catalog
    from canary.report import Progress, render_json, render_text

    config = load_config(args.config)
    environments = _environments(config, args.environment)
    total = sum(1 for _ in config.targets(environments))
    progress = Progress(total)
    results = asyncio.run(probe_catalog(config, environments, on_result=progress))
    progress.finish()
    sys.stdout.write(render_json(results) + "\n" if args.format == "json" else render_text(results))
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    from canary.config import Daemon as DaemonSettings
    from canary.config import load_config
    from canary.daemon import Daemon
    from canary.shard import parse_shard

    if not args.config:
        raise _UsageError("--config is required (or set CANARY_CONFIG)")
    shard = None
    if args.shard:
        try:
            shard = parse_shard(args.shard, socket.gethostname())
        except ValueError as exc:
            raise _UsageError(f"--shard: {exc}") from None
    config = load_config(args.config)
    if args.listen is not None:
        try:
            DaemonSettings(listen=args.listen)
        except ValueError as exc:
            raise _UsageError(f"--listen: {args.listen!r} is not HOST:PORT") from exc
    daemon = Daemon(
        Path(args.config), config, listen=args.listen, log_level=args.log_level, shard=shard
    )
    return asyncio.run(daemon.run())


def _healthcheck(args: argparse.Namespace) -> int:
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - listening on all: ask on loopback
        host = "127.0.0.1" if host != "::" else "::1"
    if not port.isdigit():
        raise _UsageError(f"--listen: {args.listen!r} is not HOST:PORT")
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            healthy = response.status == 200
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{'healthy' if healthy else 'unhealthy'}: {url}")
    return EXIT_OK if healthy else EXIT_FAILED


def _check_config(args: argparse.Namespace) -> int:
    from canary.config import load_config

    config = load_config(args.file)
    pairs = sum(1 for _ in config.targets())
    alertmanager = config.alerting.alertmanager
    alerting = f", alerts posted to {len(alertmanager.url)} Alertmanager(s)" if alertmanager else ""
    print(
        f"{args.file}: valid: {len(config.environments)} environments, "
        f"{len(config.images)} images, {pairs} probes per round{alerting}"
    )
    return EXIT_OK


def _seed(args: argparse.Namespace) -> int:
    from canary.config import load_config
    from canary.registry.client import RegistryClient
    from canary.seed import parse_size, render_pins, seed

    config = load_config(args.config)
    _environments(config, [args.environment])
    try:
        layer_size = parse_size(args.layer_size)
    except ValueError as exc:
        raise _UsageError(f"--layer-size: {exc}") from None
    if args.layers < 1:
        raise _UsageError("--layers must be at least 1")
    environment = config.environment(args.environment)
    images = [target.image for target in config.targets((args.environment,))]

    async def run() -> list[SeedReport]:
        async with RegistryClient(environment) as client:
            return await seed(client, images, args.layers, layer_size, repush=args.repush)

    reports = asyncio.run(run())
    sys.stdout.write(render_pins(reports))
    refused = [r for r in reports if r.action == "refused"]
    for report in refused:
        print(f"refused: {report.image.reference}: {report.detail}", file=sys.stderr)
    return EXIT_FAILED if refused else EXIT_OK


_COMMANDS = {
    "run": _run,
    "probe": _probe,
    "check-config": _check_config,
    "seed": _seed,
    "healthcheck": _healthcheck,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "healthcheck":
        try:
            return _healthcheck(args)
        except _UsageError as exc:
            print(f"registry-canary healthcheck: {exc}", file=sys.stderr)
            return EXIT_USAGE
    from canary.config import ConfigError

    if args.command != "run":
        # Speed over memory for one-shot commands; the daemon hands freed memory back instead.
        tune_allocator()
    try:
        return _COMMANDS[args.command](args)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_USAGE
    except _UsageError as exc:
        print(f"registry-canary {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
