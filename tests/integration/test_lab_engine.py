"""The lab engine under both runtimes: shipped topologies come up, work, and leave nothing."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time

import pytest

from labkit import lab
from labkit.net import netns
from labkit.pytest_plugin import RunningLab, labkit_fixture, unique_lab_name
from labkit.runtime.docker import LABEL_LAB
from labkit.topology.plan import netns_prefix

from .conftest import ROOT, RUNTIMES, TOPOLOGIES, labkit

# The hosts of each shipped topology and the address each is reached at.
HOSTS = {
    "two-hosts": {"h1": "10.0.0.1", "h2": "10.0.0.2"},
    "routed-triangle": {"h1": "192.168.1.10", "h2": "192.168.2.10", "r3": "10.0.23.2"},
    "switch": {"h1": "10.1.0.1", "h2": "10.1.0.2", "h3": "10.1.0.3", "h4": "10.1.0.4"},
}

# Tests that only read a lab share it, for the module, under each runtime.
two_hosts = labkit_fixture(TOPOLOGIES / "two-hosts.yaml", runtime=RUNTIMES)
triangle = labkit_fixture(TOPOLOGIES / "routed-triangle.yaml", runtime=RUNTIMES)
switch = labkit_fixture(TOPOLOGIES / "switch.yaml", runtime=RUNTIMES)


def containers(client, name: str) -> list[str]:
    return [c.name for c in client.containers.list(all=True, filters={"label": f"{LABEL_LAB}={name}"})]


def assert_every_host_reaches_every_other(running: RunningLab, topology: str, request) -> None:
    if running.runtime == "netns":
        assert len(netns.list_namespaces(netns_prefix(running.name))) == len(running.summary["nodes"])
    else:
        assert len(containers(request.getfixturevalue("labkit_docker"), running.name)) == len(running.summary["nodes"])
    for (src, _), (_, address) in itertools.permutations(HOSTS[topology].items(), 2):
        result = running.exec(src, "ping", "-c1", "-W2", address)
        assert result.returncode == 0, f"{src} cannot reach {address}: {result.stdout}"


def test_two_hosts_connect(two_hosts: RunningLab, request) -> None:
    assert_every_host_reaches_every_other(two_hosts, "two-hosts", request)


def test_routed_triangle_connects_and_takes_the_static_path(triangle: RunningLab, request) -> None:
    assert_every_host_reaches_every_other(triangle, "routed-triangle", request)
    assert "via 192.168.1.1" in triangle.exec("h1", "ip", "route", "get", "192.168.2.10").stdout
    assert "via 10.0.13.1" in triangle.exec("r3", "ip", "route", "get", "192.168.1.10").stdout
    ttl = triangle.exec("h1", "ping", "-c1", "-W2", "192.168.2.10").stdout
    assert "ttl=62" in ttl, ttl  # two routers on the way: r1 and r2


def test_switch_connects_with_its_mtu_and_bridge_ports(switch: RunningLab, request) -> None:
    assert_every_host_reaches_every_other(switch, "switch", request)
    assert "mtu 1400" in switch.exec("h4", "ip", "link", "show", "eth1").stdout
    ports = switch.exec("sw", "ip", "-o", "link", "show", "master", "br0").stdout
    assert sorted(line.split(":")[1].strip().split("@")[0] for line in ports.splitlines()) == \
        ["p1", "p2", "p3", "p4"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_process_living_in_the_lab_does_not_survive_down(labkit_lab_factory, runtime: str) -> None:
    running = labkit_lab_factory(TOPOLOGIES / "two-hosts.yaml", runtime=runtime)
    # `sh` says so once it runs inside h1's namespace, then becomes the sleep (same pid)
    holder = subprocess.Popen(["nsenter", f"--net={running.netns_path('h1')}", "sh", "-c", "echo in; exec sleep 600"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "in", "the holder never entered the lab"
        assert os.stat(f"/proc/{holder.pid}/ns/net").st_ino == os.stat(running.netns_path("h1")).st_ino
        lab.down(running.name)
        try:
            code = holder.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
    finally:
        holder.kill()
        holder.wait()
    assert code is not None and code < 0, f"a process living in the lab survived down (exit code {code})"
    assert lab.leftovers(running.name) == []


@pytest.mark.parametrize("runtimes", [("netns", "netns"), ("docker", "netns"), ("netns", "docker")],
                         ids=lambda r: "+".join(r))
def test_two_labs_side_by_side_do_not_touch_each_other(labkit_lab_factory, runtimes) -> None:
    first = labkit_lab_factory(TOPOLOGIES / "two-hosts.yaml", runtime=runtimes[0])
    second = labkit_lab_factory(TOPOLOGIES / "two-hosts.yaml", runtime=runtimes[1])
    first.assert_reachable("h1", "10.0.0.2")
    second.assert_reachable("h1", "10.0.0.2")
    lab.down(first.name)
    assert lab.leftovers(first.name) == []
    second.assert_reachable("h1", "10.0.0.2", within=0)  # taking one lab down must not break the other
    assert second.exec("h2", "ip", "-br", "addr", "show", "eth1").stdout.split()[2] == "10.0.0.2/24"


def test_container_killed_behind_labkits_back_then_down_leaves_nothing(labkit_lab_factory, labkit_docker) -> None:
    running = labkit_lab_factory(TOPOLOGIES / "kube-3node.yaml", runtime="docker")
    victims = [c for c in labkit_docker.containers.list(filters={"label": f"{LABEL_LAB}={running.name}"})
               if c.labels.get("labkit.node") in ("w1", "cp")][:3]
    assert victims
    for container in victims:
        container.kill()
    labkit_docker.containers.get(f"{netns_prefix(running.name)}w2").remove(force=True)
    labkit("down", "--name", running.name)
    assert lab.leftovers(running.name) == []


def test_docker_lab_whose_state_was_deleted_is_listed_and_taken_down(labkit_lab_factory, labkit_docker) -> None:
    """With /run/labkit/<lab> gone (deleted by hand, a reboot of the tmpfs, a crash before the first
    write) the engine's labels still name the lab: `list` shows it and `down --name` removes it."""
    import shutil

    from labkit import state

    running = labkit_lab_factory(TOPOLOGIES / "two-hosts.yaml", runtime="docker")
    shutil.rmtree(state.lab_dir(running.name))
    assert containers(labkit_docker, running.name)
    assert running.name in labkit("list").stdout.split()
    out = labkit("down", "--name", running.name)
    assert "removed" in out.stdout
    assert lab.leftovers(running.name) == []


def test_down_twice_and_by_name_only() -> None:
    name = unique_lab_name("twice")
    try:
        up = labkit("up", "--name", name, "topologies/two-hosts.yaml")
        assert f"lab {name} (netns, up)" in up.stdout and "10.0.0.2/24" in up.stdout  # the lab, as status shows it
        first = labkit("down", "--name", name)
        second = labkit("down", "--name", name)
    finally:
        lab.down(name)
    assert "removed" in first.stdout and "nothing to remove" in second.stdout
    assert lab.leftovers(name) == []


def test_exec_passes_the_exit_code_through(two_hosts: RunningLab) -> None:
    running = two_hosts
    assert labkit("exec", running.name, "h1", "--", "sh", "-c", "exit 7", check=False).returncode == 7
    assert labkit("exec", running.name, "h1", "--", "ping", "-c1", "-W2", "10.0.0.2", check=False).returncode == 0
    missing = labkit("exec", running.name, "nope", "--", "true", check=False)
    assert missing.returncode == 1 and "has no node 'nope'" in missing.stderr


def test_status_json_has_the_contracted_keys(two_hosts: RunningLab) -> None:
    import json

    running = two_hosts
    status = json.loads(labkit("status", "--name", running.name, "--format", "json").stdout)
    assert status["name"] == running.name and status["runtime"] == running.runtime
    assert {"name", "kind", "mgmt_ipv4", "pod_cidr"} <= set(status["nodes"][0])
    assert {n["name"] for n in status["nodes"]} == {"h1", "h2"}
    # the netns runtime knows whether each node's namespace is there
    assert [n["running"] for n in status["nodes"]] == ([True, True] if running.runtime == "netns" else [None, None])
    assert status["pods"] == [] and status["services"] == [] and status["dns"] is None


def test_failing_phase_undoes_everything(tmp_path) -> None:
    topo = tmp_path / "broken.yaml"
    topo.write_text((TOPOLOGIES / "two-hosts.yaml").read_text().replace(
        "h2: {kind: linux}", "h2: {kind: linux, exec: [\"ip route add 10.9.0.0/16 via 10.5.0.1\"]}"))
    name = unique_lab_name("fail")
    try:
        proc = labkit("up", "-q", "--name", name, str(topo), check=False)
    finally:
        found = lab.leftovers(name)
        lab.down(name)
    assert found == []
    assert proc.returncode == 1
    assert "node h2: exec 'ip route add 10.9.0.0/16 via 10.5.0.1' exited with 2" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_mgmt_network_and_host_access(labkit_lab_factory, tmp_path) -> None:
    topo = tmp_path / "mgmt.yaml"
    topo.write_text(
        "name: mgmt\nmgmt: {ipv4-subnet: 172.30.99.0/24, host-access: true}\n"
        "topology:\n  nodes:\n    a: {kind: linux}\n    b: {kind: linux, mgmt-ipv4: 172.30.99.20}\n"
    )
    running = labkit_lab_factory(topo)
    running.assert_reachable("a", "172.30.99.20")
    assert subprocess.run(["ping", "-c1", "-W2", "172.30.99.2"], capture_output=True).returncode == 0
    hosts = running.exec("a", "cat", "/etc/hosts").stdout
    assert "172.30.99.2\ta" in hosts and "172.30.99.20\tb" in hosts
    running.assert_reachable("a", "b")  # node names resolve through the lab's hosts file
    assert "there is no DNS server" in running.exec("b", "cat", "/etc/resolv.conf").stdout


def test_sigkill_during_up_then_down_by_name_leaves_nothing(tmp_path) -> None:
    nodes = 400
    lines = ["name: chain", "topology:", "  nodes:"]
    lines += [f"    n{i}: {{kind: linux}}" for i in range(nodes)]
    lines += ["  links:"]
    lines += [f"    - endpoints: [\"n{i}:eth1\", \"n{i + 1}:eth2\"]" for i in range(nodes - 1)]
    topo = tmp_path / "chain.yaml"
    topo.write_text("\n".join(lines) + "\n")
    name = unique_lab_name("kill")
    proc = subprocess.Popen([sys.executable, "-m", "labkit.cli", "up", "-q", "--name", name, str(topo)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not netns.list_namespaces(netns_prefix(name)) and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    try:
        assert lab.leftovers(name), "the kill came too late to test anything"
    finally:
        labkit("down", "--name", name)
    assert lab.leftovers(name) == []
