# Front door: `make demo` starts the relay on simulated cameras, `make test` runs every check.
# Both work on a fresh machine with Python, pip, make and apt: they create .venv and
# install what they need once (a second run needs no network).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DIST_STAMP := $(VENV)/.installed-dist
APT_PACKAGES := ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav \
	iproute2 util-linux systemd curl wrk chromium

# The frozen executable (PyInstaller; build on the target: it does not cross-compile).
ONEDIR := dist/atomrelay/atomrelay
ONEFILE := dist/onefile/atomrelay
FROZEN_SOURCES := atomrelay.spec setup.cfg $(shell find atomrelay -type f -not -name '*.pyc' 2>/dev/null)
# `make test FROZEN_TEST=no` leaves out the frozen build and its smoke test.
FROZEN_TEST ?= yes

.PHONY: all test demo lint typecheck system-deps clean dist frozen-test bench venv soak

all: test

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --config-settings editable_mode=compat -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# PyInstaller, only for `make dist` / `make frozen-test`.
$(DIST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --config-settings editable_mode=compat -e '.[test,dist]'
	touch $(DIST_STAMP)

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
ifeq ($(FROZEN_TEST),yes)
	@$(MAKE) --no-print-directory frozen-test
endif

$(ONEDIR): $(DIST_STAMP) $(FROZEN_SOURCES)
	$(BIN)/pyinstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller atomrelay.spec
	touch $(ONEDIR)

$(ONEFILE): $(DIST_STAMP) $(FROZEN_SOURCES)
	$(BIN)/pyinstaller --noconfirm --log-level WARN --distpath dist/onefile --workpath build/pyinstaller-onefile \
		atomrelay.spec -- --onefile
	touch $(ONEFILE)

# dist/atomrelay/ (onedir: copy the directory to /opt/atomrelay) and dist/onefile/atomrelay.
dist: $(ONEDIR) $(ONEFILE)
	@du -sh dist/atomrelay $(ONEFILE)

# Build the onedir bundle (if sources changed) and smoke-test it from outside the source tree.
frozen-test: $(STAMP) $(ONEDIR)
	ATOMRELAY_FROZEN=$(abspath $(ONEDIR)) $(BIN)/python -m pytest -q tests/packaging/test_frozen.py

# Benchmarks, not part of `make test` or CI (~7 min): writes benchmarks/results.md. Installs wrk
# (apt) and py-spy (pip, into .venv) when missing.
bench: $(STAMP)
	@command -v wrk >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk; }
	@test -x $(BIN)/py-spy || $(BIN)/pip install --quiet py-spy || echo "py-spy not installed: the profile is skipped"
	$(BIN)/python benchmarks/run_all.py

demo: $(STAMP)
	$(BIN)/atomrelay demo

clean:
	rm -rf $(VENV) build dist *.egg-info

# Soak test, not part of `make test` (10 min by default; `make soak SOAK_SECONDS=60` for a short run).
SOAK_SECONDS ?= 600
soak: $(STAMP)
	ATOMRELAY_SOAK=1 ATOMRELAY_SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/python -m pytest -q -s tests/robustness/test_soak.py
