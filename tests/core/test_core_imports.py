"""The core imports no door: it must serve the line door, IRC and the web alike."""

import ast
from pathlib import Path

import chatd.core

CORE = Path(chatd.core.__file__).parent
# The doors, the client and everything about a wire; the application that wires them.
FORBIDDEN = ("chatd.frontends", "chatd.client", "chatd.app")


def package_of(path: Path) -> str:
    """The dotted package of a module file under chatd/."""
    return ".".join(("chatd", *path.parent.relative_to(CORE.parent).parts))


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports, absolute names (relative ones resolved in ``package``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{module}" if module else base
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def door_imports(path: Path, package: str) -> list[str]:
    """The door, client or application modules ``path`` imports."""
    return sorted(
        name
        for name in imported_modules(path, package)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
    )


def test_the_core_imports_nothing_from_any_door():
    """No module under chatd/core imports a door (parsed, so lazy imports count too)."""
    modules = sorted(CORE.rglob("*.py"))
    assert len(modules) >= 6
    offending = {
        str(path.relative_to(CORE)): door_imports(path, package_of(path)) for path in modules
    }
    assert {module: names for module, names in offending.items() if names} == {}


def test_the_import_check_sees_a_door_import(tmp_path):
    """The check itself finds a door import, plain, from-style or relative."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import chatd.frontends.line.protocol\n"
        "from chatd.frontends.irc import protocol\n"
        "from ..frontends import tls\n"
    )
    assert door_imports(probe, "chatd.core") == [
        "chatd.frontends",
        "chatd.frontends.irc",
        "chatd.frontends.irc.protocol",
        "chatd.frontends.line.protocol",
        "chatd.frontends.tls",
    ]
