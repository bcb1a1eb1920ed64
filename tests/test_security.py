"""Security properties: no secret in any output, credentials never follow a redirect to another
origin or scheme, and the daemon's HTTP server is read-only, body-less and bound to loopback."""

from __future__ import annotations

import base64
import ipaddress
import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from canary.config import ConfigError, Daemon, load_config, parse_config, split_listen
from canary.probe import probe_image
from canary.registry.client import RegistryClient
from canary.registry.media import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from canary.results import Hop, Outcome
from canary.testbed import LocalRegistry, TokenAuth, free_port, start_registry
from canary.web import MAX_REQUEST_BYTES, make_app, serve
from tests.conftest import REPO_ROOT, catalog, run_cli, seed_images, to_config, write_config
from tests.daemon_fixtures import DaemonFactory, DaemonProcess, eventually
from tests.fake_gitlab import DEFAULT_CREATED, FakeGitLab, FakeGitLabServer
from tests.fake_registry import FakeRegistry
from tests.token_issuer import TokenIssuer

# Every secret is distinct and plain alphanumeric, so that neither JSON escaping nor URL
# encoding could hide one from a substring search.
BASIC_USER, BASIC_PASSWORD = "basic-robot", "BasicEnvPassword7f3a91c2"
FILE_USER, FILE_PASSWORD = "file-robot", "BasicFilePassword0b8e44d1"
DOCKER_USER, DOCKER_PASSWORD = "docker-robot", "DockerConfigPassword5c2d77e0"
WRONG_PASSWORD = "WrongPassword93ad10f7"
TOKEN_USER, TOKEN_PASSWORD = "token-robot", "TokenFlowPassword1e6b5a38"
GITLAB_TOKEN = "glpatGitLabToken4d9c0e72"
AM_USER, AM_PASSWORD = "am-robot", "AlertmanagerPassword8a1f3b65"
INLINE_PASSWORD = "InlinePassword2c7e9d04"
ENV_VARS = {
    "CANARY_SEC_BASIC": BASIC_PASSWORD,
    "CANARY_SEC_WRONG": WRONG_PASSWORD,
    "CANARY_SEC_TOKEN": TOKEN_PASSWORD,
    "CANARY_SEC_GITLAB": GITLAB_TOKEN,
    "CANARY_SEC_AM": AM_PASSWORD,
}
PROJECT = "group/project"
APP = {"repository": "group/project/app", "tag": "v1", "gitlab_project": PROJECT}
LOST = {"repository": "canary/lost", "tag": "v1"}
SEED_ARGS = ("--layers", "1", "--layer-size", "1KiB")
Client = TestClient[web.Request, web.Application]
HTTP_PATHS = ["/", "/metrics", "/status", "/healthz", "/readyz"]


def b64(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def htpasswd_line(user: str, password: str) -> str:
    done = subprocess.run(
        ["htpasswd", "-Bbn", user, password], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def manifest_digest(registry: LocalRegistry, repository: str, tag: str, auth: str) -> str:
    """The digest the registry serves for a tag, asked with Basic credentials."""
    request = urllib.request.Request(  # noqa: S310 - the test registry's loopback URL
        f"{registry.url}/v2/{repository}/manifests/{tag}",
        headers={
            "Accept": ", ".join([OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX]),
            "Authorization": f"Basic {auth}",
        },
        method="HEAD",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        digest: str = response.headers["Docker-Content-Digest"]
        return digest


def assert_silent(name: str, text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret
        assert secret not in text, f"{name} contains a secret: {secret[:10]}…"


def deliveries(daemon: DaemonProcess, outcome: str) -> float:
    return sum(
        s.value
        for s in daemon.metrics()
        if s.name == "registry_canary_alert_deliveries_total" and s.labels["outcome"] == outcome
    )


@pytest.mark.registry
def test_no_secret_in_any_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With every credential kind in use (Basic from env and file, a docker config, a Bearer
    token flow, a GitLab token, Alertmanager Basic auth, and a wrong password), no password,
    token or encoded credential appears in probe output, daemon logs, endpoints or errors."""
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    htpasswd = secrets_dir / "htpasswd"
    htpasswd.write_text(
        "\n".join(
            htpasswd_line(user, password)
            for user, password in [
                (BASIC_USER, BASIC_PASSWORD),
                (FILE_USER, FILE_PASSWORD),
                (DOCKER_USER, DOCKER_PASSWORD),
            ]
        )
        + "\n"
    )
    password_file = secrets_dir / "registry-password"
    password_file.write_text(FILE_PASSWORD + "\n")
    docker_config = secrets_dir / "dockerconfig.json"
    for name, value in ENV_VARS.items():
        monkeypatch.setenv(name, value)

    with (
        start_registry(tmp_path / "basic", htpasswd=htpasswd) as basic,
        TokenIssuer(tmp_path / "issuer", {TOKEN_USER: TOKEN_PASSWORD}) as issuer,
        start_registry(
            tmp_path / "token",
            token=TokenAuth(issuer.realm, issuer.service, issuer.issuer, issuer.certificate),
        ) as token_registry,
    ):
        # Both registries hold both images; the basic one then loses LOST's blob links, so the
        # daemon has an alert to post (to an Alertmanager that is not there).
        basic_auth = {"username": BASIC_USER, "password_env": "CANARY_SEC_BASIC"}
        token_auth = {"username": TOKEN_USER, "password_env": "CANARY_SEC_TOKEN"}
        for registry, auth, name in [
            (basic, basic_auth, "basic"),
            (token_registry, token_auth, "t"),
        ]:
            seed = write_config(
                tmp_path, catalog(registry.url, [APP, LOST], auth=auth), f"{name}.yaml"
            )
            seed_images(seed, *SEED_ARGS)
        basic.remove_layer_links(LOST["repository"])
        host = f"127.0.0.1:{basic.port}"
        docker_config.write_text(
            json.dumps({"auths": {host: {"auth": b64(DOCKER_USER, DOCKER_PASSWORD)}}})
        )

        gitlab = FakeGitLab(token=GITLAB_TOKEN)
        gitlab.add_repository(PROJECT, APP["repository"])
        digest = manifest_digest(
            basic, APP["repository"], APP["tag"], b64(BASIC_USER, BASIC_PASSWORD)
        )
        gitlab.add_tag(APP["repository"], APP["tag"], digest=digest, created=DEFAULT_CREATED)
        with FakeGitLabServer(gitlab, registry=False) as gitlab_server:
            document: dict[str, Any] = {
                "daemon": {"log_level": "debug"},
                "alerting": {
                    "alertmanager": {
                        "url": f"http://127.0.0.1:{free_port()}",
                        "timeout": "2s",
                        "auth": {"username": AM_USER, "password_env": "CANARY_SEC_AM"},
                    }
                },
                "defaults": {"interval": "1s", "timeout": "10s", "recheck_delay": "100ms"},
                "environments": [
                    {
                        "name": "basic-env",
                        "url": basic.url,
                        "auth": basic_auth,
                        "published_sources": ["config", "gitlab_api"],
                        "gitlab": {
                            "url": gitlab_server.url,
                            "token_env": "CANARY_SEC_GITLAB",
                            "timeout": "5s",
                        },
                    },
                    {
                        "name": "basic-file",
                        "url": basic.url,
                        "auth": {"username": FILE_USER, "password_file": str(password_file)},
                    },
                    {
                        "name": "docker-config",
                        "url": basic.url,
                        "auth": {"docker_config": str(docker_config)},
                    },
                    {
                        "name": "wrong-password",
                        "url": basic.url,
                        "auth": {"username": BASIC_USER, "password_env": "CANARY_SEC_WRONG"},
                    },
                    {"name": "token", "url": token_registry.url, "auth": token_auth},
                ],
                "images": [APP, LOST],
            }
            config_path = write_config(tmp_path, document, "all-credentials.yaml")

            outputs: dict[str, str] = {}
            for output_format in ("text", "json"):
                done = run_cli("probe", "--config", str(config_path), "--format", output_format)
                assert done.returncode == 1, done.stdout + done.stderr
                outputs[f"probe {output_format}"] = done.stdout + done.stderr
            results = {(r["environment"], r["repository"]): r for r in json.loads(done.stdout)}
            # The credentials were really used: every kind got through, the wrong one did not.
            for environment in ("basic-env", "basic-file", "docker-config", "token"):
                assert results[environment, APP["repository"]]["ok"] is True, results
            assert results["wrong-password", APP["repository"]]["outcome"] == "unauthorized"
            assert results["basic-env", LOST["repository"]]["outcome"] == "blob_unknown"
            gitlab_date = [
                p
                for p in results["basic-env", APP["repository"]]["published"]
                if p["source"] == "gitlab_api"
            ]
            assert [p["status"] for p in gitlab_date] == ["ok"], gitlab_date
            assert any(r.kind == "rest" for r in gitlab.requests)

            factory = DaemonFactory(tmp_path / "daemon")
            (tmp_path / "daemon").mkdir()
            try:
                daemon = factory.start("secrets", document)

                def settled() -> None:
                    _, state = daemon.get_json("/status")
                    assert all(image["ok"] is not None for image in state["images"]), state
                    assert deliveries(daemon, "connection_error") >= 1
                    assert daemon.events("alert_delivery_failed")

                eventually(settled, timeout=45)
                for path in ("/", "/status", "/metrics"):
                    status, body = daemon.get(path)
                    assert status == 200
                    outputs[f"daemon {path}"] = body.decode()
            finally:
                factory.stop_all()
            outputs["daemon logs"] = daemon.stdout.read_text(
                encoding="utf-8"
            ) + daemon.stderr.read_text(encoding="utf-8")

        # Errors: a config with unknown keys (and an inline password) beside every secret key.
        environ = dict(ENV_VARS)
        broken = json.loads(json.dumps(document))
        for environment in broken["environments"]:
            environment["auth"]["unknown_key"] = "x"
        broken["environments"][0]["gitlab"]["unknown_key"] = "x"
        broken["environments"][1]["auth"]["password"] = INLINE_PASSWORD
        broken["alerting"]["alertmanager"]["auth"]["unknown_key"] = "x"
        with pytest.raises(ConfigError) as caught:
            parse_config(broken, "broken.yaml", environ)
        assert len(caught.value.problems) >= 7, caught.value.problems
        outputs["ConfigError"] = str(caught.value) + repr(caught.value.problems)
        loaded = load_config(config_path, environ)
        outputs["repr(Config)"] = repr(loaded) + str(loaded)

    tokens = [r.token for r in issuer.received() if r.token]
    assert len(tokens) >= 4, issuer.received()  # seed, two probes and the daemon
    secrets = [
        BASIC_PASSWORD,
        FILE_PASSWORD,
        DOCKER_PASSWORD,
        WRONG_PASSWORD,
        TOKEN_PASSWORD,
        GITLAB_TOKEN,
        AM_PASSWORD,
        INLINE_PASSWORD,
        b64(BASIC_USER, BASIC_PASSWORD),
        b64(BASIC_USER, WRONG_PASSWORD),
        b64(FILE_USER, FILE_PASSWORD),
        b64(DOCKER_USER, DOCKER_PASSWORD),
        b64(TOKEN_USER, TOKEN_PASSWORD),
        b64(AM_USER, AM_PASSWORD),
        *tokens,
        *(token.rsplit(".", 1)[1] for token in tokens),
    ]
    for name, text in outputs.items():
        assert "group/project/app" in text or name == "ConfigError", name
        assert_silent(name, text, secrets)


class TestRedirectTargets:
    @pytest.mark.parametrize(
        "location", ["ftp://127.0.0.1/blob", "file:///etc/passwd", "gopher://127.0.0.1:70/x"]
    )
    async def test_non_http_redirect_refused(self, location: str) -> None:
        """A blob redirected to a non-HTTP URL is invalid_response ("redirect to a non-HTTP
        URL") at the registry hop, and nothing is fetched from there."""
        registry = FakeRegistry()
        image = registry.add_image("canary/app", "v1", [b"layer" * 100])
        layer = image.blob_digests[1]

        async def elsewhere(request: web.Request) -> web.StreamResponse:
            raise web.HTTPTemporaryRedirect(location)

        registry.faults[f"/v2/canary/app/blobs/{layer}"] = elsewhere
        server = TestServer(registry.app(), host="127.0.0.1")
        await server.start_server()
        try:
            document = catalog(
                f"http://127.0.0.1:{server.port}", [{"repository": "canary/app", "tag": "v1"}]
            )
            target = next(to_config(document).targets())
            async with RegistryClient(target.environment) as client:
                result = await probe_image(client, target)
        finally:
            await server.close()
        [failed] = [blob for blob in result.blobs if blob.digest == layer]
        assert failed.outcome is Outcome.INVALID_RESPONSE
        assert failed.hop is Hop.REGISTRY
        assert failed.status == 307
        assert failed.evidence is not None
        assert failed.evidence.detail == "redirect to a non-HTTP URL"
        assert location not in json.dumps(result.to_dict())
        assert result.outcome is Outcome.INVALID_RESPONSE

    @pytest.mark.parametrize("location", ["http://127.0.0.1:99999/blob", "http://[::1/blob"])
    async def test_malformed_redirect_is_a_clear_outcome(self, location: str) -> None:
        """A redirect to a malformed http URL is invalid_response on that blob, with evidence."""
        registry = FakeRegistry()
        image = registry.add_image("canary/app", "v1", [b"layer" * 100])
        layer = image.blob_digests[1]

        async def malformed(request: web.Request) -> web.StreamResponse:
            # Set by hand: aiohttp's HTTPTemporaryRedirect would refuse the URL (a 500).
            return web.Response(status=307, headers={"Location": location})

        registry.faults[f"/v2/canary/app/blobs/{layer}"] = malformed
        server = TestServer(registry.app(), host="127.0.0.1")
        await server.start_server()
        try:
            url = f"http://127.0.0.1:{server.port}"
            document = catalog(url, [{"repository": "canary/app", "tag": "v1"}])
            target = next(to_config(document).targets())
            async with RegistryClient(target.environment) as client:
                result = await probe_image(client, target)
        finally:
            await server.close()
        failed = [blob for blob in result.blobs if blob.digest == layer]
        assert [blob.outcome for blob in failed] == [Outcome.INVALID_RESPONSE], result.to_dict()
        assert failed[0].evidence is not None
        assert "unexpected error" not in failed[0].evidence.detail


class TestConfigErrors:
    @pytest.mark.parametrize(
        ("where", "url"),
        [
            ("environment", "ftp://robot:UrlPassword61c0@registry.example.com"),
            ("alertmanager", "ftp://robot:UrlPassword61c0@alertmanager:9093"),
            ("gitlab", "ftp://robot:UrlPassword61c0@gitlab.example.com"),
            ("alertmanager", "http://alertmanager:9093/?token=UrlPassword61c0"),
            ("gitlab", "https://gitlab.example.com/?private_token=UrlPassword61c0"),
        ],
    )
    def test_no_url_secret_in_config_errors(self, where: str, url: str) -> None:
        """A refused URL's password or query token is not repeated in the ConfigError."""
        document: dict[str, Any] = {
            "environments": [{"name": "local", "url": "https://registry.example.com"}],
            "images": [{"repository": "canary/app", "tag": "v1"}],
        }
        if where == "environment":
            document["environments"][0]["url"] = url
        elif where == "gitlab":
            document["environments"][0]["gitlab"] = {"url": url, "token_env": "T"}
        else:
            document["alerting"] = {"alertmanager": {"url": url}}
        with pytest.raises(ConfigError) as caught:
            parse_config(document, "canary.yaml", {"T": "t"})
        assert "UrlPassword61c0" not in str(caught.value)


def status_document() -> dict[str, Any]:
    return {"environments": [], "images": [], "alerts": {"firing": [], "alertmanagers": 0}}


@pytest.fixture
async def daemon_client() -> Any:
    app = make_app(CollectorRegistry(), lambda: True, lambda: True, lambda: {}, status_document)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


class TestDaemonHttpServer:
    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
    @pytest.mark.parametrize("path", HTTP_PATHS)
    async def test_no_write_methods(self, daemon_client: Client, method: str, path: str) -> None:
        """Every endpoint answers a write method with 405 and allows only GET and HEAD."""
        response = await daemon_client.request(method, path, data=b"{}")
        assert response.status == 405
        assert set(response.headers["Allow"].split(",")) <= {"GET", "HEAD"}

    @pytest.mark.parametrize("path", HTTP_PATHS)
    async def test_reads_still_answer(self, daemon_client: Client, path: str) -> None:
        """The read-only endpoints answer GET (the 405s above are not a broken server)."""
        response = await daemon_client.get(path)
        assert response.status == 200, await response.text()

    @pytest.mark.parametrize("path", HTTP_PATHS)
    async def test_large_body_refused(self, daemon_client: Client, path: str) -> None:
        """A request with a body larger than 16 KiB is refused with 413."""
        response = await daemon_client.get(path, data=b"x" * (MAX_REQUEST_BYTES + 1024))
        assert response.status == 413

    async def test_large_write_refused(self, daemon_client: Client) -> None:
        """A POST with a body larger than 16 KiB is refused (405 or 413), never accepted."""
        response = await daemon_client.post("/status", data=b"x" * (MAX_REQUEST_BYTES + 1024))
        assert response.status in (405, 413)

    async def test_serve_binds_only_the_given_host(self) -> None:
        """`serve` listens on exactly the host it is given, here loopback."""
        app = make_app(CollectorRegistry(), lambda: True, lambda: True, lambda: {}, status_document)
        runner = await serve(app, "127.0.0.1", 0)
        try:
            hosts = {address[0] for address in runner.addresses}
        finally:
            await runner.cleanup()
        assert hosts == {"127.0.0.1"}


class TestListenDefaults:
    def test_daemon_default_is_loopback(self) -> None:
        """daemon.listen defaults to 127.0.0.1:9321."""
        assert Daemon().listen == "127.0.0.1:9321"
        assert split_listen(Daemon().listen) == ("127.0.0.1", 9321)

    @pytest.mark.parametrize("name", ["example.yaml", "demo.yaml"])
    def test_example_configs_bind_loopback(self, name: str) -> None:
        """The example configs listen on a loopback address (or leave the loopback default)."""
        document = yaml.safe_load((REPO_ROOT / "config" / name).read_text())
        listen = (document.get("daemon") or {}).get("listen", Daemon().listen)
        host, _ = split_listen(listen)
        assert ipaddress.ip_address(host).is_loopback, listen

    def test_container_listens_on_all_interfaces(self) -> None:
        """The Dockerfile sets CANARY_LISTEN=0.0.0.0:9321, so the container is reachable."""
        dockerfile = (REPO_ROOT / "Dockerfile").read_text()
        assert "CANARY_LISTEN=0.0.0.0:9321" in dockerfile.split()
