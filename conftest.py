"""Repository root: the pytest plugin comes from the installed package's ``pytest11`` entry points
(``pip install -e .``). From a checkout that was not installed, load it here so ``pytest suites/`` still works."""

from importlib.metadata import entry_points

_installed = {ep.value for ep in entry_points(group="pytest11")}
pytest_plugins = [name for name in ("harness.plugin", "reports.plugin") if name not in _installed]
