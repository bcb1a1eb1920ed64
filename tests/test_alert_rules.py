"""The Prometheus alert pack in config/prometheus/rules.yml: promtool accepts it, the promtool unit
tests in tests/rules/ pass against it, and those tests fail when a rule is broken."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.registry  # promtool and Alertmanager come from `make sysdeps`

RULES = REPO_ROOT / "config" / "prometheus" / "rules.yml"
RULE_TESTS = REPO_ROOT / "tests" / "rules"
TEST_FILES = [
    "blob_unknown.test.yml",
    "canary_health.test.yml",
    "diagnosis.test.yml",
    "pulls_and_slo.test.yml",
    "referrers.test.yml",
]
# How every test file names the shipped rules: promtool resolves it from the test file's directory.
RULES_REFERENCE = "../../config/prometheus/rules.yml"

# (test file, text of rules.yml, its broken replacement, the alert whose test must then fail)
BREAKAGES = [
    pytest.param(
        "blob_unknown.test.yml",
        "expr: environment_repository:registry_canary_image_blobs_unknown:max > 0\n",
        "expr: environment_repository:registry_canary_image_blobs_unknown:max > 2\n",
        "RegistryCanaryBlobUnknown",
        id="blob-unknown-threshold",
    ),
    pytest.param(
        "blob_unknown.test.yml",
        "              >= 0.5\n",
        "              > 0.5\n",
        "RegistryCanaryBlobUnknownWidespread",
        id="widespread-half",
    ),
    pytest.param(
        "canary_health.test.yml",
        "registry_canary_image_last_probe_timestamp_seconds\n              > 3 *",
        "registry_canary_image_last_probe_timestamp_seconds\n              > 4 *",
        "RegistryCanaryStale",
        id="stale-intervals",
    ),
    pytest.param(
        "pulls_and_slo.test.yml",
        "            > 14.4 * (1 - scalar(registry_canary:pull_success:objective))\n          and",
        "            > 10 * (1 - scalar(registry_canary:pull_success:objective))\n          and",
        "RegistryCanaryErrorBudgetBurn",
        id="burn-rate-factor",
    ),
    pytest.param(
        "diagnosis.test.yml",
        '{signature="legacy_data_unreadable"}) == 1\n',
        '{signature="legacy_data_unreadable"}) > 1\n',
        "RegistryCanaryLegacyDataUnreadable",
        id="legacy-data-unreadable-threshold",
    ),
    pytest.param(
        "diagnosis.test.yml",
        "expr: registry_canary_control_pull_success == 0\n        for: 10m\n",
        "expr: registry_canary_control_pull_success == 0\n        for: 9m\n",
        "RegistryCanaryControlFailing",
        id="control-failing-for",
    ),
    pytest.param(
        "diagnosis.test.yml",
        "(registry_canary_tag_digest_matches_pin) == 0\n        for: 15m\n",
        "(registry_canary_tag_digest_matches_pin) == 0\n        for: 14m\n",
        "RegistryCanaryTagDigestDrift",
        id="tag-digest-drift-for",
    ),
    pytest.param(
        "referrers.test.yml",
        "(registry_canary_image_referrer_requirement_met) == 0\n",
        "(registry_canary_image_referrer_requirement_met) < 0\n",
        "RegistryCanaryReferrerMissing",
        id="referrer-missing-threshold",
    ),
    pytest.param(
        "referrers.test.yml",
        "min by (environment, repository, tag, requirement) (registry_canary_image_referrer",
        "max by (environment, repository, tag, requirement) (registry_canary_image_referrer",
        "RegistryCanaryReferrerMissing",
        id="referrer-missing-any-replica",
    ),
    pytest.param(
        "diagnosis.test.yml",
        "expr: registry_canary_budget_sufficient == 0\n        for: 1h\n",
        "expr: registry_canary_budget_sufficient == 0\n        for: 59m\n",
        "RegistryCanaryBudgetInsufficient",
        id="budget-insufficient-for",
    ),
    pytest.param(
        "diagnosis.test.yml",
        "            > registry_canary_budget_full_verify_within_seconds\n",
        "            >= registry_canary_budget_full_verify_within_seconds\n",
        "RegistryCanaryFullVerificationOverdue",
        id="full-verification-overdue-comparison",
    ),
]


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not on PATH: `make sysdeps` installs it (Debian prometheus)")
    return path


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, timeout=120, check=False
    )


def report(result: subprocess.CompletedProcess[str]) -> str:
    command = " ".join(result.args)
    return f"{command} exited {result.returncode}\n{result.stdout}\n{result.stderr}"


def promtool_test(promtool: str, test_file: Path) -> subprocess.CompletedProcess[str]:
    """`promtool test rules`; it only warns about a rule file it cannot find, so that is refused."""
    result = run(promtool, "test", "rules", test_file)
    assert "no file match pattern" not in result.stderr, report(result)
    return result


def test_rules_pass_promtool_check(promtool: str) -> None:
    """`promtool check rules` accepts the shipped alert pack."""
    result = run(promtool, "check", "rules", RULES)
    assert result.returncode == 0, report(result)


def test_every_rule_test_file_runs_against_the_shipped_rules() -> None:
    """Every file in tests/rules/ is run below and loads exactly the shipped rules.yml."""
    assert sorted(p.name for p in RULE_TESTS.glob("*.yml")) == TEST_FILES
    assert (RULE_TESTS / RULES_REFERENCE).resolve() == RULES.resolve()
    for name in TEST_FILES:
        rule_files = yaml.safe_load((RULE_TESTS / name).read_text())["rule_files"]
        assert rule_files == [RULES_REFERENCE], name


@pytest.mark.parametrize("name", TEST_FILES)
def test_promtool_unit_tests_pass(promtool: str, name: str) -> None:
    """The promtool unit tests of the file pass against the shipped rules."""
    result = promtool_test(promtool, RULE_TESTS / name)
    assert result.returncode == 0, report(result)


@pytest.mark.parametrize(("name", "rule", "broken", "alert"), BREAKAGES)
def test_promtool_unit_tests_catch_a_broken_rule(
    promtool: str, tmp_path: Path, name: str, rule: str, broken: str, alert: str
) -> None:
    """A copy of the test file passes against a copy of the rules, and fails once a rule breaks."""
    rules = RULES.read_text()
    assert rules.count(rule) == 1, f"{rule!r} no longer occurs exactly once in {RULES}"
    source = (RULE_TESTS / name).read_text()
    assert source.count(RULES_REFERENCE) == 1
    for variant, text in (("intact", rules), ("broken", rules.replace(rule, broken))):
        copy = tmp_path / variant
        copy.mkdir()
        (copy / "rules.yml").write_text(text)
        (copy / name).write_text(source.replace(RULES_REFERENCE, "rules.yml"))
        result = promtool_test(promtool, copy / name)
        if variant == "intact":
            assert result.returncode == 0, report(result)
        else:
            check = run(promtool, "check", "rules", copy / "rules.yml")
            assert check.returncode == 0, report(check)  # still valid, only wrong
            assert result.returncode != 0, report(result)
            assert alert in result.stderr, report(result)
