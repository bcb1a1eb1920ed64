"""What the benchmarks share: running and measuring children, seeding catalogs, verdicts."""

from __future__ import annotations

import argparse
import gc
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
CHILD_SECONDS = 300.0  # any one child (or group of children) is killed after this long
# A child's max RSS as wait4(2) reports it is at least the RSS of the process it was forked
# from (Linux keeps the pre-exec high-water mark), here this benchmark's ~50 MiB. GNU time is a
# small parent, so its %M is the command's own peak; wait4 is the fallback, an upper bound.
GNU_TIME = "/usr/bin/time"


class BenchError(Exception):
    """A tool that failed, or answered something other than what was seeded."""


# Running children and measuring each one.


def _gnu_time_works() -> bool:
    if not os.access(GNU_TIME, os.X_OK):
        return False
    try:
        done = subprocess.run(
            [GNU_TIME, "-f", "%M", "-o", os.devnull, "true"], capture_output=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


USE_GNU_TIME = _gnu_time_works()
RSS_SOURCE = (
    "GNU time %M"
    if USE_GNU_TIME
    else "wait4, which counts this benchmark's own RSS too: install GNU time (Debian `time`)"
)


@dataclass(frozen=True, slots=True)
class Child:
    """One finished child process: its exit status, output, and its own resource usage."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    user_seconds: float
    sys_seconds: float
    max_rss_kib: int


@dataclass(frozen=True, slots=True)
class Run:
    """A group of children started together: wall time from first spawn to last exit."""

    wall_seconds: float
    children: tuple[Child, ...]

    @property
    def user_seconds(self) -> float:
        return sum(child.user_seconds for child in self.children)

    @property
    def sys_seconds(self) -> float:
        return sum(child.sys_seconds for child in self.children)

    @property
    def max_rss_kib(self) -> int:
        return max(child.max_rss_kib for child in self.children)

    def check(self, what: str) -> None:
        for child in self.children:
            if child.returncode != 0:
                raise BenchError(
                    f"{what}: `{' '.join(child.argv)[:300]}` exited with {child.returncode}\n"
                    f"{child.stderr.strip()[-4000:]}"
                )


def wait_exit(pid: int, deadline: float) -> bool:
    """Block until child `pid` has exited or `deadline` passes; True if it exited."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # a kernel without pidfd: poll, in steps of a millisecond
        for _ in range(int(remaining * 1000) + 1):
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
            time.sleep(0.001)
        return False
    try:
        ready, _, _ = select.select([fd], [], [], remaining)
        return bool(ready)
    finally:
        os.close(fd)


def _peak_kib(measured: Path, fallback: int) -> int:
    """The %M that GNU time wrote (its last line; a failed command adds a line before it)."""
    if not USE_GNU_TIME:
        return fallback
    lines = measured.read_text().split()
    return int(lines[-1]) if lines and lines[-1].isdigit() else fallback


def run_together(commands: Sequence[Sequence[str]], workdir: Path) -> Run:
    """Start every command at once, wait for all (killed after CHILD_SECONDS), reap each with
    wait4 so its CPU time is its own, and return the group's wall time."""
    workdir.mkdir(parents=True, exist_ok=True)
    started: list[tuple[tuple[str, ...], subprocess.Popen[bytes], Path]] = []
    usages = []
    start = time.perf_counter()
    deadline = time.monotonic() + CHILD_SECONDS
    try:
        for index, argv in enumerate(commands):
            base = workdir / str(index)
            wrapped = list(argv)
            if USE_GNU_TIME:
                wrapped = [GNU_TIME, "-f", "%M", "-o", str(base.with_suffix(".rss")), *wrapped]
            with (
                base.with_suffix(".out").open("wb") as out,
                base.with_suffix(".err").open("wb") as err,
            ):
                process = subprocess.Popen(
                    wrapped, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO_ROOT
                )
            started.append((tuple(argv), process, base))
        for argv, process, _ in started:
            if not wait_exit(process.pid, deadline):
                raise BenchError(f"`{' '.join(argv)[:300]}` took over {CHILD_SECONDS:g}s")
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            usages.append(usage)
        wall = time.perf_counter() - start
    finally:
        for _, process, _ in started:
            if process.returncode is None:
                process.kill()
                process.wait(timeout=10)
    children = [
        Child(
            argv=argv,
            returncode=process.returncode,
            stdout=base.with_suffix(".out").read_text(errors="replace"),
            stderr=base.with_suffix(".err").read_text(errors="replace"),
            # With GNU time these include its own, about a millisecond.
            user_seconds=usage.ru_utime,
            sys_seconds=usage.ru_stime,
            max_rss_kib=_peak_kib(base.with_suffix(".rss"), usage.ru_maxrss),  # KiB on Linux
        )
        for (argv, process, base), usage in zip(started, usages, strict=True)
    ]
    return Run(wall_seconds=wall, children=tuple(children))


def run_one(argv: Sequence[str], workdir: Path) -> Run:
    return run_together([argv], workdir)


def run_in_turn(commands: Sequence[Sequence[str]], workdir: Path) -> Run:
    """Run the commands one after another; the wall time is the sum of theirs."""
    runs = [run_one(argv, workdir / str(i)) for i, argv in enumerate(commands)]
    return Run(
        wall_seconds=sum(run.wall_seconds for run in runs),
        children=tuple(child for run in runs for child in run.children),
    )


# Seeding.


def canary_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "canary", *args]


@dataclass(frozen=True, slots=True)
class SeededEntries:
    entries: list[dict[str, str]]  # catalog entries with the pins `seed` printed, in order
    seed_seconds: float  # wall time, the seed processes running side by side


def seed_entries(
    url: str,
    workdir: Path,
    repositories: Sequence[str],
    layers: int,
    layer_size: str,
    processes: int = 1,
) -> SeededEntries:
    """Seed `repositories` (tag v1) with `python -m canary seed`, split over `processes` seed
    processes over disjoint catalogs run side by side, and return the pinned entries."""
    shares = [list(repositories[i::processes]) for i in range(processes)]
    shares = [share for share in shares if share]
    commands = []
    workdir.mkdir(parents=True, exist_ok=True)
    for index, share in enumerate(shares):
        config = workdir / f"seed-{index}.yaml"
        document = {
            "environments": [{"name": "local", "url": url}],
            "images": [{"repository": repo, "tag": "v1"} for repo in share],
        }
        config.write_text(yaml.safe_dump(document, sort_keys=False))
        argv = canary_cli("seed", "--config", str(config), "--environment", "local")
        commands.append([*argv, "--layers", str(layers), "--layer-size", layer_size])
    run = run_together(commands, workdir / "seed")
    run.check("seeding")
    pinned: dict[str, dict[str, str]] = {}
    for child, share in zip(run.children, shares, strict=True):
        pins: Any = yaml.safe_load(child.stdout)
        if not isinstance(pins, list) or len(pins) != len(share):
            raise BenchError(f"seed printed no pins for {len(share)} images:\n{child.stdout}")
        for pin in pins:
            entry = {"repository": str(pin["repository"]), "tag": str(pin["tag"])}
            entry["digest"] = str(pin["digest"])
            if isinstance(pin.get("published"), datetime):
                entry["published"] = pin["published"].isoformat().replace("+00:00", "Z")
            pinned[entry["repository"]] = entry
    missing = [repo for repo in repositories if repo not in pinned]
    if missing:
        raise BenchError(f"seed printed no pin for {missing[0]} (and {len(missing) - 1} more)")
    return SeededEntries([pinned[repo] for repo in repositories], run.wall_seconds)


# Reporting.


def tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def verdict(ok: bool | None) -> str:
    if ok is None:
        return "(for information)"
    return "meets target" if ok else "MISSES target"


def run_benchmark(
    tools: Sequence[str],
    prefix: str,
    output: Path,
    bench: Callable[[Path], dict[str, Any]],
    report: Callable[[dict[str, Any]], str],
    failed: Callable[[dict[str, Any]], bool] = lambda figures: False,
) -> int:
    """Check the tools, run `bench` in a temporary folder, print and save the figures."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        print(f"needs {' and '.join(missing)}; `make bench` installs them", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        figures = bench(work)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.stdout.write("\n" + report(figures))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nfigures written to {output}")
    return 1 if failed(figures) else 0


def images_main(
    doc: str | None,
    images: int,
    output: Path,
    tools: Sequence[str],
    prefix: str,
    bench: Callable[[int, Path], dict[str, Any]],
    report: Callable[[dict[str, Any]], str],
) -> int:
    """The command line of a benchmark sized by --images: parse, check, run, report."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=images, help=f"default {images}")
    parser.add_argument("--output", type=Path, default=output, help=f"default {output}")
    args = parser.parse_args()
    if args.images < 1:
        print("--images must be at least 1", file=sys.stderr)
        return 2
    return run_benchmark(tools, prefix, args.output, lambda work: bench(args.images, work), report)


# In-process CPU figures.


def best_cpu(run: Callable[[], object], repeats: int, prepare: bool = False) -> float:
    """The best of `repeats` process CPU times of `run`, after a collection so that garbage of
    the previous repeat is not charged to this one. With `prepare`, `run` is called untimed
    and returns the callable to time (for work that consumes its input)."""
    best = float("inf")
    for _ in range(repeats):
        timed = run() if prepare else run
        assert callable(timed)
        gc.collect()
        start = time.process_time()
        timed()
        best = min(best, time.process_time() - start)
    return best


def bench_targets(images: int) -> list[Any]:
    """`images` catalog targets in one environment, `prod`, as `run` would track them."""
    from canary.config import parse_config

    document = {
        "environments": [{"name": "prod", "url": "http://127.0.0.1:5000"}],
        "images": [{"repository": f"team/image-{i:04d}", "tag": "v1"} for i in range(images)],
    }
    return list(parse_config(document, "bench").targets())
