"""Many machines through a real ssh gateway: xdist's ``--tx N*ssh=HOST//python=...``, here to an sshd on loopback.

The test starts Debian's OpenSSH server (``.ci/run`` installs ``openssh-server``) on a free loopback port, with a
host key and a client key it generates, and runs the suites through two ssh workers into one run folder. It is
skipped, saying why, only where ``sshd`` is not installed or cannot start.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO, env_for, records, run_pytest, suite_args

pytestmark = pytest.mark.slow
SSHD = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if Path(p).is_file()), None)
HOST = "pitfalls-loopback"  # the alias the client config gives the loopback sshd
RSYNC_IGNORE = [f"--rsyncignore={name}" for name in (".git", ".cache", "results")]  # not needed remotely


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ssh_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An sshd on 127.0.0.1:<free port> accepting a key made here; yields the client's ssh_config naming it HOST."""
    if SSHD is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH (sshd, ssh, ssh-keygen) is not installed: apt-get install openssh-server openssh-client")
    installed = subprocess.run([sys.executable, "-c", "import harness, pathlib; print(pathlib.Path(harness.__file__).parent.parent)"],
                               cwd="/", capture_output=True, text=True)  # what a remote worker imports, outside the checkout
    if installed.returncode != 0 or Path(installed.stdout.strip()).resolve() != REPO.resolve():
        pytest.fail(f"the ssh workers would import the harness installed in {sys.executable}: "
                    f"{installed.stdout.strip() or 'none'}, not this checkout {REPO}: run pip install -e {REPO}")
    folder = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    port = free_port()
    (folder / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_key'}", f"AuthorizedKeysFile {folder / 'authorized_keys'}",
        f"PidFile {folder / 'sshd.pid'}", "StrictModes no", "UsePAM no", "PasswordAuthentication no", "PermitRootLogin yes",
        "KbdInteractiveAuthentication no", "PermitUserEnvironment no", "LogLevel ERROR", ""]))
    (folder / "ssh_config").write_text("\n".join([
        f"Host {HOST}", "  HostName 127.0.0.1", f"  Port {port}", f"  User {getpass.getuser()}", f"  IdentityFile {folder / 'client_key'}",
        "  IdentitiesOnly yes", "  StrictHostKeyChecking no", "  UserKnownHostsFile /dev/null", "  LogLevel ERROR", "  BatchMode yes", ""]))
    Path("/run/sshd").mkdir(exist_ok=True) if os.geteuid() == 0 else None  # privilege separation needs it (as root)
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    deadline = time.time() + 20
    while True:
        probe = subprocess.run(["ssh", "-F", str(folder / "ssh_config"), HOST, "true"], capture_output=True, text=True)
        if probe.returncode == 0:
            break
        if server.poll() is not None or time.time() > deadline:
            server.kill()
            pytest.skip(f"sshd could not start here: {(server.communicate()[0] or probe.stderr).strip()[-300:]}")
        time.sleep(0.2)
    yield folder / "ssh_config"
    server.terminate()
    server.wait(timeout=10)


def ssh_workers(config: Path, remote_dir: Path, n: int = 2, **env: str) -> list[str]:
    """``--tx`` for ``n`` workers over ssh, as docs/running.md gives it: the remote's Python (here this machine's), the
    checkout sent to the remote working folder with ``--rsyncdir`` (xdist runs the suites from that copy). sshd gives
    the remote process a clean environment: what it needs goes in the spec (``//env:NAME=value``)."""
    spec = f"{n}*ssh={HOST}//ssh_config={config}//python={sys.executable}//chdir={remote_dir}"
    spec += "".join(f"//env:{name}={value}" for name, value in {"OMP_NUM_THREADS": "1", **env}.items())
    return ["--tx", spec, f"--rsyncdir={REPO}", *RSYNC_IGNORE, "--dist", "load"]


def with_equals(args: list[str]) -> list[str]:
    """``--opt PATH`` as ``--opt=PATH``: xdist rewrites every argument naming an existing path as relative to an rsync
    root (and refuses one outside them); an option's value joined to its name is left alone (docs/running.md)."""
    joined, skip = [], False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg.startswith("--") and "=" not in arg and i + 1 < len(args) and Path(args[i + 1]).exists() and arg != "--tx":
            joined.append(f"{arg}={args[i + 1]}")
            skip = True
        else:
            joined.append(arg)
    return joined


def test_two_ssh_workers_write_one_run_folder_equal_to_the_n2_run(ssh_config, published, cache_dir, tmp_path):
    common = with_equals(suite_args(published, tmp_path, "--editor", "ft", "--record-only", "--limit", "1", "-m", "round or reverse",
                                    "--cache-dir", str(cache_dir), model="tiny-llama"))
    local = run_pytest([*common, "--run-name", "local", "-n", "2"], cache_dir)
    assert local.returncode == 0, local.output[-3000:]
    over_ssh = run_pytest([*common, "--run-name", "ssh", *ssh_workers(ssh_config, tmp_path / "remote")], cache_dir)
    assert over_ssh.returncode == 0, over_ssh.output[-3000:]
    assert "Traceback" not in over_ssh.output
    by_case = lambda name: {r["case_id"]: (r["status"], r["metrics"]) for r in records(tmp_path / name / "cases.jsonl")}
    assert len(by_case("ssh")) == 3 and by_case("ssh") == by_case("local")
    assert {r["worker"] for r in records(tmp_path / "ssh" / "cases.jsonl")} <= {"gw0", "gw1"}
    summary = lambda name: json.loads((tmp_path / name / "summary.json").read_text())["splits"]
    assert summary("ssh") == summary("local")
    assert (tmp_path / "ssh" / "report.html").is_file()


def test_a_worker_host_that_drops_mid_run_gives_its_case_an_error_record(ssh_config, published, cache_dir, tmp_path):
    """The ssh session of one worker is killed while it edits: its case gets an error record; no case is lost."""
    cmd = [sys.executable, "-m", "pytest", *with_equals(suite_args(
        published, tmp_path, "--editor", "tests.broken_editors:Sleeper", "--record-only", "-m", "easy", "--limit", "4",
        "--cache-dir", str(cache_dir), model="tiny-llama", run_name="drop"))]
    pidfile = tmp_path / "worker.pid"
    cmd += ssh_workers(ssh_config, tmp_path / "remote", PITFALLS_TEST_PIDFILE=str(pidfile))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env_for(cache_dir, PITFALLS_TEST_PIDFILE=str(pidfile)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:] if proc.poll() is not None else "timeout"
        time.sleep(0.2)
    session = _sshd_session_of(int(pidfile.read_text()))
    os.kill(session, signal.SIGKILL)  # the host drops: its sshd session ends, the worker's channel closes
    output, _ = proc.communicate(timeout=600)
    lines = records(tmp_path / "drop" / "cases.jsonl")
    assert sorted(r["case_id"] for r in lines) == sorted({r["case_id"] for r in lines}) and len(lines) == 4, output[-3000:]
    errors = [r for r in lines if r["status"] == "error"]
    assert len(errors) == 1 and errors[0]["split"] == "easy", lines
    assert all(r["status"] == "ok" for r in lines if r not in errors)
    assert "Traceback" not in output and "INTERNALERROR" not in output, output[-3000:]


def _sshd_session_of(pid: int) -> int:
    """The sshd process serving the connection that started ``pid`` (the nearest sshd among its ancestors)."""
    current = pid
    while current > 1:
        status = Path(f"/proc/{current}/status").read_text()
        parent = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        name = Path(f"/proc/{parent}/comm").read_text().strip()
        if name.startswith("sshd"):
            return parent
        current = parent
    raise AssertionError(f"process {pid} was not started through sshd")
