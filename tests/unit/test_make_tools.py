"""`make test` installs every program the tests run (the Makefile's `system-tools` target)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Programs a clone cannot exist without (git), that the Makefile itself runs first (Python), that
# every Debian has (tar), or that the machine image brings (the Go toolchain, for the deploy tier).
GIVEN = {"git", "python3", "tar", "go"}
# Programs that come with another one the Makefile installs.
WITH = {"keytool": "java"}


def _programs_run() -> set[str]:
    """Program names the code spawns literally: subprocess calls and shutil.which lookups."""
    found: set[str] = set()
    for folder in ("tests", "kstream", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            if any(part.startswith(".venv") for part in path.relative_to(ROOT).parts):
                continue  # the benchmarks' peer venvs (bench/.venv-*, ignored): third-party code
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
    _, tools = _recipe("system-tools")
    programs = _programs_run()
    assert {"kcat", "java", "mvn"} <= programs  # the scan sees what the suite is known to run
    assert {"system-tools", "browser", "deploy-tools"} <= set(prerequisites)
    missing = {p for p in programs - GIVEN if f"command -v {WITH.get(p, p)} " not in tools}
    assert not missing, f"make system-tools does not install {sorted(missing)}"
