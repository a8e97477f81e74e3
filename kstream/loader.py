"""Load ``APP``: ``package.module:attr`` or ``path/to/file.py:attr`` (``:attr`` optional when
the module holds exactly one Topology or Workflow; a Workflow loads as its compiled topology)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from kstream.errors import AppLoadError, DeclarationError
from kstream.topology import Topology
from kstream.workflows.declare import Workflow


def load_topology(spec: str) -> Topology:
    """Import the module, find the Topology, validate the whole graph."""
    target, _, attr = spec.partition(":")
    if not target:
        raise AppLoadError(f"APP {spec!r} is empty: use module:attr or path/to/file.py:attr")
    module = _import(target)
    if attr:
        obj = getattr(module, attr, None)
        if obj is None:
            raise AppLoadError(f"{target} has no attribute {attr!r}")
        if isinstance(obj, Workflow):
            obj = obj.topology
        if not isinstance(obj, Topology):
            raise AppLoadError(f"{target}:{attr} is a {type(obj).__name__}, not a kstream Topology or Workflow")
    else:
        found = [v.topology if isinstance(v, Workflow) else v for v in vars(module).values()
                 if isinstance(v, (Topology, Workflow))]
        if len(found) != 1:
            raise AppLoadError(f"{target} holds {len(found)} topologies: name one as {target}:ATTR")
        obj = found[0]
    obj.validate()
    return obj


def load_workflows(spec: str) -> list[Workflow]:
    """The workflows of ``APP``: the one named (``module:attr``), or every Workflow of the module."""
    target, _, attr = spec.partition(":")
    if not target:
        raise AppLoadError(f"APP {spec!r} is empty: use module:attr or path/to/file.py:attr")
    module = _import(target)
    if attr:
        found = [getattr(module, attr, None)]
        if not isinstance(found[0], Workflow):
            raise AppLoadError(f"{target}:{attr} is not a kstream Workflow")
    else:
        found = [v for v in vars(module).values() if isinstance(v, Workflow)]
        if not found:
            raise AppLoadError(f"{target} holds no Workflow")
    workflows = [wf for wf in found if isinstance(wf, Workflow)]
    for wf in workflows:
        wf.validate()
    return workflows


def _import(target: str) -> object:
    try:
        if target.endswith(".py") or "/" in target:
            path = Path(target)
            if not path.is_file():
                raise AppLoadError(f"no such file: {target}")
            name = f"kstream_app_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            if module_spec is None or module_spec.loader is None:
                raise AppLoadError(f"cannot load {target} as a Python module")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            # The app's own folder is importable, as it is for `python file.py`.
            sys.path.insert(0, str(path.resolve().parent))
            module_spec.loader.exec_module(module)
            return module
        if str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        return importlib.import_module(target)
    except (AppLoadError, DeclarationError):
        raise
    except ModuleNotFoundError as exc:
        raise AppLoadError(f"cannot import {target}: {exc}") from None
    except Exception as exc:  # noqa: BLE001  (user code failing at import: say where, one line)
        raise AppLoadError(f"importing {target} failed: {type(exc).__name__}: {exc}") from None
