# Front door: `make demo` starts the relay on simulated cameras, `make test` runs every check.
# Both work on a fresh machine with Python, pip, make and apt: they create .venv and
# install what they need once (a second run needs no network).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed
APT_PACKAGES := ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav \
	iproute2 util-linux systemd curl wrk chromium

# The suite runs a second time against the oldest releases setup.cfg allows (Twisted's floor).
OLDEST := .venv-oldest
OLDEST_STAMP := $(OLDEST)/.installed

# The frozen executable (PyInstaller; build on the target: it does not cross-compile), built in
# its own venv from the hashed lock: the relay's runtime packages and PyInstaller, nothing else.
DIST_VENV := .venv-dist
DIST_STAMP := $(DIST_VENV)/.installed
LOCK := packaging/requirements-frozen.txt
ONEDIR := dist/atomrelay/atomrelay
ONEFILE := dist/onefile/atomrelay
FROZEN_SOURCES := atomrelay.spec $(LOCK) $(shell find atomrelay -type f -not -name '*.pyc' 2>/dev/null)
# `make test FROZEN_TEST=no` leaves out the frozen build and its smoke test.
FROZEN_TEST ?= yes

.PHONY: FORCE all test test-oldest demo lint typecheck system-deps clean dist frozen-test bench venv soak lock \
	deb deb-test release arm64-check

all: test

# What the relay needs to run (`make demo`): the package and its runtime dependencies.
$(RUN_STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --config-settings editable_mode=compat -e .
	touch $(RUN_STAMP)

# Everything `make test` needs on top (pytest, mypy, ONVIF clients, ...).
$(STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet --config-settings editable_mode=compat -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

$(OLDEST_STAMP): setup.cfg pyproject.toml packaging/constraints-oldest.txt
	test -x $(OLDEST)/bin/python || $(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/pip install --quiet --upgrade pip
	$(OLDEST)/bin/pip install --quiet --config-settings editable_mode=compat \
		-c packaging/constraints-oldest.txt -e '.[test]'
	touch $(OLDEST_STAMP)

# Exactly the packages and hashes of the lock, in a new venv each time the lock changes
# (PyInstaller reads the relay itself from the source tree).
$(DIST_STAMP): $(LOCK)
	rm -rf $(DIST_VENV) && $(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/pip install --quiet --require-hashes --no-deps --only-binary :all: -r $(LOCK)
	touch $(DIST_STAMP)

# Regenerate the lock after changing setup.cfg's dependencies (pip-tools in a throw-away venv;
# hashes of every published file of each pinned release, so one lock serves amd64 and arm64).
lock:
	rm -rf build/lock && $(PYTHON) -m venv build/lock
	build/lock/bin/pip install --quiet pip-tools
	CUSTOM_COMPILE_COMMAND="make lock" build/lock/bin/pip-compile --quiet --generate-hashes --allow-unsafe \
		--strip-extras --extra dist --no-emit-index-url --no-emit-find-links --output-file $(LOCK) setup.cfg

# Test-only system tools (ffmpeg/ffprobe, an RTSP test source, ip/unshare, systemd-analyze, curl, wrk,
# headless chromium); apt when missing.
system-deps:
	@missing=""; \
	command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing=1; \
	/usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer" 2>/dev/null || missing=1; \
	command -v ip >/dev/null && command -v unshare >/dev/null || missing=1; \
	command -v systemd-analyze >/dev/null || missing=1; \
	command -v curl >/dev/null && command -v wrk >/dev/null || missing=1; \
	command -v chromium >/dev/null || missing=1; \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES); \
	fi

typecheck: $(STAMP)
	$(BIN)/mypy --strict atomrelay

test: system-deps $(STAMP) typecheck
	$(BIN)/python -m pytest -q tests --ignore=tests/packaging/test_frozen.py -m "not aio"
	$(BIN)/python -m pytest -q tests --ignore=tests/packaging/test_frozen.py -m aio --reactor=asyncio
	@$(MAKE) --no-print-directory test-oldest
ifeq ($(FROZEN_TEST),yes)
	@$(MAKE) --no-print-directory frozen-test
endif

# The same suite on the oldest Twisted (and treq, lxml, PyYAML) that setup.cfg accepts.
test-oldest: system-deps $(OLDEST_STAMP)
	$(OLDEST)/bin/python -c "import twisted, treq; print('oldest declared: Twisted', twisted.__version__, 'treq', treq.__version__)"
	$(OLDEST)/bin/python -m pytest -q tests --ignore=tests/packaging/test_frozen.py -m "not aio"
	$(OLDEST)/bin/python -m pytest -q tests --ignore=tests/packaging/test_frozen.py -m aio --reactor=asyncio

# Changes when the checked-out commit (or a tracked file) does: the bundle names its commit.
build/source-commit: FORCE
	@mkdir -p build; { git rev-parse HEAD; git status --porcelain --untracked-files=no; } > $@.new 2>/dev/null; \
	if cmp -s $@.new $@; then rm $@.new; else mv $@.new $@; fi

$(ONEDIR): $(DIST_STAMP) $(FROZEN_SOURCES) build/source-commit
	$(DIST_VENV)/bin/pyinstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller atomrelay.spec
	touch $(ONEDIR)

$(ONEFILE): $(DIST_STAMP) $(FROZEN_SOURCES) build/source-commit
	$(DIST_VENV)/bin/pyinstaller --noconfirm --log-level WARN --distpath dist/onefile --workpath build/pyinstaller-onefile \
		atomrelay.spec -- --onefile
	touch $(ONEFILE)

# dist/atomrelay/ (onedir: copy the directory to /opt/atomrelay) and dist/onefile/atomrelay.
dist: $(ONEDIR) $(ONEFILE)
	@du -sh dist/atomrelay $(ONEFILE)

# Build the onedir bundle (if sources changed) and smoke-test it from outside the source tree.
frozen-test: system-deps $(STAMP) $(ONEDIR)
	ATOMRELAY_FROZEN=$(abspath $(ONEDIR)) $(BIN)/python -m pytest -q tests/packaging/test_frozen.py

# dist/atomrelay_<version>_<arch>.deb from the onedir bundle (dpkg-deb only; see packaging/deb/).
deb: $(ONEDIR)
	packaging/build-deb.sh

# Builds the .deb and installs it into throw-away debootstrap roots (as root, ~2 min): files, user,
# modes, unit, --version and check from the installed path, upgrade, remove, purge, lintian.
# Not part of `make test` (it needs root); .ci/run runs it after `make test`.
deb-test: $(STAMP) $(ONEDIR)
	@command -v debootstrap >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq debootstrap; }
	@command -v lintian >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq lintian; }
	deb=$$(packaging/build-deb.sh) && ATOMRELAY_DEB=$(CURDIR)/$$deb $(BIN)/python -m pytest -q tests/packaging/test_deb.py

# For the machine it runs on: the onedir tarball, the onefile binary and the .deb, with SHA256SUMS.
release: dist deb
	@set -e; version=$$(sed -n 's/^__version__ = "\(.*\)"$$/\1/p' atomrelay/__init__.py); \
	arch=$$(dpkg --print-architecture); mkdir -p dist/release; rm -f dist/release/*; \
	tar -C dist --owner=0 --group=0 --sort=name -czf dist/release/atomrelay-$$version-linux-$$arch.tar.gz atomrelay; \
	cp $(ONEFILE) dist/release/atomrelay-$$version-linux-$$arch; \
	cp dist/atomrelay_$${version}_$$arch.deb dist/release/; \
	cd dist/release && sha256sum * > SHA256SUMS && cat SHA256SUMS

# arm64 Debian bookworm under qemu-user-static: the README's build and install steps, then the
# installed demo answers ONVIF (not in CI; 15-30 min; see packaging/arm64.md).
arm64-check:
	packaging/arm64-check.sh

# Benchmarks, not part of `make test` or CI (~7 min): writes benchmarks/results.md. Installs wrk
# (apt) and py-spy (pip, into .venv) when missing.
bench: $(STAMP)
	@command -v wrk >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk; }
	@test -x $(BIN)/py-spy || $(BIN)/pip install --quiet py-spy || echo "py-spy not installed: the profile is skipped"
	$(BIN)/python benchmarks/run_all.py

demo: $(RUN_STAMP)
	$(BIN)/atomrelay demo

clean:
	rm -rf $(VENV) $(OLDEST) $(DIST_VENV) build dist *.egg-info

# Soak test, not part of `make test` (10 min by default; `make soak SOAK_SECONDS=60` for a short run).
SOAK_SECONDS ?= 600
soak: $(STAMP)
	ATOMRELAY_SOAK=1 ATOMRELAY_SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/python -m pytest -q -s tests/robustness/test_soak.py
