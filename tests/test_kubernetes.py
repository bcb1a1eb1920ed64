"""The Kubernetes manifests of deploy/kubernetes: every kustomization built by build.py's renderer
(and by kustomize where one is installed), core objects validated strictly against the
Kubernetes schemas kubernetes-validate ships, the Prometheus Operator objects checked
structurally, and the pieces checked against each other and against the daemon: ports, probes,
security, resources, shards, and each catalog loaded by the canary with the files its pod mounts."""

from __future__ import annotations

import base64
import copy
import functools
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from canary import __version__
from canary.config import Config, _Loader, parse_config, split_listen
from canary.shard import parse_shard
from deploy.kubernetes import build
from tests.conftest import REPO_ROOT

Obj = dict[str, Any]

DEPLOY = REPO_ROOT / "deploy" / "kubernetes"
BUILD = DEPLOY / "build.py"
RULES = REPO_ROOT / "config" / "prometheus" / "rules.yml"
PROMETHEUS_RULE = DEPLOY / "rules" / "prometheusrule.yaml"
SECRETS_EXAMPLE = DEPLOY / "secrets.example.yaml"
SIDECAR = "sidecar-example.yaml"

KUSTOMIZATIONS = ("base", "overlays/production", "overlays/staging", "sharded", "rules")
# Every way the canary is deployed: the sources holding a workload with a `canary` container.
CANARIES = ("base", "overlays/production", "overlays/staging", "sharded", SIDECAR)
# The ones meant to run side by side in one namespace (the base is only built through overlays).
DEPLOYABLE = ("overlays/production", "overlays/staging", "sharded", SIDECAR, "rules")
SOURCES = (*KUSTOMIZATIONS, SIDECAR, SECRETS_EXAMPLE.name)
CORE_SOURCES = tuple(source for source in SOURCES if source != "rules")  # rules: a CRD alone

# An older release still widely run, and the newest kubernetes-validate 1.37.0 ships (offline).
KUBERNETES_VERSIONS = ("1.30", "1.37")
CORE_KINDS = frozenset({"ConfigMap", "Secret", "Service", "Deployment", "StatefulSet"})
CRD_KINDS = frozenset({"ServiceMonitor", "PrometheusRule"})
MONITORING_API = "monitoring.coreos.com/v1"

LISTEN_PORT = 9321  # the port of the image's CANARY_LISTEN default, 0.0.0.0:9321
UID = 10001  # the image's user
JOB = "registry-canary"  # the scrape job the alert pack selects
MEASURED_PEAK_RSS = 80.4 * 2**20  # README, Performance: the daemon at 1,000 images, overloaded
PROGRESS_DEADLINE = 600  # a Deployment's default progressDeadlineSeconds

# The Prometheus Operator's duration pattern, from its CRDs (interval, scrapeTimeout, for).
DURATION = re.compile(
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
SERVICE_MONITOR_SPEC = frozenset(
    {"jobLabel", "selector", "endpoints", "namespaceSelector", "targetLabels", "podTargetLabels",
     "sampleLimit", "targetLimit", "labelLimit", "attachMetadata", "scrapeClass"}
)  # fmt: skip
SERVICE_MONITOR_ENDPOINT = frozenset(
    {"port", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout", "honorLabels",
     "honorTimestamps", "relabelings", "metricRelabelings", "tlsConfig", "followRedirects",
     "enableHttp2", "filterRunning"}
)  # fmt: skip
RULE_GROUP_KEYS = frozenset({"name", "rules", "interval", "limit", "query_offset", "labels"})
RULE_KEYS = frozenset(
    {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
)


# --- loading --------------------------------------------------------------------------------------


@functools.cache
def _objects(source: str) -> tuple[Obj, ...]:
    if source.endswith(".yaml"):
        text = (DEPLOY / source).read_text(encoding="utf-8")
        return tuple(doc for doc in yaml.safe_load_all(text) if doc)
    return tuple(build.render(DEPLOY / source))


def objects(source: str) -> list[Obj]:
    """The objects a kustomization builds, or a plain manifest holds (a copy to change freely)."""
    return copy.deepcopy(list(_objects(source)))


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objs if obj["kind"] == kind]


def one(objs: list[Obj], kind: str) -> Obj:
    found = of_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def labels(obj: Obj) -> dict[str, str]:
    result: dict[str, str] = obj["metadata"].get("labels", {})
    return result


def selects(selector: dict[str, str], labelled: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labelled.items()


@dataclass
class Canary:
    """The canary container of one deployment form, with its pod and the objects around it."""

    source: str
    objects: list[Obj]
    workload: Obj
    pod: Obj
    container: Obj

    @property
    def env(self) -> dict[str, str]:
        return {var["name"]: var["value"] for var in self.container.get("env", [])}

    def port(self, port: int | str) -> int:
        """A container port, by number or by name, of any container of the pod."""
        if isinstance(port, int):
            return port
        for container in self.pod["containers"]:
            for declared in container.get("ports", []):
                if declared.get("name") == port:
                    number: int = declared["containerPort"]
                    return number
        raise AssertionError(f"{self.source}: no container port is named {port!r}")

    def services(self) -> list[Obj]:
        template = self.workload["spec"]["template"]["metadata"]["labels"]
        return [
            s for s in of_kind(self.objects, "Service") if selects(s["spec"]["selector"], template)
        ]


def canary(source: str) -> Canary:
    objs = objects(source)
    found = [
        (workload, container)
        for workload in objs
        if workload["kind"] in ("Deployment", "StatefulSet")
        for container in workload["spec"]["template"]["spec"]["containers"]
        if container["name"] == "canary"
    ]
    assert len(found) == 1, f"{source}: expected one canary container, found {len(found)}"
    workload, container = found[0]
    return Canary(source, objs, workload, workload["spec"]["template"]["spec"], container)


def example_secrets() -> dict[str, Obj]:
    return {s["metadata"]["name"]: s for s in objects(SECRETS_EXAMPLE.name)}


def secret_files(secret: Obj) -> dict[str, str]:
    files = dict(secret.get("stringData", {}))
    for key, value in secret.get("data", {}).items():
        files[key] = base64.b64decode(value).decode("utf-8")
    return files


QUANTITY_UNITS = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
}
DURATION_UNITS = {"ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def quantity(text: str | int) -> float:
    """A Kubernetes quantity such as 96Mi, 50m or 1, as a number (bytes or cores)."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text))
    assert match, f"not a quantity: {text!r}"
    assert match.group(2) in QUANTITY_UNITS, f"unknown unit in {text!r}"
    return float(match.group(1)) * QUANTITY_UNITS[match.group(2)]


def seconds(text: str) -> float:
    """A Prometheus duration with one unit, such as 30s or 1m, in seconds."""
    match = re.fullmatch(r"([0-9]+)(ms|s|m|h)", text)
    assert match, f"not a duration of one unit: {text!r}"
    return int(match.group(1)) * DURATION_UNITS[match.group(2)]


# --- the pod's files, and the catalog the daemon loads from them ----------------------------------


@dataclass
class Mounted:
    """The canary's filesystem as its pod would mount it, laid out under `root`."""

    root: Path
    mount_paths: list[str]
    origins: dict[str, Obj]  # mounted file path -> the volume it comes from

    def local(self, path: str) -> Path:
        return self.root / path.lstrip("/")


def mount(can: Canary, root: Path) -> Mounted:
    """Lay out every volume the canary mounts: ConfigMaps from the build, Secrets from the
    example file, emptyDirs empty; a missing object, key or volume fails the test."""
    volumes = {volume["name"]: volume for volume in can.pod["volumes"]}
    configmaps = {c["metadata"]["name"]: c for c in of_kind(can.objects, "ConfigMap")}
    secrets = example_secrets()
    mounted = Mounted(root, [], {})
    for entry in can.container["volumeMounts"]:
        assert "subPath" not in entry, "a subPath mount never sees its ConfigMap or Secret change"
        volume = volumes[entry["name"]]
        mounted.mount_paths.append(entry["mountPath"])
        directory = mounted.local(entry["mountPath"])
        directory.mkdir(parents=True)
        if "configMap" in volume:
            source = volume["configMap"]
            assert source["name"] in configmaps, f"ConfigMap {source['name']} is not in the build"
            files = dict(configmaps[source["name"]]["data"])
        elif "secret" in volume:
            source = volume["secret"]
            assert source["secretName"] in secrets, (
                f"Secret {source['secretName']} has no example in {SECRETS_EXAMPLE.name}"
            )
            files = secret_files(secrets[source["secretName"]])
        else:
            assert set(volume) == {"name", "emptyDir"}, f"unexpected volume {volume}"
            continue
        if "items" in source:
            for item in source["items"]:
                assert item["key"] in files, f"{entry['name']} has no key {item['key']}"
            files = {item["path"]: files[item["key"]] for item in source["items"]}
        for name, content in files.items():
            (directory / name).write_text(content, encoding="utf-8")
            mounted.origins[f"{entry['mountPath']}/{name}"] = volume
    return mounted


def reroot(document: Any, mounted: Mounted, where: str = "") -> Any:
    """The catalog with every absolute path moved under `root`; each must lie in a mount."""
    if isinstance(document, dict):
        return {k: reroot(v, mounted, f"{where}.{k}".lstrip(".")) for k, v in document.items()}
    if isinstance(document, list):
        return [reroot(v, mounted, f"{where}.{i}") for i, v in enumerate(document)]
    if isinstance(document, str) and document.startswith("/"):
        assert any(document.startswith(f"{m.rstrip('/')}/") for m in mounted.mount_paths), (
            f"{where}: {document} is on no volume the canary mounts ({mounted.mount_paths})"
        )
        return str(mounted.local(document))
    return document


def load_catalog(can: Canary, root: Path) -> tuple[Config, dict[str, Any], Mounted]:
    """The daemon's view: $CANARY_CONFIG read from the mounted ConfigMap, its files resolved."""
    mounted = mount(can, root)
    config_path = mounted.local(can.env["CANARY_CONFIG"])
    assert config_path.is_file(), f"$CANARY_CONFIG {can.env['CANARY_CONFIG']} is not mounted"
    # The daemon's own loader (timestamps stay text for pydantic), as load_config uses it.
    document = yaml.load(config_path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506
    config = parse_config(
        reroot(document, mounted), f"{can.source}:config.yaml", can.env, config_path.parent
    )
    return config, document, mounted


# --- generation of the PrometheusRule -------------------------------------------------------------


def test_committed_prometheusrule_is_what_build_generates() -> None:
    """`build.py --check` passes: rules/prometheusrule.yaml is current with the alert pack."""
    done = subprocess.run(
        [sys.executable, str(BUILD), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout


def test_check_fails_on_a_stale_file_and_build_rewrites_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--check` exits 1 on a stale PrometheusRule, and a plain run rewrites it as it should be."""
    stale = tmp_path / "prometheusrule.yaml"
    stale.write_text(PROMETHEUS_RULE.read_text(encoding="utf-8").replace("0.995", "0.95"))
    monkeypatch.setattr(build, "OUTPUT", stale)
    assert build.main(["--check"]) == 1
    assert build.main([]) == 0
    assert build.main(["--check"]) == 0
    assert stale.read_text(encoding="utf-8") == PROMETHEUS_RULE.read_text(encoding="utf-8")


def test_generator_refuses_a_rules_file_it_cannot_embed() -> None:
    """A rules file with a second top-level key or no `groups:` is an error, not a partial copy."""
    with pytest.raises(build.BuildError, match="second top-level key"):
        build.prometheus_rule("groups:\n  - name: a\n    rules: []\nextra: 1\n")
    with pytest.raises(build.BuildError, match="groups"):
        build.prometheus_rule("rules: []\n")


def test_prometheusrule_groups_equal_the_alert_pack() -> None:
    """The PrometheusRule's spec.groups is exactly config/prometheus/rules.yml's groups."""
    rule = one(objects("rules"), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]


def test_prometheusrule_structure() -> None:
    """The PrometheusRule has the fields the operator's CRD requires, in the shapes it accepts."""
    rule = one(objects("rules"), "PrometheusRule")
    assert rule["apiVersion"] == MONITORING_API
    assert rule["metadata"]["name"]
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(rule["spec"]) == {"groups"}
    names = [group["name"] for group in rule["spec"]["groups"]]
    assert len(names) == len(set(names)), "group names are the CRD's list-map key"
    for group in rule["spec"]["groups"]:
        assert set(group) <= RULE_GROUP_KEYS, group
        assert group["name"]
        assert group["rules"]
        for item in group["rules"]:
            assert set(item) <= RULE_KEYS, item
            assert ("record" in item) != ("alert" in item), item
            assert isinstance(item["expr"], str)
            assert item["expr"].strip()
            assert DURATION.match(item.get("for", "0")), item
            for key in ("labels", "annotations"):
                assert all(isinstance(v, str) for v in item.get(key, {}).values()), item
            if "record" in item:
                assert not {"annotations", "for"} & set(item), item


def test_rules_are_installed_once_not_per_environment() -> None:
    """Only rules/ holds the PrometheusRule, so deploying several environments loads it once."""
    for source in (*CANARIES, "base"):
        assert not of_kind(objects(source), "PrometheusRule"), source
    assert len(objects("rules")) == 1


# --- the renderer ---------------------------------------------------------------------------------


def _kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.skipif(_kustomize_command() is None, reason="neither kustomize nor kubectl is here")
@pytest.mark.parametrize("source", KUSTOMIZATIONS)
def test_renderer_builds_what_kustomize_builds(source: str) -> None:
    """Where kustomize is installed, it builds the same objects as build.py, field for field."""
    command = _kustomize_command()
    assert command is not None
    done = subprocess.run(
        [*command, str(DEPLOY / source)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    theirs = {
        (obj["kind"], obj["metadata"]["name"]): obj
        for obj in yaml.safe_load_all(done.stdout)
        if obj
    }
    ours = {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects(source)}
    assert sorted(ours) == sorted(theirs)
    for key, obj in ours.items():
        assert obj == theirs[key], key


def test_configmap_hash_is_kustomizes() -> None:
    """Generated ConfigMap names end in the hash kustomize 5 gives the same data."""
    # Both computed by kustomize v5.5.0 (kubectl 1.32's) for these data.
    assert build.configmap_hash({"data": {"config.yaml": 'a: 1\nb: "<x>&"\n'}}) == "54dbh7b9dg"
    assert build.configmap_hash({"data": {"config.yaml": "a: 2\n"}}) == "c5c66gchbh"


@pytest.mark.parametrize(
    ("kustomization", "error"),
    [
        ("resources: [cm.yaml]\nnamespace: x\n", "not supported by build.py: namespace"),
        ("resources: [cm.yaml]\ncommonLabels: {a: b}\n", "commonLabels"),
        ("resources: [../outside.yaml]\n", "not a file inside the kustomization"),
        ("resources: [cm.yaml]\npatches: [{path: p.yaml, target: {kind: X}}]\n", "exactly one"),
        ("resources: [cm.yaml]\nconfigMapGenerator: [{name: c, literals: [a=b]}]\n", "literals"),
        ("resources: [pdb.yaml]\n", "kind PodDisruptionBudget is not supported"),
    ],
)
def test_renderer_refuses_what_it_does_not_support(
    tmp_path: Path, kustomization: str, error: str
) -> None:
    """A kustomization outside the renderer's subset is an error naming the feature."""
    (tmp_path / "k").mkdir()
    (tmp_path / "outside.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: o}\n")
    (tmp_path / "k" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
    )
    (tmp_path / "k" / "pdb.yaml").write_text(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: p}\n"
    )
    (tmp_path / "k" / "kustomization.yaml").write_text(kustomization)
    with pytest.raises(build.BuildError, match=re.escape(error)):
        build.render(tmp_path / "k")


def test_render_command_prints_the_objects() -> None:
    """`build.py --render DIR` prints the built objects as YAML documents."""
    done = subprocess.run(
        [sys.executable, str(BUILD), "--render", str(DEPLOY / "overlays" / "staging")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    printed = [obj for obj in yaml.safe_load_all(done.stdout) if obj]
    assert printed == objects("overlays/staging")


# --- schemas --------------------------------------------------------------------------------------


def test_every_object_is_of_a_kind_that_is_checked() -> None:
    """Every object is a core kind (validated below) or an operator kind (checked structurally)."""
    kinds = {obj["kind"] for source in SOURCES for obj in objects(source)}
    assert kinds <= CORE_KINDS | CRD_KINDS, kinds - (CORE_KINDS | CRD_KINDS)
    assert kinds >= CORE_KINDS | CRD_KINDS, "each kind occurs, so none is validated vacuously"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("source", CORE_SOURCES)
def test_core_objects_validate_strictly(source: str, version: str) -> None:
    """Every core object validates against the Kubernetes schema, with no unknown field."""
    core = [obj for obj in objects(source) if obj["kind"] in CORE_KINDS]
    assert core
    for obj in core:
        # Raises ValidationError naming the path and the problem.
        assert kubernetes_validate.validate(obj, version, strict=True) == version


def test_strict_validation_catches_an_unknown_field() -> None:
    """The strict schemas reject a misspelt field, so the validation above is not vacuous."""
    deployment = one(objects("overlays/production"), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


# --- ServiceMonitors and the scrape job -----------------------------------------------------------


@pytest.mark.parametrize("source", CANARIES)
def test_servicemonitor_structure(source: str) -> None:
    """The ServiceMonitor has the CRD's required fields, known ones only, and valid durations."""
    monitor = one(objects(source), "ServiceMonitor")
    assert monitor["apiVersion"] == MONITORING_API
    spec = monitor["spec"]
    assert {"selector", "endpoints"} <= set(spec) <= SERVICE_MONITOR_SPEC, spec
    assert set(spec["selector"]) <= {"matchLabels", "matchExpressions"}
    assert spec["endpoints"]
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= SERVICE_MONITOR_ENDPOINT, endpoint
        assert DURATION.match(endpoint["interval"])
        assert DURATION.match(endpoint["scrapeTimeout"])
        # The operator rejects a scrape timeout longer than the interval.
        assert seconds(endpoint["scrapeTimeout"]) <= seconds(endpoint["interval"])


@pytest.mark.parametrize("source", CANARIES)
def test_servicemonitor_scrapes_the_canary_port(source: str) -> None:
    """The ServiceMonitor selects the canary's Service by its labels and scrapes /metrics on the
    Service port that leads to the canary's listen port."""
    can = canary(source)
    monitor = one(can.objects, "ServiceMonitor")
    services = can.services()
    assert len(services) == 1, f"{source}: one Service should select the canary's pods"
    service = services[0]
    assert selects(monitor["spec"]["selector"]["matchLabels"], labels(service))
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["path"] == "/metrics"
        assert endpoint["port"] in ports, f"the Service has no port named {endpoint['port']}"
        assert can.port(ports[endpoint["port"]]["targetPort"]) == LISTEN_PORT


@pytest.mark.parametrize("source", CANARIES)
def test_scrape_job_is_the_one_the_alerts_select(source: str) -> None:
    """The operator's job label for the canary's Service (jobLabel, else the Service's name) is
    the job RegistryCanaryDown selects, whatever name suffix the Service has."""
    can = canary(source)
    monitor = one(can.objects, "ServiceMonitor")
    (service,) = can.services()
    job = labels(service).get(monitor["spec"].get("jobLabel", ""), service["metadata"]["name"])
    for endpoint in monitor["spec"]["endpoints"]:
        assert not any(r.get("targetLabel") == "job" for r in endpoint.get("relabelings", []))
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    down = next(
        r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "RegistryCanaryDown"
    )
    assert set(re.findall(r'job="([^"]+)"', down["expr"])) == {JOB}
    assert job == JOB


def test_deployable_forms_share_a_namespace_without_clashing() -> None:
    """The overlays, the sharded variant, the sidecar and the rules have distinct names, and each
    Service and ServiceMonitor picks only its own form's pods and Service."""
    everything = {source: objects(source) for source in DEPLOYABLE}
    names = [(o["kind"], o["metadata"]["name"]) for objs in everything.values() for o in objs]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    services = [
        (source, s) for source, objs in everything.items() for s in of_kind(objs, "Service")
    ]
    pods = [
        (source, w["spec"]["template"]["metadata"]["labels"])
        for source, objs in everything.items()
        for w in objs
        if w["kind"] in ("Deployment", "StatefulSet")
    ]
    for source, service in services:
        assert [s for s, pod in pods if selects(service["spec"]["selector"], pod)] == [source]
    for source, objs in everything.items():
        for monitor in of_kind(objs, "ServiceMonitor"):
            matched = [
                s
                for s, svc in services
                if selects(monitor["spec"]["selector"]["matchLabels"], labels(svc))
            ]
            assert matched == [source], (source, matched)


# --- the canary's container -----------------------------------------------------------------------


@pytest.mark.parametrize("source", CANARIES)
def test_ports_agree_with_the_listen_address(source: str) -> None:
    """The container port, $CANARY_LISTEN and the Service's port and targetPort are all 9321."""
    can = canary(source)
    host, port = split_listen(can.env["CANARY_LISTEN"])
    # All interfaces: the kubelet's probes and Prometheus's scrapes come from outside the pod.
    assert (host, port) == ("0.0.0.0", LISTEN_PORT)  # noqa: S104
    assert [p["containerPort"] for p in can.container["ports"]] == [LISTEN_PORT]
    others = [
        p["containerPort"]
        for c in can.pod["containers"]
        if c is not can.container
        for p in c.get("ports", [])
    ]
    assert LISTEN_PORT not in others, "the pod shares one network namespace"
    (service,) = can.services()
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == LISTEN_PORT
    assert can.port(service_port["targetPort"]) == LISTEN_PORT


@pytest.mark.parametrize("source", CANARIES)
def test_probes_use_the_health_endpoints(source: str) -> None:
    """Liveness is /healthz and readiness /readyz on the listen port; a sidecar has no readiness
    probe, since it must never take its registry's pod out of service."""
    can = canary(source)
    liveness = can.container["livenessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    assert can.port(liveness["port"]) == LISTEN_PORT
    if source == SIDECAR:
        assert "readinessProbe" not in can.container
        assert "startupProbe" not in can.container
    else:
        readiness = can.container["readinessProbe"]["httpGet"]
        assert readiness["path"] == "/readyz"
        assert can.port(readiness["port"]) == LISTEN_PORT


@pytest.mark.parametrize("source", CANARIES)
def test_security_context_is_restrictive(source: str) -> None:
    """The canary runs as UID 10001, non-root, read-only, without privilege escalation,
    capabilities or a service account token, under the runtime's seccomp profile."""
    can = canary(source)
    pod_context = can.pod.get("securityContext", {})
    context = {**pod_context, **can.container["securityContext"]}
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == UID
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    container = can.container["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["readOnlyRootFilesystem"] is True
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert not container.get("privileged", False)
    assert can.pod["automountServiceAccountToken"] is False
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not can.pod.get(key, False)


@pytest.mark.parametrize("source", CANARIES)
def test_resources_follow_the_measurements(source: str) -> None:
    """Requests cover the measured memory of a 1,000-image daemon, the memory limit leaves twice
    that, and CPU is unlimited or at least one core."""
    resources = canary(source).container["resources"]
    requests, limits = resources["requests"], resources["limits"]
    assert quantity(requests["cpu"]) > 0
    assert quantity(requests["memory"]) >= MEASURED_PEAK_RSS
    assert quantity(limits["memory"]) >= 2 * MEASURED_PEAK_RSS
    assert quantity(limits["memory"]) > quantity(requests["memory"])
    assert "cpu" not in limits or quantity(limits["cpu"]) >= 1


@pytest.mark.parametrize("source", CANARIES)
def test_image_is_this_release(source: str) -> None:
    """Every canary image is tagged with the package's version."""
    name, tag, digest = build.split_image(canary(source).container["image"])
    assert name.endswith("registry-canary")
    assert (tag, digest) == (__version__, None)


# --- the catalog, with the files the pod mounts ---------------------------------------------------


@pytest.mark.parametrize("source", CANARIES)
def test_catalog_loads_with_the_mounted_files(source: str, tmp_path: Path) -> None:
    """The catalog in the ConfigMap loads in the canary with every file it names found on the
    volumes the pod mounts at those paths, pull secrets included."""
    can = canary(source)
    config, _, _ = load_catalog(can, tmp_path)
    assert list(config.targets())
    for environment in config.environments:
        credentials = environment.credentials()
        assert credentials is not None, f"{environment.name} would pull anonymously"


@pytest.mark.parametrize("source", CANARIES)
def test_registry_credentials_come_from_a_pull_secret(source: str, tmp_path: Path) -> None:
    """Each docker_config the catalog names is the .dockerconfigjson of a Secret of type
    kubernetes.io/dockerconfigjson, mounted at that path, holding an entry for the registry."""
    can = canary(source)
    config, document, mounted = load_catalog(can, tmp_path)
    secrets = example_secrets()
    for raw, environment in zip(document["environments"], config.environments, strict=True):
        path = raw.get("auth", {}).get("docker_config")
        if path is None:
            assert source == SIDECAR, f"{environment.name} should reuse the pull secret"
            continue
        assert path.endswith("/.dockerconfigjson")
        volume = mounted.origins[path]
        secret = secrets[volume["secret"]["secretName"]]
        assert secret["type"] == "kubernetes.io/dockerconfigjson"
        assert environment.auth is not None
        assert environment.auth.docker_config is not None
        assert environment.auth.docker_config.lookup(environment.url) is not None


def test_overlays_ship_no_secret() -> None:
    """No kustomization creates a Secret: they reference the cluster's own by name."""
    for source in KUSTOMIZATIONS:
        assert not of_kind(objects(source), "Secret"), source


def test_example_secrets_are_obviously_fake() -> None:
    """Every value in secrets.example.yaml says it is fake."""
    for secret in example_secrets().values():
        for value in secret_files(secret).values():
            assert "FAKE" in value, secret["metadata"]["name"]


@pytest.mark.parametrize("source", CANARIES)
def test_timing_fits_the_daemon(source: str, tmp_path: Path) -> None:
    """The pod's grace period outlasts the daemon's drain, and a rollout's deadline outlasts the
    first round that makes a new pod ready."""
    can = canary(source)
    config, _, _ = load_catalog(can, tmp_path)
    assert can.pod["terminationGracePeriodSeconds"] > config.daemon.grace_period
    if can.workload["kind"] == "Deployment" and source != SIDECAR:
        deadline = can.workload["spec"].get("progressDeadlineSeconds", PROGRESS_DEADLINE)
        first_round = max(t.interval + t.timeout for t in config.targets())
        assert first_round < deadline / 2


def test_overlays_are_distinct_environments(tmp_path: Path) -> None:
    """Each overlay brings its own catalog, environment names and pull secret."""
    seen_environments: set[str] = set()
    seen_secrets: set[str] = set()
    for source in ("overlays/production", "overlays/staging"):
        can = canary(source)
        config, _, _ = load_catalog(can, tmp_path / source)
        names = {environment.name for environment in config.environments}
        assert not names & seen_environments
        seen_environments |= names
        pull = next(v for v in can.pod["volumes"] if v["name"] == "pull-secret")
        assert pull["secret"]["secretName"] not in seen_secrets
        seen_secrets.add(pull["secret"]["secretName"])


# --- the sharded variant --------------------------------------------------------------------------


def test_statefulset_shards_by_ordinal() -> None:
    """CANARY_SHARD is ordinal/<replicas>, so the pods' hostnames give shards 0..N-1 of N."""
    can = canary("sharded")
    statefulset = can.workload
    assert statefulset["kind"] == "StatefulSet"
    replicas = statefulset["spec"]["replicas"]
    assert replicas > 1
    assert can.env["CANARY_SHARD"] == f"ordinal/{replicas}"
    name = statefulset["metadata"]["name"]
    shards = [parse_shard(can.env["CANARY_SHARD"], hostname=f"{name}-{i}") for i in range(replicas)]
    assert [(s.index, s.count) for s in shards] == [(i, replicas) for i in range(replicas)]
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"


def test_statefulset_is_governed_by_a_headless_service() -> None:
    """The StatefulSet's serviceName is the headless Service that selects its pods."""
    can = canary("sharded")
    (service,) = can.services()
    assert can.workload["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"


def test_statefulset_pod_is_the_base_pod() -> None:
    """The sharded pod template equals the base's but for CANARY_SHARD, resources and the
    environment's pull secret, so the two forms do not drift apart."""

    def template(path: Path, kind: str) -> Obj:
        (workload,) = [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == kind]
        pod: Obj = workload["spec"]["template"]
        container = pod["spec"]["containers"][0]
        container["env"] = [v for v in container["env"] if v["name"] != "CANARY_SHARD"]
        del container["resources"]
        for volume in pod["spec"]["volumes"]:
            volume.get("secret", {}).pop("secretName", None)
        return pod

    base = template(DEPLOY / "base" / "deployment.yaml", "Deployment")
    sharded = template(DEPLOY / "sharded" / "statefulset.yaml", "StatefulSet")
    assert sharded == base
