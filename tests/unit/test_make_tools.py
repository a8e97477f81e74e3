"""`make test` installs every program the tests run (the Makefile's `tools` target)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Programs a clone cannot exist without (git) or that the Makefile itself runs first (Python).
GIVEN = {"git", "python3"}


def _programs_run() -> set[str]:
    """Program names the code spawns literally: subprocess calls and shutil.which lookups."""
    found: set[str] = set()
    for folder in ("tests", "kstream", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            found.update(re.findall(r"subprocess\.\w+\(\s*\[\s*\"([\w.+-]+)\"", text))
            found.update(re.findall(r"shutil\.which\(\s*\"([\w.+-]+)\"\s*\)", text))
    return found


def _recipe(target: str) -> tuple[list[str], str]:
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{target}:([^\n]*)\n((?:\t[^\n]*\n)*)", text, re.MULTILINE)
    assert match, f"the Makefile has no {target} target"
    return match[1].split(), match[2]


def test_make_test_installs_every_program_the_tests_run() -> None:
    prerequisites, _ = _recipe("test")
    _, tools = _recipe("tools")
    programs = _programs_run()
    assert {"kcat", "java", "mvn"} <= programs  # the scan sees what the suite is known to run
    assert "tools" in prerequisites
    missing = {p for p in programs - GIVEN if f"command -v {p} " not in tools}
    assert not missing, f"make tools does not install {sorted(missing)}"
