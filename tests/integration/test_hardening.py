"""Issue 11 as an attacker and an unlucky user would try it: names that are not labs, a permissive
umask, pid files that lie, a DNS server that died, two verbs at once, an `apply` killed half way,
a deleted state folder, a damaged state file, and pods that try to reconfigure their own network."""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from labkit import paths, processes, state
from labkit.lab import leftovers
from labkit.lock import lab_lock
from labkit.net import netns
from labkit.pytest_plugin import unique_lab_name
from labkit.topology.plan import netns_prefix

from .conftest import ROOT, TOPOLOGIES

USER = "labkit-test"  # an ordinary user; scripts/bootstrap.sh --test creates it too


def run_labkit(*args: str, env: dict[str, str] | None = None, umask: int | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess:
    """The real `labkit` command, as a user runs it (optionally under another umask)."""
    return subprocess.run([sys.executable, "-m", "labkit.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=timeout, check=False,
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{proc.args[3:]} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    return proc


@pytest.fixture(scope="session")
def ordinary_user() -> str:
    if subprocess.run(["id", "-u", USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True)
    return USER


def as_user(user: str, *argv: str) -> int:
    return subprocess.run(["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *argv],
                          capture_output=True, check=False).returncode


def status_as(user: str, name: str) -> list:
    """[phase, health problems] of lab `name` as `user` sees them: lab.status in a forked child that
    gives up root (forked, not exec'd: this interpreter lives under /root, which users cannot read)."""
    import pwd

    from labkit import lab

    lab.status(name)  # every module status needs is loaded before the child drops root
    entry = pwd.getpwnam(user)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            (summary,) = lab.status(name)
            os.write(write_end, json.dumps([summary["phase"], summary["health"]["problems"]]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as fh:
        out = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and out, "status as an ordinary user failed"
    return json.loads(out)


@pytest.fixture
def cluster_lab(labkit_lab_factory):
    """A kube-3node lab of the test's own (these tests break it)."""
    return labkit_lab_factory(TOPOLOGIES / "kube-3node.yaml")


def pod_status(name: str) -> dict:
    return json.loads(ok(run_labkit("status", "--name", name, "--format", "json")).stdout)


def resolves(name: str) -> bool:
    return run_labkit("exec", name, "default/client", "--", "getent", "hosts",
                      "web.default.svc.cluster.local").returncode == 0


def dns_pid_files(name: str) -> list[str]:
    folder = os.path.join(state.lab_dir(name), "dns")
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".pid")]


def kill_and_wait(pid: int) -> None:
    """SIGKILL `pid` and return once it has exited (its pidfd turns readable), sockets closed."""
    fd = os.pidfd_open(pid)
    try:
        os.kill(pid, signal.SIGKILL)
        assert select.select([fd], [], [], 10)[0], f"process {pid} outlived SIGKILL"
    finally:
        os.close(fd)


# ---------------------------------------------------------------- 1. names


def test_names_that_are_not_lab_names_touch_nothing(tmp_path, sleeper):
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "keep").write_text("mine\n")
    (decoy / "x.pid").write_text(f"{sleeper.pid}\n")
    root = tmp_path / "state"
    (root / "other").mkdir(parents=True)
    (root / "other" / "state.json").write_text("{}")
    victim = f"lkv{secrets.token_hex(3)}"
    pod_ns = f"{netns_prefix(victim)}default.x"  # what `--name VICTIM.default` matched as a prefix
    subprocess.run(["ip", "netns", "add", pod_ns], check=True)
    env = {"LABKIT_STATE_DIR": str(root)}
    try:
        # `VICTIM.default` is a lab name by containerlab's rule: it runs mapped (labkit.topology.names),
        # never as the prefix lk-VICTIM.default; down under it removes nothing of lab VICTIM's
        proc = run_labkit("down", "--name", f"{victim}.default", env=env)
        assert proc.returncode == 0 and "was not up" in proc.stdout, proc.stdout + proc.stderr
        for name in (str(decoy), ".", "..", "a/b", str(root / "other")):
            for argv in (["down", "--name", name], ["status", "--name", name], ["exec", name, "x", "--", "true"],
                         ["apply", str(TOPOLOGIES / "kube-3node.yaml"), "--name", name]):
                proc = run_labkit(*argv, env=env)
                assert proc.returncode == 2 and "is not a lab name" in proc.stderr, (argv, proc.stderr)
        assert (decoy / "keep").read_text() == "mine\n" and (decoy / "x.pid").exists()
        assert sleeper.poll() is None
        assert (root / "other" / "state.json").exists()
        assert netns.list_namespaces(pod_ns) == [pod_ns]
    finally:
        netns.delete_namespace(pod_ns)


# ---------------------------------------------------------------- 2. file modes


def _writable_by_others(path: str) -> bool:
    st = os.lstat(path)
    return not stat.S_ISLNK(st.st_mode) and bool(st.st_mode & 0o022)


def test_up_under_umask_000_creates_nothing_others_may_write(tmp_path, monkeypatch, ordinary_user):
    top = Path(f"/run/lkt-{secrets.token_hex(3)}")  # /run is traversable by all: the user test means something
    root = top / "state"
    monkeypatch.setenv("LABKIT_STATE_DIR", str(root))
    name = unique_lab_name("modes")
    try:
        ok(run_labkit("up", str(TOPOLOGIES / "kube-3node.yaml"), "--name", name, "-q", umask=0))
        everything = [str(root)]
        for folder, dirs, files in os.walk(root):
            everything += [os.path.join(folder, n) for n in dirs + files]
        etc = [os.path.join("/etc/netns", n) for n in os.listdir("/etc/netns")
               if n.startswith((netns_prefix(name), f".{netns_prefix(name)}"))]
        for folder in [e for e in etc if os.path.isdir(e)]:
            etc += [os.path.join(folder, n) for n in os.listdir(folder)]
        assert len(etc) > 4
        assert [p for p in everything + etc if _writable_by_others(p)] == []
        lab_dir = paths.lab_dir(name)
        bin_dir = os.path.join(lab_dir, "cni", "bin")
        for path, mode in ((str(root), 0o755), (lab_dir, 0o755), (bin_dir, 0o755),
                           (os.path.join(bin_dir, "labkit-cni"), 0o755),
                           (os.path.join(lab_dir, "pods", "default.client", "hosts"), 0o644),
                           (os.path.join(lab_dir, "pods", "default.client", "resolv.conf"), 0o644),
                           (os.path.join(lab_dir, "dns", "config.json"), 0o644),
                           (os.path.join(lab_dir, "cni", "server.pid"), 0o644)):
            st = os.stat(path)
            assert (stat.S_IMODE(st.st_mode), st.st_uid) == (mode, 0), path
        assert stat.S_IMODE(os.stat(os.path.join(lab_dir, "cni", "labkit-cni.sock")).st_mode) & 0o077 == 0
        # ... and an ordinary user can indeed change none of it (the harness can write where it may)
        probe = tmp_path / "probe"
        assert as_user(ordinary_user, "sh", "-c", f"echo x > /dev/null && test -r {root}") == 0
        for target in [os.path.join(bin_dir, "labkit-cni"), os.path.join(lab_dir, "cni", "server.pid"),
                       *dns_pid_files(name), os.path.join(lab_dir, "dns", "config.json"),
                       os.path.join(lab_dir, "pods", "default.client", "hosts"),
                       os.path.join("/etc/netns", f"{netns_prefix(name)}cp", "hosts")]:
            assert as_user(ordinary_user, "sh", "-c", f"echo x >> '{target}'") != 0, target
        for folder in (bin_dir, lab_dir, str(root), os.path.join(lab_dir, "dns")):
            assert as_user(ordinary_user, "touch", os.path.join(folder, "planted")) != 0, folder
        # ... and reads the lab's status as healthy: what it may not look into (root's processes' namespaces,
        # the root-only CNI socket) is no sign of a lab in trouble
        assert status_as(ordinary_user, name) == ["up", []]
        del probe
    finally:
        ok(run_labkit("down", "--name", name))
        assert leftovers(name) == []
        shutil.rmtree(top, ignore_errors=True)


# ---------------------------------------------------------------- 3. pid identity, DNS restart


def test_apply_restarts_a_dead_dns_server(cluster_lab):
    name = cluster_lab.name
    assert resolves(name)
    (pidfile,) = dns_pid_files(name)
    cni_server = processes.read_pid_file(os.path.join(state.lab_dir(name), "cni", "server.pid"))
    for proc in (processes.read_pid_file(pidfile), cni_server):
        kill_and_wait(proc.pid)
    status = pod_status(name)
    problems = status["health"]["problems"]
    assert status["phase"] == "degraded" and any("DNS server" in p for p in problems), problems
    assert any("CNI server" in p for p in problems), problems
    ok(run_labkit("apply", str(TOPOLOGIES / "kube-3node.yaml"), "--name", name, "-q"))
    assert resolves(name)
    status = pod_status(name)
    assert (status["phase"], status["health"]) == ("up", {"ok": True, "problems": []})


def test_pid_files_naming_another_process_never_get_it_signalled(cluster_lab, sleeper):
    name = cluster_lab.name
    (pidfile,) = dns_pid_files(name)
    Path(pidfile).write_text(f"{sleeper.pid}\n")  # as a server writes its own: a bare pid
    cni_pid = os.path.join(state.lab_dir(name), "cni", "server.pid")
    Path(cni_pid).write_text(f"{sleeper.pid} {processes.start_time(sleeper.pid)}\n")  # even with its start time
    ok(run_labkit("apply", str(TOPOLOGIES / "kube-3node.yaml"), "--name", name, "-q"))
    assert sleeper.poll() is None
    assert resolves(name)  # a DNS server serves (the one the lost pid file named was replaced)
    ok(run_labkit("down", "--name", name))
    assert sleeper.poll() is None
    assert leftovers(name) == []


def test_exec_refuses_a_pod_whose_holder_pid_is_another_process(cluster_lab, sleeper):
    name = cluster_lab.name
    recorded = state.read(name)
    client = next(p for p in recorded["summary"]["pods"] if p["name"] == "client")
    client["pid"], client["pid_start"] = sleeper.pid, processes.start_time(sleeper.pid)
    state.write(name, recorded)
    proc = run_labkit("exec", name, "default/client", "--", "true")
    assert proc.returncode == 1 and "is not running" in proc.stderr, proc.stderr
    assert pod_status(name)["phase"] == "degraded"


# ---------------------------------------------------------------- 4. lock, crash windows, health


def test_a_second_verb_on_a_busy_lab_is_refused(cluster_lab):
    name = cluster_lab.name
    with lab_lock(name, "apply"):
        for argv in (["apply", str(TOPOLOGIES / "kube-3node.yaml"), "--name", name], ["down", "--name", name]):
            proc = run_labkit(*argv)
            assert proc.returncode == 1, proc.stderr
            assert f"lab {name} is busy: another labkit apply (pid {os.getpid()}) holds it" in proc.stderr
        assert pod_status(name)["phase"] == "up"  # status and exec take no lock
    assert not [n for n in netns.list_namespaces(netns_prefix(name)) if n.endswith(".extra")]


def test_apply_after_an_apply_killed_during_scale_up(cluster_lab, tmp_path):
    """What a SIGKILL between a pod's sandbox and the state write leaves: its namespace, its lease,
    its veth on the node, a process in it; none of it recorded. The next apply must work."""
    from labkit.cni.conflist import execute_conflist

    name = cluster_lab.name
    topology = yaml.safe_load((TOPOLOGIES / "kube-3node.yaml").read_text())
    extra = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "extra", "namespace": "default"},
             "spec": {"nodeName": "w1", "containers": [{"name": "c", "command": ["sleep", "infinity"]}]}}
    topology["workloads"] = [str(TOPOLOGIES / "workloads" / "kube-apps.yaml"), extra]
    scaled = tmp_path / "scaled.yaml"
    scaled.write_text(yaml.safe_dump(topology, sort_keys=False))
    orphan = f"{netns_prefix(name)}default.extra"
    netns.create_namespaces([orphan])
    execute_conflist("ADD", os.path.join(state.lab_dir(name), "cni", "w1", "10-labkit.conflist"),
                     container_id=f"{name}.default.extra", netns=netns.netns_path(orphan), ifname="eth0",
                     node_netns=cluster_lab.netns_path("w1"))
    left = subprocess.Popen(["ip", "netns", "exec", orphan, "sleep", "600"])
    try:
        ok(run_labkit("apply", str(scaled), "--name", name, "-q"))
        assert left.wait(timeout=10) is not None  # the leftover process went with its namespace
        pod = next(p for p in pod_status(name)["pods"] if p["name"] == "extra")
        cluster_lab.assert_reachable("default/client", pod["ip"])
        ok(run_labkit("apply", str(TOPOLOGIES / "kube-3node.yaml"), "--name", name, "-q"))  # and back
        assert netns.list_namespaces(orphan) == []
    finally:
        left.kill()
        left.wait()


def test_down_finds_the_servers_of_a_lab_whose_state_folder_was_deleted(cluster_lab):
    name = cluster_lab.name
    servers = processes.naming(state.lab_dir(name))
    assert len(servers) >= 2  # the CNI server and the DNS server
    shutil.rmtree(state.lab_dir(name))
    ok(run_labkit("down", "--name", name))
    assert [pid for pid in servers if processes.identify(pid)] == []
    assert leftovers(name) == []


@pytest.mark.parametrize("text", ["[]", '"up"', '{"summary": [1]}'])
def test_a_state_file_that_is_not_an_object_does_not_crash(labkit_lab_factory, text):
    running = labkit_lab_factory(TOPOLOGIES / "two-hosts.yaml")
    Path(state.lab_dir(running.name), "state.json").write_text(text)
    proc = run_labkit("status", "--name", running.name, "--format", "json")
    assert proc.returncode == 0 and "internal error" not in proc.stderr, proc.stderr
    ok(run_labkit("down", "--name", running.name))
    assert leftovers(running.name) == []


# ---------------------------------------------------------------- 5. pod capabilities


CAPS_TOPOLOGY = """
name: caps
mgmt: {ipv4-subnet: 172.31.0.0/24}
cluster: {pod-cidr: 10.244.0.0/16, service-cidr: 10.96.0.0/16, cni: {backend: host-gw}, dns: {ip: 10.96.0.10}}
topology:
  nodes:
    n1: {kind: k8s-node}
workloads:
  - {apiVersion: v1, kind: Pod, metadata: {name: plain},
     spec: {containers: [{name: c, command: [socat, "TCP-LISTEN:8080,fork,reuseaddr", "SYSTEM:echo hi"],
                          ports: [{containerPort: 8080}]}]}}
  - {apiVersion: v1, kind: Pod, metadata: {name: admin},
     spec: {containers: [{name: c, command: [sleep, infinity], securityContext: {capabilities: {add: [NET_ADMIN]}}}]}}
"""
CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21


@pytest.mark.parametrize("runtime", ["netns", "docker"])
def test_pods_run_with_a_containers_capabilities(labkit_lab_factory, tmp_path, runtime):
    topology = tmp_path / "caps.yaml"
    topology.write_text(CAPS_TOPOLOGY)
    running = labkit_lab_factory(topology, runtime=runtime)
    name = running.name

    def in_pod(pod: str, *argv: str) -> int:
        return run_labkit("exec", name, f"default/{pod}", "--", *argv).returncode

    assert in_pod("plain", "ip", "route", "add", "10.99.0.0/24", "dev", "eth0") != 0
    assert in_pod("plain", "ip", "link", "set", "lo", "down") != 0
    assert in_pod("plain", "nsenter", "--net=/proc/1/ns/net", "true") != 0
    assert in_pod("plain", "ping", "-c1", "-W2", "127.0.0.1") == 0  # NET_RAW is a container's
    assert in_pod("admin", "ip", "route", "add", "10.99.0.0/24", "dev", "eth0") == 0
    assert in_pod("admin", "nsenter", "--net=/proc/1/ns/net", "true") != 0  # still no SYS_ADMIN
    if runtime == "docker":  # the engine's own containers: their processes are the engine's to confine
        return
    # the container's own process, not only exec: no NET_ADMIN, no SYS_ADMIN in its bounding set
    plain = next(p for p in running.summary["pods"] if p["name"] == "plain")
    server = [pid for pid in netns.pids_in_namespaces([plain["netns_path"]]) if pid != plain["pid"]]
    assert server
    for pid in server:
        with open(f"/proc/{pid}/status") as fh:
            bounding = int(next(line for line in fh if line.startswith("CapBnd:")).split()[1], 16)
        assert not bounding & (1 << CAP_NET_ADMIN | 1 << CAP_SYS_ADMIN), pid
