"""Config validation: every invalid file names its key and reason; valid files load frozen."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from canary.config import BlobCheck, ConfigError, load_config
from canary.schema import parse_duration
from tests.conftest import REPO_ROOT, run_cli, to_config

INVALID = Path(__file__).parent / "configs" / "invalid"
CASES = sorted(INVALID.glob("*.yaml"))


def expected_problems(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return [
        line.removeprefix("# error: ").replace("{dir}", str(path.parent))
        for line in lines
        if line.startswith("# error: ")
    ]


class TestInvalidFiles:
    @pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
    def test_exact_messages(self, path: Path) -> None:
        """Each invalid file fails with exactly the problems its header lists."""
        with pytest.raises(ConfigError) as caught:
            load_config(path, environ={"HOME": "/root"})
        rendered = [f"{loc}: {reason}" if loc else reason for loc, reason in caught.value.problems]
        assert rendered == expected_problems(path)

    def test_every_case_states_its_expectation(self) -> None:
        """No invalid file is missing its expected messages, so none passes vacuously."""
        assert len(CASES) >= 15
        for path in CASES:
            assert expected_problems(path), path.name

    def test_check_config_exits_2_and_lists_every_problem(self) -> None:
        """`check-config` on a bad file exits 2 and prints each problem with its location."""
        done = run_cli("check-config", str(INVALID / "bad-duration.yaml"))
        assert done.returncode == 2
        assert "defaults.interval: '60 seconds' is not a duration" in done.stderr
        assert "defaults.timeout: duration 30 needs a unit" in done.stderr

    def test_missing_file(self, tmp_path: Path) -> None:
        """A config path that does not exist is a config error, not a traceback."""
        done = run_cli("check-config", str(tmp_path / "absent.yaml"))
        assert done.returncode == 2
        assert "cannot read the file" in done.stderr
        assert "Traceback" not in done.stderr


def minimal(**image: object) -> dict[str, object]:
    return {
        "environments": [{"name": "production", "url": "https://registry.example.com"}],
        "images": [{"repository": "canary/alpine", "tag": "2023-05", **image}],
    }


# The secrets config/example.yaml names by environment variable.
EXAMPLE_SECRETS = {"CANARY_PASSWORD": "x", "CANARY_GITLAB_TOKEN": "t"}


class TestValidFiles:
    def test_example_configs_are_valid(self) -> None:
        """Every shipped example catalog passes check-config."""
        for path in sorted((REPO_ROOT / "config").glob("*.yaml")):
            done = run_cli("check-config", str(path), env=EXAMPLE_SECRETS)
            assert done.returncode == 0, done.stderr
            assert "valid" in done.stdout

    def test_check_config_summarises_the_catalog_and_alerting(self) -> None:
        """check-config says how much the daemon will probe and where it posts alerts."""
        path = REPO_ROOT / "config" / "example.yaml"
        done = run_cli("check-config", str(path), env=EXAMPLE_SECRETS)
        assert done.stdout == (
            f"{path}: valid: 2 environments, 7 images, 11 probes per round, "
            "alerts posted to 2 Alertmanager(s)\n"
        )

    def test_defaults_and_overrides_resolve_per_target(self, tmp_path: Path) -> None:
        """Targets take image settings over environment settings over defaults."""
        path = tmp_path / "c.yaml"
        path.write_text(
            "defaults: {interval: 2m, timeout: 500ms, blob_check: range}\n"
            "environments:\n"
            "  - {name: a, url: 'http://127.0.0.1:5000', interval: 90s}\n"
            "  - {name: b, url: 'https://r.example.com:8443/'}\n"
            "images:\n"
            "  - {repository: x/y, tag: '1', blob_check: head, timeout: 1h}\n"
            "  - {repository: x/z, tag: '1', environments: [b]}\n"
        )
        config = load_config(path)
        targets = {(t.environment.name, t.image.repository): t for t in config.targets()}
        assert set(targets) == {("a", "x/y"), ("b", "x/y"), ("b", "x/z")}
        assert targets["a", "x/y"].interval == 90.0
        assert targets["a", "x/y"].timeout == 3600.0
        assert targets["a", "x/y"].blob_check is BlobCheck.HEAD
        assert targets["b", "x/z"].interval == 120.0
        assert targets["b", "x/z"].timeout == 0.5
        assert targets["b", "x/z"].blob_check is BlobCheck.RANGE
        assert config.environment("b").url == "https://r.example.com:8443"
        assert [t.image.repository for t in config.targets(("a",))] == ["x/y"]

    def test_models_are_frozen(self, tmp_path: Path) -> None:
        """A loaded config cannot be changed in place."""
        path = tmp_path / "c.yaml"
        path.write_text(json.dumps(minimal()))
        config = load_config(path)
        with pytest.raises(ValidationError):
            config.images[0].tag = "other"  # type: ignore[misc]

    def test_secrets_are_read_and_never_printed(self, tmp_path: Path) -> None:
        """password_env, password_file and docker_config are read at load and masked in reprs."""
        (tmp_path / "pw").write_text("file-secret\n")
        auth = base64.b64encode(b"robot:docker-secret").decode()
        (tmp_path / "docker.json").write_text(
            json.dumps({"auths": {"https://registry.example.com": {"auth": auth}}})
        )
        document = {
            "environments": [
                {
                    "name": "a",
                    "url": "https://registry.example.com",
                    "auth": {"username": "u", "password_env": "PW"},
                },
                {
                    "name": "b",
                    "url": "https://registry.example.com",
                    "auth": {"username": "u", "password_file": "pw"},
                },
                {
                    "name": "c",
                    "url": "https://registry.example.com",
                    "auth": {"docker_config": "docker.json"},
                },
            ],
            "images": [{"repository": "x/y", "tag": "1"}],
        }
        path = tmp_path / "c.yaml"
        path.write_text(json.dumps(document))
        config = load_config(path, environ={"PW": "env-secret"})
        creds = {env.name: env.credentials() for env in config.environments}
        assert {n: (u, p.get_secret_value()) for n, (u, p) in creds.items()} == {
            "a": ("u", "env-secret"),
            "b": ("u", "file-secret"),
            "c": ("robot", "docker-secret"),
        }
        text = repr(config) + str(config)
        for secret in ("env-secret", "file-secret", "docker-secret"):
            assert secret not in text


class TestDurations:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1.5s", 1.5)],
    )
    def test_units(self, text: str, seconds: float) -> None:
        """Each documented unit converts to seconds."""
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize("text", ["0s", "-1s", "5", "5d", "", "1h30m"])
    def test_rejected(self, text: str) -> None:
        """Zero, negative, unit-less and unknown-unit durations are refused."""
        with pytest.raises(ValueError, match="duration"):
            parse_duration(text)


class TestDataShapes:
    def test_per_image_settings_override_defaults_and_environment(self) -> None:
        """published_sources (even empty), foreign_layers and referrers resolve per image."""
        document = {
            "defaults": {"foreign_layers": "urls", "referrers": {"require": ["signature"]}},
            "environments": [
                {
                    "name": "production",
                    "url": "https://registry.example.com",
                    "published_sources": ["config", "gitlab_registry_api"],
                }
            ],
            "images": [
                {"repository": "canary/alpine", "tag": "1"},
                {
                    "repository": "canary/chart",
                    "tag": "1",
                    "published_sources": [],
                    "foreign_layers": "skip",
                    "referrers": {"enabled": False},
                },
                {"repository": "canary/sbom", "tag": "1", "referrers": {"require": ["sbom"]}},
            ],
        }
        plain, chart, sbom = to_config(document).targets()
        assert plain.published_sources == ("config", "gitlab_registry_api")
        assert plain.foreign_layers == "urls"
        assert plain.referrers is not None
        assert plain.referrers.require == ("signature",)
        assert chart.published_sources == ()
        assert chart.foreign_layers == "skip"
        assert chart.referrers is None
        assert sbom.referrers is not None
        assert sbom.referrers.require == ("sbom",)

    def test_defaults_check_no_referrers_and_skip_foreign_layers(self) -> None:
        (target,) = to_config(minimal()).targets()
        assert target.referrers is None
        assert target.foreign_layers == "skip"
        assert target.published_sources == ("config",)

    def test_media_type_requirements(self) -> None:
        """Any artifact media type can be required, beside the three named kinds."""
        (target,) = to_config(
            minimal(referrers={"require": ["application/vnd.example.report.v1+json", "sbom"]})
        ).targets()
        assert target.referrers is not None
        assert target.referrers.require == ("application/vnd.example.report.v1+json", "sbom")
