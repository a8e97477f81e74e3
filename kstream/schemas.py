"""Where the Avro schemas of framework records live (``schemas/`` in the repo, shipped in the wheel)."""

from __future__ import annotations

from pathlib import Path


def schema_path(name: str) -> Path:
    here = Path(__file__).resolve().parent
    for folder in (here / "schemas", here.parent / "schemas"):
        path = folder / name
        if path.is_file():
            return path
    raise FileNotFoundError(f"Avro schema {name} not found next to the kstream package")
