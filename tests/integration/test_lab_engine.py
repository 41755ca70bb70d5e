"""The lab engine on network namespaces: shipped topologies come up, work, and leave nothing."""

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
from labkit.topology.plan import netns_prefix

from .conftest import (
    ROOT,
    RUNTIMES,
    TOPOLOGIES,
    lab_containers,
    labkit,
    leftovers,
    start_lab,
    stop_lab,
    unique_name,
)

# The hosts of each shipped topology and the address each is reached at.
HOSTS = {
    "two-hosts": {"h1": "10.0.0.1", "h2": "10.0.0.2"},
    "routed-triangle": {"h1": "192.168.1.10", "h2": "192.168.2.10", "r3": "10.0.23.2"},
    "switch": {"h1": "10.1.0.1", "h2": "10.1.0.2", "h3": "10.1.0.3", "h4": "10.1.0.4"},
}


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("topology", sorted(HOSTS))
def test_shipped_topology_connects_every_host_and_leaves_nothing(topology: str, runtime: str) -> None:
    running = start_lab(TOPOLOGIES / f"{topology}.yaml", runtime=runtime)
    try:
        if runtime == "netns":
            assert len(netns.list_namespaces(netns_prefix(running.name))) == len(running.summary["nodes"])
        else:
            assert len(lab_containers(running.name)) == len(running.summary["nodes"])
        for (src, _), (_, address) in itertools.permutations(HOSTS[topology].items(), 2):
            assert running.ping(src, address), f"{src} cannot reach {address}"
        first = running.summary["nodes"][0]["name"]
        holder = subprocess.Popen(["nsenter", f"--net={running.netns_path(first)}", "sleep", "600"])
        time.sleep(0.2)
    finally:
        stop_lab(running)
    holder.wait(timeout=10)
    assert holder.returncode != 0, "a process living in the lab survived down"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_routed_triangle_takes_the_static_path(runtime: str) -> None:
    running = start_lab(TOPOLOGIES / "routed-triangle.yaml", runtime=runtime)
    try:
        out = running.exec("h1", "ip", "route", "get", "192.168.2.10").stdout
        assert "via 192.168.1.1" in out
        out = running.exec("r3", "ip", "route", "get", "192.168.1.10").stdout
        assert "via 10.0.13.1" in out
        ttl = running.exec("h1", "ping", "-c1", "-W2", "192.168.2.10").stdout
        assert "ttl=62" in ttl, ttl  # two routers on the way: r1 and r2
    finally:
        stop_lab(running)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_switch_mtu_and_bridge_ports(runtime: str) -> None:
    running = start_lab(TOPOLOGIES / "switch.yaml", runtime=runtime)
    try:
        assert "mtu 1400" in running.exec("h4", "ip", "link", "show", "eth1").stdout
        ports = running.exec("sw", "ip", "-o", "link", "show", "master", "br0").stdout
        assert sorted(line.split(":")[1].strip().split("@")[0] for line in ports.splitlines()) == \
            ["p1", "p2", "p3", "p4"]
    finally:
        stop_lab(running)


@pytest.mark.parametrize("runtimes", [("netns", "netns"), ("docker", "netns"), ("netns", "docker")],
                         ids=lambda r: "+".join(r))
def test_two_labs_side_by_side_do_not_touch_each_other(lab_factory, runtimes) -> None:
    first = lab_factory(TOPOLOGIES / "two-hosts.yaml", runtime=runtimes[0])
    second = lab_factory(TOPOLOGIES / "two-hosts.yaml", runtime=runtimes[1])
    assert first.ping("h1", "10.0.0.2") and second.ping("h1", "10.0.0.2")
    lab.down(first.name)
    assert leftovers(first.name) == []
    assert second.ping("h1", "10.0.0.2"), "taking one lab down broke the other"
    assert second.exec("h2", "ip", "-br", "addr", "show", "eth1").stdout.split()[2] == "10.0.0.2/24"


def test_container_killed_behind_labkits_back_then_down_leaves_nothing(lab_factory) -> None:
    import docker

    running = lab_factory(TOPOLOGIES / "kube-3node.yaml", runtime="docker")
    client = docker.from_env()
    try:
        victims = [c for c in client.containers.list(filters={"label": f"labkit.lab={running.name}"})
                   if c.labels.get("labkit.node") in ("w1", "cp")][:3]
        assert victims
        for container in victims:
            container.kill()
        client.containers.get(f"{netns_prefix(running.name)}w2").remove(force=True)
    finally:
        client.close()
    labkit("down", "--name", running.name)
    assert leftovers(running.name) == []


def test_docker_lab_whose_state_was_deleted_is_listed_and_taken_down(lab_factory) -> None:
    """With /run/labkit/<lab> gone (deleted by hand, a reboot of the tmpfs, a crash before the first
    write) the engine's labels still name the lab: `list` shows it and `down --name` removes it."""
    import shutil

    from labkit import state

    running = lab_factory(TOPOLOGIES / "two-hosts.yaml", runtime="docker")
    shutil.rmtree(state.lab_dir(running.name))
    assert lab_containers(running.name)
    assert running.name in labkit("list").stdout.split()
    out = labkit("down", "--name", running.name)
    assert "removed" in out.stdout
    assert leftovers(running.name) == []


def test_down_twice_and_by_name_only() -> None:
    name = unique_name("twice")
    up = labkit("up", "--name", name, "topologies/two-hosts.yaml")
    assert f"lab {name} (netns, up)" in up.stdout and "10.0.0.2/24" in up.stdout  # the lab, as status shows it
    first = labkit("down", "--name", name)
    second = labkit("down", "--name", name)
    assert "removed" in first.stdout and "nothing to remove" in second.stdout
    assert leftovers(name) == []


def test_exec_passes_the_exit_code_through(lab_factory) -> None:
    running = lab_factory(TOPOLOGIES / "two-hosts.yaml")
    assert labkit("exec", running.name, "h1", "--", "sh", "-c", "exit 7", check=False).returncode == 7
    assert labkit("exec", running.name, "h1", "--", "ping", "-c1", "-W2", "10.0.0.2", check=False).returncode == 0
    missing = labkit("exec", running.name, "nope", "--", "true", check=False)
    assert missing.returncode == 1 and "has no node 'nope'" in missing.stderr


def test_status_json_has_the_contracted_keys(lab_factory) -> None:
    import json

    running = lab_factory(TOPOLOGIES / "two-hosts.yaml")
    status = json.loads(labkit("status", "--name", running.name, "--format", "json").stdout)
    assert status["name"] == running.name and status["runtime"] == "netns"
    assert {"name", "kind", "mgmt_ipv4", "pod_cidr"} <= set(status["nodes"][0])
    assert {n["name"] for n in status["nodes"]} == {"h1", "h2"}
    assert all(n["running"] for n in status["nodes"])
    assert status["pods"] == [] and status["services"] == [] and status["dns"] is None


def test_failing_phase_undoes_everything(tmp_path) -> None:
    topo = tmp_path / "broken.yaml"
    topo.write_text((TOPOLOGIES / "two-hosts.yaml").read_text().replace(
        "h2: {kind: linux}", "h2: {kind: linux, exec: [\"ip route add 10.9.0.0/16 via 10.5.0.1\"]}"))
    name = unique_name("fail")
    try:
        proc = labkit("up", "-q", "--name", name, str(topo), check=False)
    finally:
        found = leftovers(name)
        labkit("down", "--name", name)
    assert found == []
    assert proc.returncode == 1
    assert "node h2: exec 'ip route add 10.9.0.0/16 via 10.5.0.1' exited with 2" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_mgmt_network_and_host_access(lab_factory, tmp_path) -> None:
    topo = tmp_path / "mgmt.yaml"
    topo.write_text(
        "name: mgmt\nmgmt: {ipv4-subnet: 172.30.99.0/24, host-access: true}\n"
        "topology:\n  nodes:\n    a: {kind: linux}\n    b: {kind: linux, mgmt-ipv4: 172.30.99.20}\n"
    )
    running = lab_factory(topo)
    assert running.ping("a", "172.30.99.20")
    assert subprocess.run(["ping", "-c1", "-W2", "172.30.99.2"], capture_output=True).returncode == 0
    hosts = running.exec("a", "cat", "/etc/hosts").stdout
    assert "172.30.99.2\ta" in hosts and "172.30.99.20\tb" in hosts
    assert running.ping("a", "b"), "node names resolve through the lab's hosts file"
    assert "there is no DNS server" in running.exec("b", "cat", "/etc/resolv.conf").stdout


def test_sigkill_during_up_then_down_by_name_leaves_nothing(tmp_path) -> None:
    nodes = 400
    lines = ["name: chain", "topology:", "  nodes:"]
    lines += [f"    n{i}: {{kind: linux}}" for i in range(nodes)]
    lines += ["  links:"]
    lines += [f"    - endpoints: [\"n{i}:eth1\", \"n{i + 1}:eth2\"]" for i in range(nodes - 1)]
    topo = tmp_path / "chain.yaml"
    topo.write_text("\n".join(lines) + "\n")
    name = unique_name("kill")
    proc = subprocess.Popen([sys.executable, "-m", "labkit.cli", "up", "-q", "--name", name, str(topo)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not netns.list_namespaces(netns_prefix(name)) and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert leftovers(name), "the kill came too late to test anything"
    labkit("down", "--name", name)
    assert leftovers(name) == []
