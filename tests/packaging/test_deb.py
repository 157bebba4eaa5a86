"""The .deb installed into throw-away Debian roots (``make deb-test``; root, debootstrap, lintian).

``make deb-test`` builds ``dist/atomrelay_<version>_<arch>.deb`` and points ``$ATOMRELAY_DEB``
at it; without it these tests are skipped. Each test unpacks a fresh minimal Debian bookworm
root (made once by debootstrap and kept as ``build/debian-bookworm-<arch>.tar``) and runs
dpkg and the installed relay in it, inside private mount and network namespaces: nothing
the relay does reaches a real interface.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from .support import ROOT

DEB_ENV = "ATOMRELAY_DEB"
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
CONFIG = "etc/atomrelay/config.yaml"

pytestmark = pytest.mark.skipif(not os.environ.get(DEB_ENV), reason="`make deb-test` builds the .deb and runs these")


@pytest.fixture(scope="module")
def deb() -> Path:
    """The package under test."""
    path = Path(os.environ[DEB_ENV])
    if not path.is_file():
        pytest.fail(f"${DEB_ENV}={path} does not exist: run `make deb` first")
    return path


@pytest.fixture(scope="module")
def base_tar() -> Path:
    """A minimal Debian bookworm root of this machine's architecture, as a tar (debootstrap once)."""
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    tar = ROOT / "build" / f"debian-bookworm-{arch}.tar"
    if not tar.is_file():
        staging = ROOT / "build" / f"debian-bookworm-{arch}"
        shutil.rmtree(staging, ignore_errors=True)
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(staging), MIRROR], check=True,
                       capture_output=True, timeout=1800)
        subprocess.run(["tar", "-C", str(staging), "-cf", f"{tar}.part", "."], check=True)
        os.replace(f"{tar}.part", tar)
        shutil.rmtree(staging)
    return tar


@pytest.fixture
def root(base_tar: Path, tmp_path: Path, deb: Path) -> Path:
    """A fresh Debian root with the package at /tmp/atomrelay.deb, not yet installed."""
    target = tmp_path / "root"
    target.mkdir()
    with tarfile.open(base_tar) as archive:
        archive.extractall(target, filter="fully_trusted")
    shutil.copy(deb, target / "tmp" / "atomrelay.deb")
    return target


def run(root: Path, *command: str, user: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``command`` chrooted into ``root``, with its own /proc, in private mount and network namespaces."""
    chroot = ["chroot", f"--userspec={user}:{user}"] if user else ["chroot"]
    script = 'mount -t proc proc "$0/proc" && exec "$@"'
    result = subprocess.run(
        ["unshare", "--mount", "--net", "--fork", "sh", "-c", script, str(root), *chroot, str(root),
         "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8", *command],
        capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    return result


def owner(root: Path, path: str) -> tuple[str, str, str]:
    """(user, group, octal mode) of ``path`` as the root sees it."""
    return tuple(run(root, "stat", "-c", "%U %G %a", path).stdout.split())  # type: ignore[return-value]


def newer(deb: Path, into: Path) -> Path:
    """The same package with a higher version (an upgrade that changes nothing but the version)."""
    tree = into / "newer"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    lines = control.read_text(encoding="utf-8").splitlines()
    control.write_text("\n".join(line + "+upgrade1" if line.startswith("Version: ") else line for line in lines) + "\n",
                       encoding="utf-8")
    out = into / "newer.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(out)], check=True, capture_output=True)
    return out


def edit_and_save_state(root: Path) -> None:
    """What a user and a running relay leave behind: an edited config and a state file."""
    with (root / CONFIG).open("a", encoding="utf-8") as config:
        config.write("# edited by the user\n")
    (root / "var/lib/atomrelay/identity.json").write_text('{"uuid": "kept"}\n', encoding="utf-8")


def test_lintian_reports_no_errors(deb: Path) -> None:
    """lintian finds no error in the package (warnings are allowed; overrides carry their reasons)."""
    result = subprocess.run(["lintian", "--fail-on", "error", str(deb)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [line for line in result.stdout.splitlines() if line.startswith("E:")]


def test_install_lays_out_files_user_modes_and_does_not_start(root: Path) -> None:
    """dpkg -i installs the bundle, the command, the unit and a private config, makes the user and
    the state directory, and says that the relay starts only once the config is edited and enabled."""
    result = run(root, "dpkg", "-i", "/tmp/atomrelay.deb")
    assert "not started" in result.stdout and "sudoedit /etc/atomrelay/config.yaml" in result.stdout
    assert "systemctl enable --now atomrelay" in result.stdout
    assert os.readlink(root / "usr/bin/atomrelay") == "/opt/atomrelay/atomrelay"
    assert (root / "opt/atomrelay/_internal").is_dir()
    assert (root / "lib/systemd/system/atomrelay.service").read_bytes() == \
        (ROOT / "packaging" / "atomrelay.service").read_bytes()
    assert (root / CONFIG).read_bytes() == (ROOT / "config.example.yaml").read_bytes()
    assert run(root, "dpkg-query", "-W", "-f", "${Conffiles}", "atomrelay").stdout.split()[0] == "/" + CONFIG
    assert owner(root, "/" + CONFIG) == ("root", "atomrelay", "640")
    assert owner(root, "/etc/atomrelay") == ("root", "atomrelay", "750")
    assert owner(root, "/var/lib/atomrelay") == ("atomrelay", "atomrelay", "750")
    user = run(root, "getent", "passwd", "atomrelay").stdout.strip().split(":")
    assert int(user[2]) < 1000 and user[5:] == ["/var/lib/atomrelay", "/usr/sbin/nologin"]
    assert not list(root.glob("etc/systemd/system/*.wants/atomrelay.service"))


def test_installed_binary_runs_version_and_check(root: Path) -> None:
    """The installed command prints its version and, as the service user, checks the example config:
    the config is valid and readable by the group only; mediamtx and the camera are unreachable here."""
    run(root, "dpkg", "-i", "/tmp/atomrelay.deb")
    version = run(root, "atomrelay", "--version").stdout
    assert version.startswith("atomrelay ") and "commit " in version and "Twisted " in version
    check = run(root, "atomrelay", "check", "-c", "/" + CONFIG, user="atomrelay", check=False)
    rows = check.stdout.splitlines()
    assert check.returncode == 1, check.stdout + check.stderr
    assert any(row.startswith("OK") and "config.yaml: 1 cameras, 2 streams" in row for row in rows), check.stdout
    assert any(row.startswith("FAIL") and "mediamtx" in row for row in rows)
    assert "readable by every user" not in check.stdout
    assert "Traceback" not in check.stdout + check.stderr


def test_upgrade_keeps_the_edited_config_and_the_state(root: Path, deb: Path, tmp_path: Path) -> None:
    """Installing a newer .deb over an edited config and saved state keeps both, and their modes."""
    run(root, "dpkg", "-i", "/tmp/atomrelay.deb")
    edit_and_save_state(root)
    shutil.copy(newer(deb, tmp_path), root / "tmp" / "newer.deb")
    run(root, "dpkg", "-i", "/tmp/newer.deb")
    assert run(root, "dpkg-query", "-W", "-f", "${Version}", "atomrelay").stdout.endswith("+upgrade1")
    assert (root / CONFIG).read_text(encoding="utf-8").endswith("# edited by the user\n")
    assert owner(root, "/" + CONFIG) == ("root", "atomrelay", "640")
    assert (root / "var/lib/atomrelay/identity.json").read_text(encoding="utf-8") == '{"uuid": "kept"}\n'


def test_remove_keeps_config_and_state_and_purge_deletes_them(root: Path) -> None:
    """dpkg -r removes the program and keeps the config and the state; dpkg -P then deletes them."""
    run(root, "dpkg", "-i", "/tmp/atomrelay.deb")
    edit_and_save_state(root)
    run(root, "dpkg", "-r", "atomrelay")
    assert not (root / "opt/atomrelay").exists() and not (root / "usr/bin/atomrelay").is_symlink()
    assert not (root / "lib/systemd/system/atomrelay.service").exists()
    assert (root / CONFIG).read_text(encoding="utf-8").endswith("# edited by the user\n")
    assert (root / "var/lib/atomrelay/identity.json").is_file()
    run(root, "dpkg", "-P", "atomrelay")
    assert not (root / "etc/atomrelay").exists()
    assert not (root / "var/lib/atomrelay").exists()
    assert "atomrelay" not in run(root, "dpkg-statoverride", "--list", check=False).stdout
