"""The `registry-canary` commands: run, probe, check-config, seed, healthcheck."""

from __future__ import annotations

import argparse
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
    probe.add_argument(
        "--format",
        choices=("text", "json", "junit"),
        default="text",
        help="text: a table; json: every detail; junit: JUnit XML for CI test reports",
    )
    probe.add_argument(
        "--output",
        metavar="FILE",
        help="write the report to FILE, replaced atomically; the text table still goes to "
        "stdout for the json and junit formats",
    )
    gate = probe.add_mutually_exclusive_group()
    gate.add_argument(
        "--require-all",
        action="store_true",
        help="exit 1 if any pull failed (the default)",
    )
    gate.add_argument(
        "--max-failures",
        type=int,
        metavar="N",
        help="exit 0 when at most N pulls failed",
    )
    probe.add_argument(
        "--wait-until-healthy",
        metavar="DURATION",
        help="while the gate fails, probe the failed images again (backing off from 2s to 30s) "
        "until it passes or DURATION, such as 5m, is up",
    )

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
    check.add_argument(
        "--measure",
        action="store_true",
        help="also read the manifests of images under blob_check: budget and say whether each "
        "budget can fully verify their layers within full_verify_within",
    )

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
    import asyncio

    from canary.schema import parse_duration

    max_failures = args.max_failures if args.max_failures is not None else 0
    if max_failures < 0:
        raise _UsageError(f"--max-failures: {max_failures} is negative; give 0 or more")
    wait = None
    if args.wait_until_healthy is not None:
        try:
            wait = parse_duration(args.wait_until_healthy)
        except ValueError as exc:
            raise _UsageError(f"--wait-until-healthy: {exc}") from None
    output = Path(args.output) if args.output else None
    if output is not None and not output.parent.is_dir():
        raise _UsageError(f"--output: {output.parent} is not a folder")

    from canary.config import load_config
    from canary.probe import probe_catalog
    from canary.report import (
        Attempts,
        Key,
        Progress,
        render_json,
        render_text,
        write_atomically,
    )
    from canary.results import ImageResult

    config = load_config(args.config)
    environments = _environments(config, args.environment)

    def passes(results: Sequence[ImageResult]) -> bool:
        return sum(not r.ok for r in results) <= max_failures

    async def probe() -> tuple[list[ImageResult], dict[Key, int]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (wait or 0.0)
        progress = Progress(sum(1 for _ in config.targets(environments)))
        try:
            first = await probe_catalog(config, environments, on_result=progress)
        finally:
            progress.finish()
        final = {r.key: r for r in first}
        attempts = dict.fromkeys(final, 1)
        attempt, pause = 1, 2.0
        while wait is not None and not passes(list(final.values())):
            left = deadline - loop.time()
            if left <= 0:
                break
            failing = {key for key, result in final.items() if not result.ok}
            delay = min(pause, left)
            attempt += 1
            images = "image" if len(failing) == 1 else "images"
            print(
                f"attempt {attempt} of the {len(failing)} failing {images} in {delay:.3g}s "
                f"({left:.0f}s left to wait)",
                file=sys.stderr,
                flush=True,
            )
            await asyncio.sleep(delay)
            pause = min(pause * 2, 30.0)
            progress = Progress(len(failing), attempt=attempt)
            try:
                again = await probe_catalog(config, environments, on_result=progress, only=failing)
            finally:
                progress.finish()
            for result in again:
                final[result.key] = result
                attempts[result.key] += 1
        return list(final.values()), attempts

    results, counted = asyncio.run(probe())
    attempts: Attempts | None = counted if wait is not None else None
    if args.format == "json":
        report = render_json(results, attempts) + "\n"
    elif args.format == "junit":
        from canary.junit import render_junit

        report = render_junit(results, attempts)
    else:
        report = render_text(results, attempts)
    if output is None:
        sys.stdout.write(report)
    else:
        try:
            write_atomically(output, report)
        except OSError as exc:
            raise _UsageError(f"--output: cannot write {output}: {exc.strerror or exc}") from None
        if args.format != "text":
            sys.stdout.write(render_text(results, attempts))
    return EXIT_OK if passes(results) else EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    import asyncio

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
    if args.measure:
        return _measure(args.file, config)
    return EXIT_OK


def _measure(source: str, config: Config) -> int:
    """The budget check that needs the registry: the layers' sizes come from the manifests."""
    import asyncio

    from canary.budget import format_bytes
    from canary.config import ConfigError
    from canary.sizing import budget_problems, measure

    measured = asyncio.run(measure(config))
    for found in measured:
        print(
            f"{found.environment}: {len(found.layers)} layers under blob_check: budget, "
            f"{format_bytes(found.catalog_bytes)} in all, the largest "
            f"{format_bytes(found.largest)}"
        )
        for problem in found.unreadable:
            print(f"  not measured: {problem}", file=sys.stderr)
    if not measured:
        print("no image is under blob_check: budget: nothing to measure")
    problems = budget_problems(config, measured)
    if problems:
        raise ConfigError(source, problems)
    return EXIT_FAILED if any(found.unreadable for found in measured) else EXIT_OK


def _seed(args: argparse.Namespace) -> int:
    import asyncio

    from canary.config import load_config
    from canary.registry.client import RegistryClient
    from canary.schema import parse_size
    from canary.seed import render_pins, seed

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
