"""Labs without root, and attendees that cannot touch each other (README "Labs without root").

Two ordinary users (labkit-test and labkit-test2, made by scripts/bootstrap.sh --test) run the
labkit every user can run (tests/attendees.py), as a workshop's attendees would: user A brings
up kube-3node and the two-hosts lab, user B brings up kube-3node under the same lab name at the
same time. Then B tries everything it should not be able to do to A's labs. These labs are the
users' own, built in their namespaces by their processes, so the plugin's fixtures (which build
in root's) do not apply: the leftover check here is the users' side of it, and it is stricter
(no process of the user at all, no state folder, no namespace on the host).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from collections.abc import Iterator

import pytest

from tests.attendees import SRC, VENV, Attendee, host_namespaces, make_attendee, refresh_venv

LAB = "rl"  # both users' cluster lab: names are per user
ONLY_A = "rlsolo"  # a lab only user A has
KUBE = "topologies/kube-3node.yaml"
TWO = "topologies/two-hosts.yaml"


@pytest.fixture(scope="module")
def users() -> tuple[Attendee, Attendee]:
    refresh_venv()
    return make_attendee("labkit-test"), make_attendee("labkit-test2")


@pytest.fixture(scope="module")
def labs(users: tuple[Attendee, Attendee]) -> Iterator[dict[str, object]]:
    """A: kube-3node as LAB and two-hosts as ONLY_A; B: kube-3node as LAB; all brought up at once."""
    a, b = users
    for u in users:  # the test users are the suite's own: start from none of their labs
        u.labkit("down", "--all")
    before = host_namespaces()
    links_before = set(os.listdir("/sys/class/net"))
    ups = [subprocess.Popen(u.argv(f"{VENV}/bin/labkit", "up", topo, "--name", name, "-q"), cwd=SRC, env=u.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for u, topo, name in ((a, KUBE, LAB), (b, KUBE, LAB), (a, TWO, ONLY_A))]
    try:
        for proc in ups:
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, out
        yield {"before": before, "links_before": links_before}
    finally:
        for u in users:
            u.labkit("down", "--all", check=False)


def test_user_lab_is_up_and_verifies(users: tuple[Attendee, Attendee], labs: dict[str, object]) -> None:
    a, _ = users
    summary = json.loads(a.labkit("status", "--name", LAB, "--format", "json").stdout)
    assert summary["name"] == LAB and summary["phase"] == "up"
    assert {n["name"] for n in summary["nodes"]} >= {"cp", "w1", "w2"}
    assert summary["cni"]["bin_dir"].startswith(f"{a.state_root}/{LAB}/")  # state in $XDG_RUNTIME_DIR/labkit
    assert a.labkit("exec", LAB, "default/client", "--", "hostname").stdout.strip() == "client"
    verify = a.labkit("verify", KUBE, "--name", LAB, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert a.labkit("exec", ONLY_A, "h1", "--", "ping", "-c1", "-W2", "10.0.0.2").returncode == 0
    assert a.labkit("apply", KUBE, "--name", LAB, "-q").returncode == 0  # nothing changed: nothing to do
    assert "flowchart" in a.labkit("graph", "--name", LAB).stdout
    assert "delivered" in a.labkit("trace", LAB, "default/client", "web").stdout


def test_host_network_untouched(labs: dict[str, object]) -> None:
    """Nothing of the users' labs is in the machine's /run/netns or among its links."""
    made = host_namespaces() - labs["before"]  # type: ignore[operator]
    assert not [n for n in made if LAB in n or ONLY_A in n]
    new_links = set(os.listdir("/sys/class/net")) - labs["links_before"]  # type: ignore[operator]
    assert not [n for n in new_links if LAB in n or ONLY_A in n]


def test_same_lab_name_for_both_users(users: tuple[Attendee, Attendee], labs: dict[str, object]) -> None:
    a, b = users
    assert a.labkit("list").stdout.split() == sorted([LAB, ONLY_A])
    assert b.labkit("list").stdout.split() == [LAB]
    mine = json.loads(b.labkit("status", "--name", LAB, "--format", "json").stdout)
    assert mine["cni"]["bin_dir"].startswith(f"{b.state_root}/")
    assert b.labkit("verify", KUBE, "--name", LAB, check=False).returncode == 0


def test_other_user_cannot_reach_a_lab(users: tuple[Attendee, Attendee], labs: dict[str, object]) -> None:
    a, b = users
    # names: B sees none of A's labs, and cannot name one
    assert ONLY_A not in b.labkit("status", "--format", "json").stdout
    assert b.labkit("status", "--name", ONLY_A, check=False).returncode != 0
    assert b.labkit("exec", ONLY_A, "h1", "--", "true", check=False).returncode != 0
    assert "not up" in b.labkit("down", "--name", ONLY_A).stdout
    # state files and sockets
    a_files = [f"{a.state_root}/{LAB}/state.json", f"{a.state_root}/.holder/pid"]
    for path in a_files:
        assert b.run("cat", path).returncode != 0, path
    assert b.run("ls", a.state_root).returncode != 0
    sock = f"{a.state_root}/{LAB}/cni/labkit-cni.sock"
    probe = b.run(f"{VENV}/bin/python", "-c", textwrap.dedent(f"""
        import socket, sys
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect({sock!r})
        except OSError:
            sys.exit(3)
        """))
    assert probe.returncode == 3, probe.stderr
    # processes: A's lab processes run as A; B may signal none of them, nor join A's namespaces
    a_pids = a.pids()
    assert len(a_pids) > 10  # the holder, pods, the CNI and DNS servers
    for pid in a_pids:
        assert b.run("kill", "-0", str(pid)).returncode != 0, pid
    holder = open(f"{a.state_root}/.holder/pid", encoding="ascii").read().split()[0]
    joined = b.run("nsenter", "-U", "-m", "-n", "-t", holder, "--", "true")
    assert joined.returncode != 0
    joined = b.run("nsenter", "--preserve-credentials", "-U", "-t", holder, "--", "true")
    assert joined.returncode != 0
    # down --all: B's labs only
    assert b.labkit("down", "--all").stdout.split() == ["lab", LAB + ":", "removed"]
    assert a.labkit("list").stdout.split() == sorted([LAB, ONLY_A])
    assert a.labkit("exec", ONLY_A, "h1", "--", "true").returncode == 0
    assert not b.pids()  # B's last lab went: its holder too
    assert not os.path.exists(b.state_root)


def test_what_needs_root_is_refused(users: tuple[Attendee, Attendee], labs: dict[str, object]) -> None:
    a, _ = users
    docker = a.labkit("up", TWO, "--name", "rldock", "--runtime", "docker", check=False)
    assert docker.returncode != 0 and "docker runtime needs root" in docker.stderr
    assert a.labkit("image", "build", check=False).stderr.count("needs root") == 1
    folder = f"/tmp/labkit-rootless-{os.getpid()}"
    os.makedirs(folder, mode=0o755, exist_ok=True)
    try:
        topo = os.path.join(folder, "host.yaml")
        with open(topo, "w", encoding="utf-8") as fh:
            fh.write("name: rlhost\nmgmt: {ipv4-subnet: 172.30.9.0/24, host-access: true}\n"
                     "topology:\n  nodes:\n    h1: {kind: linux}\n")
        os.chmod(topo, 0o644)
        host = a.labkit("up", topo, check=False)
        assert host.returncode != 0 and "host-access needs root" in host.stderr, host.stderr
        assert "rlhost" not in a.labkit("list").stdout
    finally:
        subprocess.run(["rm", "-rf", folder], check=False)
    env = {k: v for k, v in a.env().items() if k != "XDG_RUNTIME_DIR"}
    unset = a.run(f"{VENV}/bin/labkit", "list", env=env)
    assert unset.returncode != 0 and "XDG_RUNTIME_DIR" in unset.stderr and "Traceback" not in unset.stderr


def test_pytest_plugin_without_root(users: tuple[Attendee, Attendee], labs: dict[str, object]) -> None:
    """An attendee's own pytest run: the plugin's fixture brings a lab up in the user's namespaces,
    checks it and takes it down with its leftover check."""
    a, _ = users
    folder = f"/tmp/labkit-rootless-plugin-{os.getpid()}"
    os.makedirs(folder, mode=0o755, exist_ok=True)
    try:
        test = os.path.join(folder, "test_attendee.py")
        with open(test, "w", encoding="utf-8") as fh:
            fh.write(textwrap.dedent(f"""
                from labkit.pytest_plugin import labkit_fixture

                two = labkit_fixture({SRC + '/' + TWO!r})

                def test_ping(two):
                    two.exec("h1", "ping", "-c1", "-W2", "10.0.0.2", check=True)
                """))
        os.chmod(test, 0o644)
        run = a.run(f"{VENV}/bin/python", "-m", "pytest", "-q", "-p", "no:cacheprovider", test)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "1 passed" in run.stdout
    finally:
        subprocess.run(["rm", "-rf", folder], check=False)
    assert a.labkit("list").stdout.split() == sorted([LAB, ONLY_A])  # the user's other labs untouched


def test_down_leaves_nothing(users: tuple[Attendee, Attendee], labs: dict[str, object]) -> None:
    a, b = users
    a.labkit("down", "--name", ONLY_A)
    assert a.pids()  # LAB is still up: the holder stays
    a.labkit("down", KUBE, "--name", LAB)
    assert a.labkit("down", "--name", LAB).stdout.strip() == f"lab {LAB}: was not up; nothing to remove"
    for user in (a, b):
        assert not user.pids(), f"{user.name} left processes: {user.pids()}"
        assert not os.path.exists(user.state_root)
    assert a.labkit("list").stdout == ""
    assert not a.pids()  # listing no labs leaves no holder behind


def test_signal_of_other_user_is_refused_by_kernel(users: tuple[Attendee, Attendee]) -> None:
    """The premise of the isolation checks above: the kernel refuses B's signal to A (EPERM)."""
    a, b = users
    sleeper = subprocess.Popen(a.argv("sleep", "60"), env=a.env())
    try:
        refused = b.run("kill", "-TERM", str(sleeper.pid))
        assert refused.returncode != 0 and sleeper.poll() is None
    finally:
        os.kill(sleeper.pid, signal.SIGKILL)
        sleeper.wait()
