"""Many workers, many machines (xdist's ``-n N`` and ``--tx``): what the controller tells each worker, and the two
ways a run through gateways goes wrong before any case runs, each stopped with one line.

* A worker whose Python cannot start the run (the harness not installed there, a wrong ``//python=``) goes down
  before it is ready. Under ``--tx`` xdist has no restart limit and would replace it forever, each replacement a
  new ssh session and process: the run stops at the first such worker, naming it and its error.
* xdist rewrites every command-line argument that names a local path as relative to an rsync root, and stops with
  an internal error for one outside them: the run stops before any gateway starts, naming the argument.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.plugin.options import HOST_INDEX, HOST_WORKERS, RunOptions, is_worker

HELP = "docs/running.md, 'Many workers and machines: xdist'"


def host_of(spec) -> str:
    """Which machine an execnet gateway spec runs on: its ssh/socket address, or this machine."""
    return str(getattr(spec, "ssh", None) or getattr(spec, "socket", None) or "local")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """Tell each worker its index among the workers of its own machine (worker i takes that machine's GPU i mod count)."""
    specs = list(getattr(getattr(node, "nodemanager", None), "specs", []) or [])
    host = host_of(node.gateway.spec)
    same_host = [spec.id for spec in specs if host_of(spec) == host]
    node.workerinput[HOST_INDEX] = same_host.index(node.gateway.spec.id) if node.gateway.spec.id in same_host else 0
    node.workerinput[HOST_WORKERS] = max(1, len(same_host))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: one worker per GPU on a GPU machine, one per two CPU cores otherwise (each worker holds a model)."""
    if RunOptions.from_config(config).device != "cpu":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.device_count()
    return max(1, (os.cpu_count() or 1) // 2)


def pytest_configure(config: pytest.Config) -> None:
    if is_worker(config) or config.getoption("dist", "no") == "no" or not config.getoption("tx", None):
        return
    check_paths_inside_rsync_roots(config)
    config.pluginmanager.register(WorkerStarts(), "pitfalls-worker-starts")


def rsync_roots(config: pytest.Config) -> list[Path] | None:
    """The folders xdist sends to remote workers (``--rsyncdir`` and the ``rsyncdirs`` ini value), resolved as xdist
    resolves them; ``None`` when every gateway is a local ``popen`` without ``chdir``: xdist rewrites no argument."""
    import execnet
    from xdist.workermanage import parse_tx_spec_config

    specs = [execnet.XSpec(spec) for spec in parse_tx_spec_config(config)]
    if all(spec.popen and not spec.chdir for spec in specs):
        return None
    folders = list(config.getoption("rsyncdir", None) or []) + list(config.getini("rsyncdirs") or [])
    return [Path(folder).resolve() for folder in folders]


def check_paths_inside_rsync_roots(config: pytest.Config) -> None:
    """xdist's own rule (``make_reltoroot``: an argument naming an existing local path must be absolute and inside an
    rsync root), applied to each argument before any gateway starts, so that the one it refuses can be named."""
    from xdist.workermanage import make_reltoroot

    roots = rsync_roots(config)
    if roots is None:
        return
    for arg in map(str, config.invocation_params.args or ()):
        try:
            make_reltoroot(roots, [arg])
        except ValueError:
            where = ", ".join(map(str, roots)) or "none given"
            raise pytest.UsageError(
                f"--tx: the argument {arg!r} names a local path, which xdist sends to the remote workers only as an "
                f"absolute path inside an --rsyncdir folder (given: {where}): write it so, or join an option's path "
                f"to its name with '=' ({HELP})") from None


class WorkerStarts:
    """Stops the run at the first ``--tx`` worker that goes down before it is ready (a worker dropped mid-case, after
    it was ready, is still replaced as xdist does)."""

    def __init__(self) -> None:
        self.ready: set[str] = set()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodeready(self, node) -> None:
        self.ready.add(node.gateway.id)

    @pytest.hookimpl(optionalhook=True, tryfirst=True)  # before xdist's reporter prints the worker's traceback
    def pytest_testnodedown(self, node, error) -> None:
        if not error or node.gateway.id in self.ready:
            return
        stop_at_worker(node.gateway, last_line(error) or "it exited")

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionstart(self, session: pytest.Session):
        """The same worker may go down sooner, while xdist sends it its setup (``OSError: cannot send to <Channel ...
        closed>`` from xdist's own session start, an internal error): the same one line, with the worker's error."""
        try:
            return (yield)
        except OSError as exc:
            node = node_being_set_up(exc)
            if node is None:
                raise
            stop_at_worker(node.gateway, remote_error(node) or "its connection closed while xdist set it up")


def stop_at_worker(gateway, reason: str) -> None:
    pytest.exit(f"worker {gateway.id} ({host_of(gateway.spec)}) could not start: {reason}. "
                f"Install the harness (pip install -e . or its wheel) in the Python its --tx spec names ({HELP})",
                returncode=pytest.ExitCode.USAGE_ERROR)


def node_being_set_up(exc: BaseException):
    """The xdist worker controller whose setup raised ``exc`` (a frame's ``self`` with a channel and a gateway)."""
    import traceback

    for frame, _ in traceback.walk_tb(exc.__traceback__):
        candidate = frame.f_locals.get("self")
        if hasattr(candidate, "channel") and hasattr(candidate, "gateway"):
            return candidate
    return None


def remote_error(node, wait_s: float = 10) -> str | None:
    """The last line of the error the worker's Python ended with, as execnet brings it back (None if none came)."""
    import execnet

    try:
        node.channel.waitclose(timeout=wait_s)
    except execnet.RemoteError as error:  # it holds the worker's traceback
        return last_line(error)
    except Exception:  # a timeout, or the channel's own failure: nothing the worker said
        pass
    return None


def last_line(error: object) -> str | None:
    """The last non-blank line of an error's text (a traceback's last line names the error)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else None
