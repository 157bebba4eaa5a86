"""The package's layout rules, read from the source: arrows only go down, one folder per concern."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "atomrelay"

LOW_LEVEL = ("camera", "mediamtx", "auth", "xml")
"""Folders that know nothing of the ONVIF services, the HTTP resources, events or discovery."""
HIGH_LEVEL = ("onvif", "web", "events", "discovery")

MAX_LINES = 550
"""About 500 lines: past that a module holds more than one concern (split it)."""
LONGER_ALLOWED = {
    "onvif/device.py": "one handler per Device service operation (Core spec)",
    "onvif/media.py": "one handler per Media service operation (Media spec)",
    "onvif/ptz.py": "one handler per PTZ service operation (PTZ spec)",
    "sim/mediamtx.py": "the mediamtx stand-in: one handler per Control API route (mediamtx-openapi.yaml)",
    "sim/camera.py": "the simulated firmware: one handler per CGI command of atomcam_tools (atomcam.md)",
    "config.py": "one reader per config section; the file imports nothing of the package, so it stays one",
}


def _modules() -> dict[str, Path]:
    return {str(path.relative_to(PACKAGE)): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """Every ``atomrelay...`` module ``path`` imports (at any depth, inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "atomrelay":
                found.update(f"atomrelay.{alias.name}" for alias in node.names)
            elif node.module.startswith("atomrelay."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("atomrelay."))
    return found


def _folder(module: str) -> str:
    """The first part below ``atomrelay``: a folder name, or a top-level module's name."""
    return module.split(".")[1] if module.count(".") >= 1 else ""


MODULES = _modules()


@pytest.mark.parametrize("name", [n for n in MODULES if n.split("/")[0] in LOW_LEVEL])
def test_low_level_folders_import_no_high_level_one(name: str) -> None:
    """camera/, mediamtx/, auth/ and xml/ import nothing from onvif/, web/, events/ or discovery/."""
    wrong = sorted(m for m in _imports(MODULES[name]) if _folder(m) in HIGH_LEVEL)
    assert not wrong, f"{name} imports {wrong}"


def test_xml_imports_only_xml() -> None:
    """xml/ is the base of the SOAP layers: it imports nothing else of the package."""
    for name, path in MODULES.items():
        if name.startswith("xml/"):
            wrong = sorted(m for m in _imports(path) if _folder(m) != "xml")
            assert not wrong, f"{name} imports {wrong}"


def test_config_imports_nothing_of_the_package() -> None:
    """config.py stands alone: YAML in, frozen dataclasses out."""
    assert _imports(MODULES["config.py"]) == set()


def test_only_the_demo_imports_the_simulators() -> None:
    """sim/ (simulated cameras, the mediamtx stand-in) is reached only from demo.py."""
    importers = sorted(
        name for name, path in MODULES.items()
        if not name.startswith("sim/") and any(_folder(m) == "sim" for m in _imports(path))
    )
    assert importers == ["demo.py"]


def test_one_place_builds_the_parts() -> None:
    """Only wiring.py constructs the ONVIF services and the relay's resources (relay.py and the demo call it)."""
    constructors = {"DeviceService(", "MediaService(", "Media2Service(", "PtzService(", "ImagingService(",
                    "EventsService(", "Reconciler(", "HealthMonitor("}
    builders = sorted(
        name for name, path in MODULES.items()
        if name not in ("wiring.py",) and not name.startswith("sim/")
        and any(c in path.read_text(encoding="utf-8") for c in constructors)
        and not name.startswith(("onvif/", "camera/", "mediamtx/", "events/"))
    )
    assert builders == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_readable(name: str) -> None:
    """No module is over ~500 lines, except those holding one method per spec operation."""
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES or name in LONGER_ALLOWED, f"{name} has {lines} lines"
