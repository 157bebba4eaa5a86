"""Smoke test of the frozen onedir bundle, run from a directory without the source tree.

``make frozen-test`` builds the bundle (``dist/atomrelay/``) and points
``$ATOMRELAY_FROZEN`` at its executable; then a missing bundle is a failure. In a
plain pytest run the bundle is built into a temporary directory when PyInstaller is
installed, and the tests are skipped when it is not.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, ssl
from twisted.internet.utils import getProcessOutputAndValue

from atomrelay import __version__
from tests.helpers import certificate, free_port, poll, soap
from tests.test_cli import Collect, answers, checkout_commit

from .conftest import METRICS
from .support import ROOT, exec_start, relay_settings, start_simulators, write_config

pytestmark = pytest.mark.integration

FROZEN_ENV = "ATOMRELAY_FROZEN"
GET_PROFILES = soap('<GetProfiles xmlns="http://www.onvif.org/ver10/media/wsdl"/>')


def _build(into: Path) -> Path:
    """Build the onedir bundle from the source tree into ``into``; its executable."""
    pyinstaller = Path(sys.executable).parent / "pyinstaller"
    subprocess.run(
        [str(pyinstaller), "--noconfirm", "--log-level", "WARN", "--distpath", str(into / "dist"),
         "--workpath", str(into / "build"), str(ROOT / "atomrelay.spec")],
        check=True, cwd=ROOT, capture_output=True, timeout=600,
    )
    return into / "dist" / "atomrelay" / "atomrelay"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Path]:
    """The bundle's executable, copied to ``<tmp>/opt/atomrelay/`` as the unit installs it."""
    given = os.environ.get(FROZEN_ENV)
    if given:
        executable = Path(given)
        if not executable.is_file():
            pytest.fail(f"${FROZEN_ENV}={given} does not exist: run `make dist` first")
    elif importlib.util.find_spec("PyInstaller") is None:
        pytest.skip("PyInstaller is not installed: `make frozen-test` installs it and builds the bundle "
                    "(or pip install -e '.[dist]')")
    else:
        executable = _build(tmp_path_factory.mktemp("pyinstaller"))
    target = tmp_path_factory.mktemp("root") / "opt" / "atomrelay"
    shutil.copytree(executable.parent, target, symlinks=True)
    files = [p for p in target.rglob("*") if p.is_file() and not p.is_symlink()]
    size = sum(p.stat().st_size for p in files)
    request.config.stash.setdefault(METRICS, []).append(
        f"frozen onedir bundle: {size / 1e6:.1f} MB in {len(files)} files")
    yield target / "atomrelay"


def frozen_env(home: Path) -> dict[str, str]:
    """A bare environment: no virtualenv, no PYTHONPATH, nothing pointing at the source tree."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


def test_bundle_is_self_contained(bundle: Path) -> None:
    """The bundle holds its own Python and no file of the source tree or the virtualenv."""
    assert (bundle.parent / "_internal").is_dir()
    assert list((bundle.parent / "_internal").glob("libpython3*"))
    assert not list(bundle.parent.rglob("*.py"))


def locked_twisted() -> str:
    """The Twisted release in the lock the bundle is built from."""
    lock = (ROOT / "packaging" / "requirements-frozen.txt").read_text(encoding="utf-8")
    return next(line.split("==")[1].split()[0] for line in lock.splitlines() if line.startswith("twisted=="))


def test_version(bundle: Path, tmp_path: Path) -> None:
    """`atomrelay --version` runs from the bundle alone and names the commit it was built from, its
    Python and the locked Twisted."""
    out = subprocess.run([str(bundle), "--version"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         env=frozen_env(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (f"atomrelay {__version__} (commit {checkout_commit(ROOT)}, "
                                  f"Python {platform.python_version()}, Twisted {locked_twisted()})")


def test_mediamtx_config_reads_the_example_config(bundle: Path, tmp_path: Path) -> None:
    """The shipped config.example.yaml validates in the frozen binary (YAML, dataclasses, settings)."""
    example = tmp_path / "config.yaml"
    shutil.copy(ROOT / "config.example.yaml", example)
    out = subprocess.run([str(bundle), "mediamtx-config", "-c", str(example)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path, env=frozen_env(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "rtspTransports: [tcp]" in out.stdout


@pytest_twisted.ensureDeferred
async def test_check_on_a_sample_config(bundle: Path, tmp_path: Path) -> None:
    """`atomrelay check` in the bundle reaches the simulators, runs ffmpeg and passes on a good setup."""
    onvif_port = free_port()
    sims = start_simulators(reactor, model="ATOM_CAKP1JZJP", settings=relay_settings(onvif_port))
    try:
        config = write_config(tmp_path / "config.yaml", sims, onvif_port, tmp_path / "state")
        out, err, code = await getProcessOutputAndValue(str(bundle), ["check", "-c", str(config)],
                                                        env=frozen_env(tmp_path), path=str(tmp_path), reactor=reactor)
    finally:
        await sims.stop()
    text = out.decode()
    lines = text.splitlines()
    assert any(line.startswith("OK") and "v1.20.1" in line for line in lines)
    assert any(line.startswith("OK") and "ATOM_CAKP1JZJP" in line for line in lines)
    if shutil.which("ffmpeg") is not None:
        assert code == 0, text + err.decode()
        assert any(line.startswith("OK") and "ffmpeg" in line and "pcm_mulaw" in line for line in lines)
    else:  # ffmpeg is the only failure, and check says so
        assert code != 0
        failures = [line for line in lines if line.startswith("FAIL")]
        assert failures and all("ffmpeg" in line for line in failures), text
    assert "s3cret!" not in text and "cam-pa55" not in text


@pytest_twisted.ensureDeferred
async def test_check_speaks_https_to_mediamtx(bundle: Path, tmp_path: Path) -> None:
    """An https mediamtx API: the bundle loads TLS when it is first used and checks the certificate
    against the system's trust store (here SSL_CERT_FILE): trusted, it talks; untrusted, it says why."""
    cert_pem, key_pem = certificate(["127.0.0.1"])
    (tmp_path / "ca.pem").write_bytes(cert_pem)
    onvif_port = free_port()
    sims = start_simulators(reactor, model="ATOM_CamV3C", settings=relay_settings(onvif_port),
                            tls=ssl.PrivateCertificate.loadPEM(cert_pem + key_pem))
    try:
        config = write_config(tmp_path / "config.yaml", sims, onvif_port, tmp_path / "state")
        results = {}
        for trust in ("trusted", "untrusted"):
            env = frozen_env(tmp_path)
            if trust == "trusted":
                env["SSL_CERT_FILE"] = str(tmp_path / "ca.pem")
            out, err, code = await getProcessOutputAndValue(str(bundle), ["check", "-c", str(config)], env=env,
                                                            path=str(tmp_path), reactor=reactor)
            results[trust] = (out.decode(), err.decode(), code)
    finally:
        await sims.stop()
    mediamtx = {trust: [line for line in out.splitlines() if "mediamtx" in line and sims.api_url in line]
                for trust, (out, _, _) in results.items()}
    assert any(line.startswith("OK") and "v1.20.1" in line for line in mediamtx["trusted"]), results["trusted"]
    assert results["trusted"][2] == 0, results["trusted"]
    assert any(line.startswith("FAIL") and "certificate verify failed" in line for line in mediamtx["untrusted"]), \
        results["untrusted"]


@pytest_twisted.ensureDeferred
async def test_run_serves_then_stops_on_sigterm(bundle: Path, tmp_path: Path, report_metric: Any) -> None:
    """The unit's ExecStart, on the bundle: answers GetSystemDateAndTime, registers paths, exits 0 on SIGTERM."""
    onvif_port = free_port()
    sims = start_simulators(reactor)
    config = write_config(tmp_path / "config.yaml", sims, onvif_port, tmp_path / "state")
    args = [a.replace("/opt/atomrelay/atomrelay", str(bundle)).replace("/etc/atomrelay/config.yaml", str(config))
            for a in exec_start("atomrelay.service")]
    proto = Collect()
    started = time.monotonic()
    process: Any = reactor.spawnProcess(proto, args[0], args, env=frozen_env(tmp_path), path=str(tmp_path))
    try:
        await poll(lambda: answers(onvif_port), timeout=30, interval=0.02, what="the frozen relay to answer SOAP")
        serving = time.monotonic() - started
        await poll(lambda: {"living/main", "living/sub"} <= set(sims.fake.paths), timeout=10, what="paths registered")
        stopping = time.monotonic()
        process.signalProcess(signal.SIGTERM)
        code = await proto.ended
        stopped = time.monotonic() - stopping
    finally:
        if process.pid is not None:
            process.signalProcess("KILL")
        await sims.stop()
    output = proto.output.decode()
    assert code == (0, None), output
    assert stopped < 5.0
    assert "Traceback" not in output
    assert "s3cret!" not in output and "cam-pa55" not in output
    assert all(line.startswith(("20", "level=")) or not line.strip() for line in output.splitlines()), output
    report_metric(f"frozen onedir start-to-serving: {serving:.2f} s; SIGTERM to exit: {stopped:.2f} s")


@pytest_twisted.ensureDeferred
async def test_run_answers_get_profiles(bundle: Path, tmp_path: Path) -> None:
    """The frozen relay answers Media GetProfiles with the configured streams and serves the dashboard's page and
    packaged assets."""
    onvif_port = free_port()
    sims = start_simulators(reactor)
    config = write_config(tmp_path / "config.yaml", sims, onvif_port, tmp_path / "state", http_basic=True)
    proto = Collect()
    args = [str(bundle), "run", "-c", str(config)]
    process: Any = reactor.spawnProcess(proto, args[0], args, env=frozen_env(tmp_path), path=str(tmp_path))
    try:
        await poll(lambda: answers(onvif_port), timeout=30, what="the frozen relay to answer SOAP")
        response = await treq.post(f"http://127.0.0.1:{onvif_port}/onvif/device_service", GET_PROFILES,
                                   headers={"Content-Type": "application/soap+xml"}, auth=("admin", "s3cret!"),
                                   timeout=5)
        body = await response.content()
        page = await treq.get(f"http://127.0.0.1:{onvif_port}/", auth=("admin", "s3cret!"), timeout=5)
        page_body = await page.content()
        style = await treq.get(f"http://127.0.0.1:{onvif_port}/assets/dashboard.css", timeout=5)
        style_body = await style.content()
        process.signalProcess(signal.SIGTERM)
        await proto.ended
    finally:
        if process.pid is not None:
            process.signalProcess("KILL")
        await sims.stop()
    assert response.code == 200, body.decode()
    assert b"GetProfilesResponse" in body and b"living" in body
    assert page.code == 200 and b'data-camera="living"' in page_body, page_body[:500]
    assert style.code == 200 and b".cameras" in style_body
