"""The Docker Compose stack, deploy/compose/: checked without Docker. The compose file parses, its
images are pinned, its mounts exist and are the repository's own files, its ports and URLs agree
with what each service listens on, its Prometheus config passes promtool, its catalog is valid and
seedable, Grafana is provisioned with the shipped dashboard, and services start in order. One test
runs the README's break-and-repair steps on a real registry with the compose registry's config."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import shutil
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from canary.cli import _parser as cli_parser
from canary.config import Config, load_config, split_listen
from canary.schema import parse_size
from canary.seed import synthesize
from canary.testbed import REGISTRY_BINARY, free_port
from tests.conftest import REPO_ROOT, run_cli
from tests.loopback import http_get

COMPOSE_DIR = REPO_ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
COMPOSE_README = COMPOSE_DIR / "README.md"
PROMETHEUS_CONFIG = COMPOSE_DIR / "prometheus.yml"
REGISTRY_CONFIG = COMPOSE_DIR / "registry.yml"
CATALOG = COMPOSE_DIR / "canary.yaml"
GRAFANA_PROVISIONING = COMPOSE_DIR / "grafana" / "provisioning"
ROUTING_KEY_PLACEHOLDER = COMPOSE_DIR / "secrets" / "pagerduty-routing-key.example"

# The repository's own files the stack mounts, never copies.
RULES = REPO_ROOT / "config" / "prometheus" / "rules.yml"
ALERTMANAGER_CONFIG = REPO_ROOT / "config" / "alertmanager" / "alertmanager.yml"
DASHBOARD = REPO_ROOT / "dashboards" / "registry-canary.json"
SHIPPED = {"prometheus": RULES, "alertmanager": ALERTMANAGER_CONFIG, "grafana": DASHBOARD}

EXPECTED_SERVICES = {"registry", "seed", "canary", "prometheus", "alertmanager", "grafana"}
# The port each long-running service listens on inside its container.
LISTEN_PORTS = {
    "registry": 5000,
    "canary": 9321,
    "prometheus": 9090,
    "alertmanager": 9093,
    "grafana": 3000,
}
JOB = "registry-canary"  # the scrape job the alert pack selects
BROKEN = "canary/alpine"  # the repository the README breaks

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def interpolate(value: Any) -> Any:
    """Compose's `${NAME:-default}` resolved as in an empty environment; a variable without a
    default would make `docker compose up` depend on the caller's environment, so it fails."""
    if isinstance(value, dict):
        return {key: interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item) for item in value]
    if not isinstance(value, str):
        return value

    def default(match: re.Match[str]) -> str:
        if match.group("default") is None:
            pytest.fail(f"${{{match.group('name')}}} has no default in {COMPOSE_FILE}")
        return match.group("default")

    return _VARIABLE.sub(default, value).replace("$$", "$")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


COMPOSE: dict[str, Any] = interpolate(load_yaml(COMPOSE_FILE))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PROMETHEUS: dict[str, Any] = load_yaml(PROMETHEUS_CONFIG)


@dataclass(frozen=True)
class Mount:
    kind: str  # "bind" or "volume"
    source: str
    target: str
    read_only: bool

    @property
    def host_path(self) -> Path:
        """A bind mount's source as Compose resolves it: relative to the compose file."""
        assert self.kind == "bind", self
        return (COMPOSE_DIR / Path(self.source).expanduser()).resolve()


def mounts(service: str) -> list[Mount]:
    found = []
    for entry in SERVICES[service].get("volumes", []):
        if isinstance(entry, dict):
            found.append(
                Mount(
                    entry["type"],
                    entry["source"],
                    entry["target"],
                    bool(entry.get("read_only", False)),
                )
            )
            continue
        source, target, *options = entry.split(":")
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        found.append(Mount(kind, source, target, "ro" in ",".join(options).split(",")))
    return found


def binds(service: str) -> list[Mount]:
    return [mount for mount in mounts(service) if mount.kind == "bind"]


def mount_of(service: str, host_path: Path) -> Mount:
    """The bind mount of `service` whose source is `host_path`."""
    matches = [mount for mount in binds(service) if mount.host_path == host_path.resolve()]
    assert len(matches) == 1, f"{service} should mount {host_path} once: {mounts(service)}"
    return matches[0]


def mount_at(service: str, target: str) -> Mount:
    matches = [mount for mount in mounts(service) if mount.target == target]
    assert len(matches) == 1, f"{service} should mount one thing at {target}: {mounts(service)}"
    return matches[0]


def argv(service: str) -> list[str]:
    """The service's entrypoint and command, when the compose file sets them."""
    parts: list[str] = []
    for key in ("entrypoint", "command"):
        value = SERVICES[service].get(key, [])
        parts += shlex.split(value) if isinstance(value, str) else list(value)
    return parts


def flags(service: str) -> dict[str, str]:
    """`--name=value` arguments of the service's command."""
    found = {}
    for argument in argv(service):
        name, sep, value = argument.partition("=")
        if argument.startswith("--") and sep:
            found[name] = value
    return found


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


@dataclass(frozen=True)
class Published:
    host_ip: str
    host_port: int
    container_port: int


def published(service: str) -> list[Published]:
    found = []
    for entry in SERVICES[service].get("ports", []):
        if isinstance(entry, dict):
            found.append(
                Published(
                    str(entry.get("host_ip", "")), int(entry["published"]), int(entry["target"])
                )
            )
            continue
        # HOST_IP:HOST_PORT:CONTAINER_PORT, HOST_PORT:CONTAINER_PORT or CONTAINER_PORT alone (a
        # random host port, shown as 0).
        parts = str(entry).split("/")[0].rsplit(":", 2)
        host_ip, host_port, container_port = ["", "0"][: 3 - len(parts)] + parts
        found.append(Published(host_ip, int(host_port or 0), int(container_port)))
    return found


def depends_on(service: str) -> dict[str, str]:
    """Dependencies of `service` with their conditions (the short form means service_started)."""
    value = SERVICES[service].get("depends_on", {})
    if isinstance(value, list):
        return {name: "service_started" for name in value}
    return {name: spec.get("condition", "service_started") for name, spec in value.items()}


def healthcheck_urls(service: str) -> list[str]:
    test = SERVICES[service].get("healthcheck", {}).get("test", [])
    words = shlex.split(test) if isinstance(test, str) else test
    return [word for word in words if word.startswith("http")]


def catalog() -> Config:
    return load_config(CATALOG, environ={})


def seed_args() -> Any:
    """The seed service's command line as `registry-canary` parses it."""
    command = argv("seed")
    assert command[0] == "registry-canary", command
    return cli_parser().parse_args(command[1:])


def target_port(address: str) -> int:
    """The port of `host:port` or of a URL."""
    parsed = urlsplit(address if "//" in address else f"//{address}")
    assert parsed.port is not None, address
    return parsed.port


def test_compose_file_has_exactly_the_expected_services() -> None:
    """The compose file parses and defines the registry, seed, canary, Prometheus, Alertmanager
    and Grafana, and nothing else."""
    assert set(SERVICES) == EXPECTED_SERVICES
    named = {mount.source for service in SERVICES for mount in mounts(service)}
    named_volumes = {m for m in named if not m.startswith((".", "/", "~"))}
    assert named_volumes <= set(COMPOSE.get("volumes") or {}), "undeclared named volumes"


def test_every_image_is_pinned() -> None:
    """Every service names its image with a tag, and no tag is `latest`."""
    for name, service in SERVICES.items():
        image = service.get("image")
        assert image, f"{name} has no image name"
        reference = image.split("@")[0]
        _, sep, tag = reference.rpartition(":")
        assert sep, f"{name}: {image} has no tag"
        assert "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image} is not pinned"


def test_canary_and_seed_build_from_the_repository_dockerfile() -> None:
    """The canary image is built from the Dockerfile at the repository root, once, under one name
    that both the seed and the canary service use."""
    images = set()
    for name in ("seed", "canary"):
        build = SERVICES[name]["build"]
        context = build if isinstance(build, str) else build["context"]
        assert (COMPOSE_DIR / context).resolve() == REPO_ROOT
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "")
        assert (REPO_ROOT / (dockerfile or "Dockerfile")) == REPO_ROOT / "Dockerfile"
        images.add(SERVICES[name]["image"])
    assert len(images) == 1
    assert not {"build"} & {
        key for name in EXPECTED_SERVICES - {"seed", "canary"} for key in SERVICES[name]
    }


def test_dockerfile_runs_the_daemon() -> None:
    """The repository's Dockerfile has the entrypoint the canary service relies on
    (`registry-canary run`), since the service does not set one."""
    dockerfile = REPO_ROOT / "Dockerfile"
    if not dockerfile.exists():
        pytest.skip("the repository has no Dockerfile yet")
    entrypoints = [
        line.split(None, 1)[1]
        for line in dockerfile.read_text(encoding="utf-8").splitlines()
        if line.strip().upper().startswith("ENTRYPOINT")
    ]
    assert entrypoints, "the Dockerfile sets no ENTRYPOINT"
    assert json.loads(entrypoints[-1]) == ["registry-canary", "run"]
    assert "entrypoint" not in SERVICES["canary"]


def test_every_bind_mounted_path_exists_and_is_read_only() -> None:
    """Every host path bind-mounted into a service exists (relative to deploy/compose/), and every
    bind mount is read-only: the stack reads its configs, it never writes them."""
    for service in SERVICES:
        for mount in binds(service):
            assert mount.host_path.exists(), f"{service}: {mount.source} does not exist"
            assert mount.read_only, f"{service}: {mount.source} is mounted read-write"
            assert PurePosixPath(mount.target).is_absolute(), mount


def test_shipped_files_are_mounted_not_copied() -> None:
    """The alert pack, the Alertmanager routing and the dashboard are the repository's own files,
    mounted from their own paths; no copy of them lives under deploy/compose/."""
    for service, shipped in SHIPPED.items():
        mount_of(service, shipped)
    shipped_bytes = {path.read_bytes() for path in SHIPPED.values()}
    for path in COMPOSE_DIR.rglob("*"):
        if path.is_file():
            assert path.read_bytes() not in shipped_bytes, f"{path} is a copy of a shipped file"


def test_published_ports_bind_loopback_and_reach_the_listening_port() -> None:
    """Each long-running service publishes exactly its listening port, on 127.0.0.1 only, under
    the same number; the one-shot seed publishes nothing."""
    for service in SERVICES:
        expected = LISTEN_PORTS.get(service)
        ports = published(service)
        if expected is None:
            assert ports == [], f"{service} should publish nothing"
            continue
        assert ports == [Published("127.0.0.1", expected, expected)], service


def test_services_listen_where_they_are_published() -> None:
    """What each service listens on (its config, environment or flags) is the port published and
    the port its healthcheck asks."""
    registry = load_yaml(REGISTRY_CONFIG)
    assert split_listen(registry["http"]["addr"])[1] == LISTEN_PORTS["registry"]

    canary_listen = environment("canary")["CANARY_LISTEN"]
    # All interfaces of the container: the published port reaches it from the host.
    assert split_listen(canary_listen) == ("0.0.0.0", LISTEN_PORTS["canary"])  # noqa: S104
    assert catalog().daemon.listen == canary_listen

    # Prometheus, Alertmanager and Grafana keep their default ports.
    assert "--web.listen-address" not in flags("prometheus")
    assert "--web.listen-address" not in flags("alertmanager")
    assert environment("grafana").get("GF_SERVER_HTTP_PORT", "3000") == "3000"

    for service, port in LISTEN_PORTS.items():
        for url in healthcheck_urls(service):
            assert target_port(url) == port, f"{service}'s healthcheck asks {url}"
            assert urlsplit(url).hostname == "127.0.0.1", url


def test_prometheus_config_loads_the_mounted_rules_and_scrapes_the_canary() -> None:
    """Prometheus runs the mounted prometheus.yml, whose rule_files name where rules.yml is
    mounted, whose `registry-canary` job scrapes the canary's port and whose alerts go to the
    Alertmanager service's port."""
    assert flags("prometheus")["--config.file"] == mount_of("prometheus", PROMETHEUS_CONFIG).target
    assert PROMETHEUS["rule_files"] == [mount_of("prometheus", RULES).target]

    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    assert JOB in jobs
    targets = [t for config in jobs[JOB]["static_configs"] for t in config["targets"]]
    assert targets == [f"canary:{LISTEN_PORTS['canary']}"]
    assert jobs[JOB].get("metrics_path", "/metrics") == "/metrics"

    alertmanagers = [
        target
        for config in PROMETHEUS["alerting"]["alertmanagers"]
        for static in config["static_configs"]
        for target in static["targets"]
    ]
    assert alertmanagers == [f"alertmanager:{LISTEN_PORTS['alertmanager']}"]

    storage = flags("prometheus")["--storage.tsdb.path"]
    assert mount_at("prometheus", storage).kind == "volume"


@pytest.mark.registry  # promtool comes from `make sysdeps` (Debian prometheus)
def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    """`promtool check config` accepts prometheus.yml with its rule file, rule_files pointed at
    the repository's rules.yml as the container sees it mounted."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not on PATH: `make sysdeps` installs it (Debian prometheus)")
    config = dict(PROMETHEUS, rule_files=[str(RULES)])
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config, sort_keys=False))
    result = subprocess.run(
        [promtool, "check", "config", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SUCCESS: 1 rule files found" in output, output


def test_canary_catalog_probes_the_compose_registry_and_alerts_the_compose_alertmanager() -> None:
    """deploy/compose/canary.yaml is a valid catalog whose one environment is the registry
    service, whose own alerts go to the Alertmanager service, with Prometheus's external labels."""
    config = catalog()
    assert [env.url for env in config.environments] == [
        f"http://registry:{LISTEN_PORTS['registry']}"
    ]
    alertmanager = config.alerting.alertmanager
    assert alertmanager is not None
    assert alertmanager.url == (f"http://alertmanager:{LISTEN_PORTS['alertmanager']}",)
    # The daemon's alert and the rule's are one in Alertmanager only with the same labels.
    external = PROMETHEUS.get("global", {}).get("external_labels") or {}
    assert config.alerting.external_labels == external


def test_canary_runs_the_mounted_catalog() -> None:
    """The canary reads the catalog where it is mounted, checks its health with
    `registry-canary healthcheck`, and gets longer than its grace period to stop."""
    assert environment("canary")["CANARY_CONFIG"] == mount_of("canary", CATALOG).target
    assert SERVICES["canary"]["healthcheck"]["test"] == ["CMD", "registry-canary", "healthcheck"]
    grace = SERVICES["canary"]["stop_grace_period"]
    assert grace.endswith("s")
    assert float(grace[:-1]) > catalog().daemon.grace_period


def test_seed_pushes_exactly_the_pinned_images() -> None:
    """The seed service runs `registry-canary seed` on the mounted catalog's environment, and the
    sizes it seeds with make the very digests the catalog pins (else seed refuses, exits 1 and
    the canary never starts)."""
    args = seed_args()
    assert args.command == "seed"
    assert args.config == mount_of("seed", CATALOG).target
    assert not args.repush
    config = catalog()
    assert args.environment in {env.name for env in config.environments}
    layer_size = parse_size(args.layer_size)
    for target in config.targets((args.environment,)):
        image = target.image
        assert image.digest, f"{image.reference} is not pinned"
        assert synthesize(image, args.layers, layer_size).digest == image.digest, image.reference
    assert SERVICES["seed"].get("restart") == "no"


def test_alertmanager_runs_the_shipped_routing_with_a_placeholder_key() -> None:
    """Alertmanager runs the shipped config as mounted, and every file that config reads (the
    PagerDuty routing key) is mounted where it looks, by default the documented placeholder."""
    assert (
        flags("alertmanager")["--config.file"]
        == mount_of("alertmanager", ALERTMANAGER_CONFIG).target
    )
    assert mount_at("alertmanager", flags("alertmanager")["--storage.path"]).kind == "volume"

    def files(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key.endswith("_file") and isinstance(value, str):
                    yield value
                else:
                    yield from files(value)
        elif isinstance(node, list):
            for item in node:
                yield from files(item)

    read = set(files(load_yaml(ALERTMANAGER_CONFIG)))
    assert read == {"/etc/prometheus/secrets/pagerduty-routing-key"}
    for path in read:
        assert mount_at("alertmanager", path).host_path == ROUTING_KEY_PLACEHOLDER
    lines = ROUTING_KEY_PLACEHOLDER.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    assert lines[0].strip()
    assert "secrets/pagerduty-routing-key.example" in COMPOSE_README.read_text(encoding="utf-8")


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard() -> None:
    """Grafana's provisioning gives it the Prometheus service as its default Prometheus data
    source (what the dashboard's `datasource` variable picks) and loads the dashboard from where
    the repository's JSON is mounted."""
    for kind in ("datasources", "dashboards"):
        mount = mount_of("grafana", GRAFANA_PROVISIONING / kind)
        assert mount.target == f"/etc/grafana/provisioning/{kind}"

    datasource_files = sorted((GRAFANA_PROVISIONING / "datasources").glob("*.y*ml"))
    datasources = [ds for path in datasource_files for ds in load_yaml(path)["datasources"]]
    assert len(datasources) == 1
    (datasource,) = datasources
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == f"http://prometheus:{LISTEN_PORTS['prometheus']}"
    assert datasource.get("access", "proxy") == "proxy"  # Grafana's server asks, not the browser
    assert datasource["isDefault"] is True

    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == datasource["type"]

    provider_files = sorted((GRAFANA_PROVISIONING / "dashboards").glob("*.y*ml"))
    providers = [p for path in provider_files for p in load_yaml(path)["providers"]]
    assert len(providers) == 1
    (provider,) = providers
    assert provider["type"] == "file"
    dashboard_target = PurePosixPath(mount_of("grafana", DASHBOARD).target)
    assert PurePosixPath(provider["options"]["path"]) in (
        dashboard_target,
        *dashboard_target.parents,
    )
    home = environment("grafana").get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    assert home in (None, str(dashboard_target))


def test_services_start_in_order() -> None:
    """The seed waits for a healthy registry, the canary for the seed to finish successfully,
    Prometheus for Alertmanager and Grafana for Prometheus; every awaited health has a
    healthcheck, and nothing depends on itself through others."""
    assert depends_on("seed") == {"registry": "service_healthy"}
    assert depends_on("canary") == {
        "seed": "service_completed_successfully",
        "registry": "service_healthy",
    }
    assert depends_on("prometheus") == {"alertmanager": "service_healthy"}
    assert depends_on("grafana") == {"prometheus": "service_healthy"}
    assert depends_on("registry") == depends_on("alertmanager") == {}

    for service in SERVICES:
        for dependency, condition in depends_on(service).items():
            assert dependency in SERVICES
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], dependency
            if condition == "service_completed_successfully":
                assert SERVICES[dependency].get("restart", "no") == "no", dependency
    for service in LISTEN_PORTS:
        assert "healthcheck" in SERVICES[service], service
        assert SERVICES[service].get("restart") == "unless-stopped", service

    started: list[str] = []
    while len(started) < len(SERVICES):
        ready = [
            name
            for name in sorted(SERVICES)
            if name not in started and set(depends_on(name)) <= set(started)
        ]
        assert ready, f"a dependency cycle among {set(SERVICES) - set(started)}"
        started += ready


def readme_commands() -> list[list[str]]:
    """The `docker compose ...` commands of the compose README's code blocks."""
    text = COMPOSE_README.read_text(encoding="utf-8")
    return [
        shlex.split(line.strip())
        for line in text.splitlines()
        if line.startswith("    ") and "docker compose" in line
    ]


def readme_break_path() -> PurePosixPath:
    """The path the README's break command removes in the registry container."""
    commands = [c for c in readme_commands() if c[:3] == ["docker", "compose", "exec"]]
    assert len(commands) == 1, commands
    service, rm, force, path = commands[0][3:]
    assert (service, rm, force) == ("registry", "rm", "-rf")
    return PurePosixPath(path)


def readme_repush_args() -> list[str]:
    """The arguments the README's repair command gives the seed service's entrypoint."""
    commands = [c for c in readme_commands() if "--repush" in c]
    assert len(commands) == 1, commands
    assert commands[0][:5] == ["docker", "compose", "run", "--rm", "seed"]
    return commands[0][5:]


def test_readme_breaks_and_repairs_a_catalog_image() -> None:
    """The README's break command removes the `_layers` links of a catalog repository in the
    registry's storage volume, and its repair command is the seed service with --repush."""
    path = readme_break_path()
    root = PurePosixPath(load_yaml(REGISTRY_CONFIG)["storage"]["filesystem"]["rootdirectory"])
    assert mount_at("registry", str(root)).kind == "volume"
    repositories = root / "docker/registry/v2/repositories"
    assert path.name == "_layers"
    assert str(path.parent.relative_to(repositories)) == BROKEN
    assert BROKEN in {image.repository for image in catalog().images}
    assert "cache" not in load_yaml(REGISTRY_CONFIG)["storage"]  # it would mask the break

    entrypoint = SERVICES["seed"]["entrypoint"]
    args = cli_parser().parse_args([*entrypoint[1:], *readme_repush_args()])
    assert args.repush
    assert (args.config, args.environment) == (seed_args().config, seed_args().environment)


@contextlib.contextmanager
def compose_registry(root: Path) -> Iterator[str]:
    """The Debian registry running deploy/compose/registry.yml, with the storage root and the
    address moved to `root` and loopback; yields its URL."""
    binary = shutil.which(REGISTRY_BINARY)
    if binary is None:
        pytest.fail(f"{REGISTRY_BINARY} is not on PATH: `make sysdeps` installs it")
    config = load_yaml(REGISTRY_CONFIG)
    config["storage"]["filesystem"]["rootdirectory"] = str(root / "storage")
    port = free_port()
    config["http"]["addr"] = f"127.0.0.1:{port}"
    (root / "registry.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{port}"
    with (root / "registry.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, "serve", str(root / "registry.yml")], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, (root / "registry.log").read_text()
            with contextlib.suppress(urllib.error.URLError, OSError):
                if http_get(f"{url}/v2/", timeout=1)[0] == 200:
                    break
            assert time.monotonic() < deadline, "the registry did not answer"
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.registry
def test_readme_steps_on_a_real_registry(tmp_path: Path) -> None:
    """On a real registry with the compose registry's config, the seed service's command makes a
    green catalog, the README's break command turns its image into a confirmed blob_unknown,
    and the README's repair command makes it green again."""
    config = load_yaml(CATALOG)
    with compose_registry(tmp_path) as url:
        (env,) = config["environments"]
        env["url"] = url
        config["defaults"]["recheck_delay"] = "100ms"
        path = tmp_path / "canary.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            command = [arg.replace(seed_args().config, str(path)) for arg in args]
            return run_cli(*command)

        def probe() -> dict[str, str]:
            done = run_cli("probe", "--config", str(path), "--format", "json")
            return {result["repository"]: result["outcome"] for result in json.loads(done.stdout)}

        seeded = cli(*argv("seed")[1:])
        assert seeded.returncode == 0, seeded.stderr + seeded.stdout
        assert set(probe().values()) == {"ok"}

        storage = tmp_path / "storage"
        root = PurePosixPath(load_yaml(REGISTRY_CONFIG)["storage"]["filesystem"]["rootdirectory"])
        shutil.rmtree(storage / readme_break_path().relative_to(root))
        outcomes = probe()
        assert outcomes.pop(BROKEN) == "blob_unknown"
        assert set(outcomes.values()) == {"ok"}

        repaired = cli(*SERVICES["seed"]["entrypoint"][1:], *readme_repush_args())
        assert repaired.returncode == 0, repaired.stderr + repaired.stdout
        assert set(probe().values()) == {"ok"}
