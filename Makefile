# Front door: `make demo` starts the relay on simulated cameras, `make test` runs every check.
# Both work on a fresh machine with Python, pip, make and apt: they create .venv and
# install what they need once (a second run needs no network).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav \
	iproute2 util-linux

.PHONY: all test demo lint typecheck system-deps clean dist bench

all: test

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --config-settings editable_mode=compat -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Test-only system tools (ffmpeg/ffprobe, an RTSP test source, ip/unshare); apt when missing.
system-deps:
	@missing=""; \
	command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing=1; \
	/usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer" 2>/dev/null || missing=1; \
	command -v ip >/dev/null && command -v unshare >/dev/null || missing=1; \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES); \
	fi

typecheck: $(STAMP)
	$(BIN)/mypy --strict atomrelay

test: system-deps $(STAMP) typecheck
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/atomrelay demo

clean:
	rm -rf $(VENV) build dist *.egg-info
