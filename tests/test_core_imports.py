"""The core imports no door: it must serve the line door, IRC and the web alike."""

import ast
from pathlib import Path

import chatd

CHATD = Path(chatd.__file__).parent
# The core: what every door stands on (top-level modules until the layout move).
CORE = ("events", "service", "names", "errors", "ids", "bulk")
# The doors and everything about a wire.
FORBIDDEN = ("chatd.protocol", "chatd.frontends", "chatd.line_render", "chatd.client",
             "chatd.limits", "chatd.tls")


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute names (``from . import x`` resolved)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = "chatd." + module if module else "chatd"
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_the_core_imports_nothing_from_any_door():
    """No core module imports a door or a wire module (parsed, so lazy imports count too)."""
    offending = {
        module: sorted(
            name
            for name in imported_modules(CHATD / f"{module}.py")
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
        )
        for module in CORE
    }
    assert {module: names for module, names in offending.items() if names} == {}


def test_the_import_check_sees_a_door_import(tmp_path):
    """The check itself finds a door import, plain, from-style or relative."""
    source = "import chatd.protocol\nfrom chatd.frontends.irc import protocol\nfrom . import tls\n"
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    names = imported_modules(probe)
    assert {"chatd.protocol", "chatd.frontends.irc.protocol", "chatd.tls"} <= names
