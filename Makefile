# Every target installs what it needs: Debian packages when missing, and a venv from the lock.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEBIAN_PACKAGES := docker-registry skopeo umoci containerd apache2-utils curl ca-certificates time openssl \
	chromium libatomic1 \
	prometheus prometheus-alertmanager
SOURCES := canary tests benchmarks dashboards deploy

.PHONY: test demo bench soak audit lint typecheck unit sysdeps venv lock clean

sysdeps:
	@scripts/ensure-debian-packages $(DEBIAN_PACKAGES)

$(BIN)/.installed: pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "registry-canary needs Python 3.11 or newer (set PYTHON=...)" >&2; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || \
		{ rm -rf $(VENV); scripts/ensure-debian-packages python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed

lint: venv
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/hadolint --no-color Dockerfile

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q -m "not registry"

test: sysdeps venv lint typecheck
	$(BIN)/pytest -q

demo: sysdeps venv
	$(BIN)/python -m canary.demo

bench: sysdeps venv
	$(BIN)/python benchmarks/pull.py && $(BIN)/python benchmarks/daemon.py && $(BIN)/python benchmarks/alerting.py && $(BIN)/python benchmarks/published.py && $(BIN)/python benchmarks/statuspage.py && $(BIN)/python benchmarks/diagnosis.py && $(BIN)/python benchmarks/shapes.py

# The daemon for a bounded time (default 10m) against the real registry behind the fault proxy,
# cycling through faults: RSS, file descriptors, loop responsiveness, no probe lost or stuck.
soak: sysdeps venv
	$(BIN)/python benchmarks/soak.py $(SOAK_ARGS)

# Known vulnerabilities in the locked dependencies. Needs the network (PyPI's advisory data), so
# it is not part of `make test`; pip-audit itself is not a project dependency.
# It runs from a venv of its own, so it never enters the project's venv or lock.
audit:
	@test -x .venv-audit/bin/pip-audit || { $(PYTHON) -m venv .venv-audit && \
		.venv-audit/bin/pip install -q --disable-pip-version-check "pip-audit==2.10.1"; }
	.venv-audit/bin/pip-audit --strict --disable-pip --no-deps -r requirements.lock

# Refresh the lock after changing dependencies in pyproject.toml.
lock: venv
	$(BIN)/pip freeze --exclude-editable --disable-pip-version-check > requirements.lock

clean:
	rm -rf $(VENV) .venv-audit .mypy_cache .ruff_cache .pytest_cache *.egg-info
