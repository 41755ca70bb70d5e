"""IPv6 in the lab engine: the IPv6-only router lab (topologies/routers-v6.yaml) under both runtimes,
and a dual-stack lab (tests/integration/dualstack-hosts.yaml): addresses usable when `up` returns (none
`tentative`), forwarding and router advertisements as set, /etc/hosts per family, static routes of
both families, and nothing left after `down`."""

from __future__ import annotations

import itertools
import subprocess

import pytest

from labkit import lab
from labkit.topology.plan import host_link_name
from labkit.pytest_plugin import RunningLab, labkit_fixture

from .conftest import RUNTIMES, TOPOLOGIES, labkit

ROUTERS_V6 = TOPOLOGIES / "routers-v6.yaml"
DUALSTACK = "dualstack-hosts.yaml"
# each host of the router lab and the address it is reached at; h1 and h2 are three routers apart
V6_HOSTS = {"h1": "fd00:6:1::10", "h2": "fd00:6:2::10", "r3": "fd00:6:23::1"}
ROUTERS = ("r1", "r2", "r3")

routers6 = labkit_fixture(ROUTERS_V6, runtime=RUNTIMES)
dualstack = labkit_fixture(DUALSTACK)


def _sysctl(running: RunningLab, node: str, key: str) -> str:
    return running.exec(node, "cat", "/proc/sys/" + key.replace(".", "/"), check=True).stdout.strip()


def _addresses(running: RunningLab, node: str) -> str:
    return running.exec(node, "ip", "-6", "-o", "addr", "show", check=True).stdout


def test_every_host_reaches_every_other_over_ipv6_through_the_routers(routers6: RunningLab) -> None:
    for (src, _), (_, address) in itertools.permutations(V6_HOSTS.items(), 2):
        result = routers6.exec(src, "ping", "-6", "-c1", "-W2", address)
        assert result.returncode == 0, f"{src} cannot reach {address}: {result.stdout}{result.stderr}"
    far = routers6.exec("h1", "ping", "-6", "-c1", "-W2", V6_HOSTS["h2"], check=True).stdout
    assert "ttl=61" in far, far  # r1, r2 and r3 on the way: each took one off the hop limit


def test_the_router_lab_has_no_ipv4_and_no_address_in_duplicate_address_detection(routers6: RunningLab) -> None:
    for node in ("h1", "h2", *ROUTERS):
        shown = _addresses(routers6, node)
        assert "fd00:6:" in shown and "tentative" not in shown, f"{node}: {shown}"
        assert "dadfailed" not in shown
        v4 = routers6.exec(node, "ip", "-4", "-o", "addr", "show", check=True).stdout
        assert [line.split()[3] for line in v4.splitlines()] == ["127.0.0.1/8"], f"{node} has IPv4: {v4}"
        assert _sysctl(routers6, node, "net.ipv6.conf.all.accept_ra") == "0"
        assert _sysctl(routers6, node, "net.ipv6.conf.eth1.accept_dad") == "0"
    for node in ROUTERS:
        assert _sysctl(routers6, node, "net.ipv6.conf.all.forwarding") == "1"
    assert _sysctl(routers6, "h1", "net.ipv6.conf.all.forwarding") == "0"


def test_verify_checks_the_router_lab_over_ipv6(routers6: RunningLab) -> None:
    """The file's own `expect:`: pings across the routers, an unreachable prefix, a TCP port that refuses."""
    result = labkit("verify", str(ROUTERS_V6), "--name", routers6.name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6/6 checks as expected" in result.stdout


def test_the_router_lab_routes_are_its_static_ones(routers6: RunningLab) -> None:
    assert "via fd00:6:1::1 dev eth1" in routers6.exec("h1", "ip", "-6", "route", "get", V6_HOSTS["h2"]).stdout
    assert "via fd00:6:23::1" in routers6.exec("r2", "ip", "-6", "route", "get", V6_HOSTS["h2"]).stdout
    # r3's route back to h1 came from its `exec` (ip -6 route add): both ways of writing a route work
    assert "via fd00:6:23:: " in routers6.exec("r3", "ip", "-6", "route", "get", V6_HOSTS["h1"]).stdout
    hosts = routers6.exec("h2", "cat", "/etc/hosts", check=True).stdout
    assert "fd00:6:1::10\th1" in hosts.splitlines() and "::1\tlocalhost ip6-localhost ip6-loopback" in hosts
    by_name = routers6.exec("h2", "ping", "-c1", "-W2", "h1")
    assert by_name.returncode == 0 and "fd00:6:1::10" in by_name.stdout, by_name.stdout


def test_dual_stack_lab_mgmt_and_links_carry_both_families(dualstack: RunningLab) -> None:
    nodes = dualstack.nodes()
    assert nodes["h1"]["mgmt_ipv4"] == "172.31.96.3"
    eth0 = dualstack.exec("h1", "ip", "-o", "addr", "show", "dev", "eth0", check=True).stdout
    assert "172.31.96.3/24" in eth0 and "fd00:172:31:96::11/64" in eth0 and "tentative" not in eth0
    # over the mgmt network, by name (/etc/hosts holds both families)
    hosts = dualstack.exec("h2", "cat", "/etc/hosts", check=True).stdout.splitlines()
    assert "172.31.96.3\th1" in hosts and "fd00:172:31:96::11\th1" in hosts
    for family in ("-4", "-6"):
        dualstack.exec("h2", "ping", family, "-c1", "-W2", "h1", check=True)
    # over the links, through r1 (forwarding IPv4 and, with it, IPv6), both families
    for address in ("10.96.2.10", "fd00:96:2::10"):
        result = dualstack.exec("h1", "ping", "-c1", "-W2", address)
        assert result.returncode == 0 and "ttl=63" in result.stdout, result.stdout
    assert _sysctl(dualstack, "r1", "net.ipv6.conf.all.forwarding") == "1"
    for node in ("r1", "h1", "h2"):
        assert "tentative" not in _addresses(dualstack, node)
    assert "tentative" not in _addresses(dualstack, "h2")  # h2's both default routes: one per family
    routes = dualstack.exec("h2", "ip", "-6", "route", "show", "default", check=True).stdout
    assert "via fd00:96:2::1" in routes


def test_host_access_reaches_the_mgmt_network_in_both_families(dualstack: RunningLab) -> None:
    link = host_link_name(dualstack.name)
    shown = subprocess.run(["ip", "-6", "-o", "addr", "show", "dev", link], capture_output=True, text=True,
                           check=True).stdout
    assert "fd00:172:31:96::1/64" in shown and "tentative" not in shown, shown
    for address in ("172.31.96.3", "fd00:172:31:96::11"):
        subprocess.run(["ping", "-c1", "-W2", address], capture_output=True, check=True)


def test_ipv6_lab_down_leaves_nothing(labkit_lab_factory) -> None:
    running = labkit_lab_factory(ROUTERS_V6, runtime="netns")
    assert "tentative" not in _addresses(running, "r2")
    lab.down(running.name)
    assert lab.leftovers(running.name) == []
    lab.down(running.name)  # twice in a row, as every down
    assert lab.leftovers(running.name) == []


@pytest.mark.parametrize("topology", [ROUTERS_V6, TOPOLOGIES / "two-hosts.yaml"], ids=["routers-v6", "two-hosts"])
def test_ipv6_sysctls_only_where_there_is_ipv6(topology, labkit_lab_factory) -> None:
    """An IPv4-only lab is built as before: its namespaces keep the kernel's IPv6 defaults."""
    running = labkit_lab_factory(topology, runtime="netns")
    ipv6 = topology == ROUTERS_V6
    assert _sysctl(running, "h1", "net.ipv6.conf.default.accept_dad") == ("0" if ipv6 else "1")
    assert ("::1\tlocalhost" in running.exec("h1", "cat", "/etc/hosts", check=True).stdout) == ipv6
