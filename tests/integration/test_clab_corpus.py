"""The containerlab corpus (tests/topologies/clab/) brought up under each runtime its file names
(`# runs: netns docker`), checked through the user's own node names, and torn down by the plugin
(which fails the test on any leftover: namespaces, containers, and the host ends of `host` links).

The macvlan parent is a veth pair this module creates and removes (never a real NIC); its name,
and the prefix of the `host` links' host ends, are given to the files through the environment,
as containerlab's `${VAR:=default}` reads it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.net import netlink as nl
from labkit.net.wiring import host_link_alias
from tests.unit.test_clab_corpus import runtimes_of

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests/topologies/clab"
PARENT, PARENT_PEER = "lkclabmv0", "lkclabmv1"
RUNS = [(runtime, path.name.removesuffix(".clab.yml")) for path in sorted(CORPUS.glob("*.clab.yml"))
        for runtime in runtimes_of(path)]


@pytest.fixture(scope="module")
def macvlan_parent() -> Iterator[str]:
    """A veth pair of the test's own in the host, both ends up: the macvlan links' parent."""
    subprocess.run(["ip", "link", "del", PARENT], capture_output=True, check=False)  # one a crashed run left
    subprocess.run(["ip", "link", "add", PARENT, "type", "veth", "peer", "name", PARENT_PEER], check=True)
    try:
        for name in (PARENT, PARENT_PEER):
            subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield PARENT
    finally:
        subprocess.run(["ip", "link", "del", PARENT], check=False)


@pytest.fixture
def corpus_env(macvlan_parent: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAB_MACVLAN_PARENT", macvlan_parent)
    monkeypatch.setenv("CLAB_HOST_PREFIX", "lkclab")
    monkeypatch.setenv("USER_NAME", "labkit")


def _ping(lab, source: str, address: str) -> None:
    lab.exec(source, "ping", "-c1", "-W3", address, check=True)


@pytest.mark.parametrize(("runtime", "case"), RUNS, ids=[f"{r}-{c}" for r, c in RUNS])
def test_corpus_file_runs(runtime: str, case: str, corpus_env: None, labkit_lab_factory) -> None:
    lab = labkit_lab_factory(CORPUS / f"{case}.clab.yml", runtime=runtime)
    assert lab.runtime == runtime
    CHECKS[case](lab)


def _all_linux(lab) -> None:
    assert set(lab.nodes()) == {"router1", "router2", "router3", "PC1", "PC2", "PC3"}  # the user's names
    _ping(lab, "PC1", "192.168.12.2")  # PC1 -> router1 -> router2 -> PC2
    _ping(lab, "PC3", "192.168.11.2")


def _names(lab) -> None:
    assert set(lab.nodes()) == {"PC1", "pc1", "leaf_1", "Spine-Router-Number-01"}
    assert lab.nodes()["PC1"]["netns"] != lab.nodes()["pc1"]["netns"]
    _ping(lab, "PC1", "10.77.0.2")
    lab.exec("Spine-Router-Number-01", "ip", "addr", "add", "10.77.1.1/24", "dev", "eth1", check=True)
    _ping(lab, "Spine-Router-Number-01", "10.77.1.2")


def _links(lab) -> None:
    _ping(lab, "h1", "10.79.0.2")  # veth, brief
    _ping(lab, "h1", "10.79.1.2")  # veth, extended
    _ping(lab, "h1", "10.79.4.2")  # two macvlans of one parent, bridge mode
    with nl.Netlink() as sock:  # the host ends of `host` links: named as written, marked as the lab's
        ends = {link["name"]: link for link in sock.links() if link.get("alias") == host_link_alias(lab.name)}
    assert set(ends) == {"lkclabh1e3", "lkclabh2e3"}
    subprocess.run(["ip", "addr", "add", "10.79.2.2/24", "dev", "lkclabh1e3"], check=True)
    _ping(lab, "h1", "10.79.2.2")  # node -> host over the host link
    mgmt_ports = lab.exec("h1", "ip", "-o", "link", "show", "eth4", check=True).stdout
    assert "eth4" in mgmt_ports


def _every_key(lab) -> None:
    if lab.runtime == "docker":  # the container keys the docker runtime acts on
        out = lab.exec("app", "sh", "-c", "cat /srv/bind-me.conf; echo $GREETING $COUNT $FROM_FILE $SHARED; "
                       "hostname", check=True).stdout
        assert out.split("\n")[:3] == ["hello from the host", "hello labkit 3 yes defaults", "app-host"]
    _ping(lab, "db", "10.78.0.3")  # through the bridge node
    _check_port_forward(lab)
    assert lab.nodes()["app"]["mgmt_ipv4"] == "172.31.78.10"
    assert lab.nodes()["db"]["mgmt_ipv4"].startswith("172.31.78.1")  # from ipv4-range 172.31.78.128/25


SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 80)); s.listen(1)
print("ready", flush=True)
c, _ = s.accept(); c.sendall(b"hi from app " + c.recv(64)); c.close()
"""


def _check_port_forward(lab) -> None:
    """`ports: [127.0.0.1:47080:80]`: the host's 47080 reaches port 80 inside node app."""
    server = subprocess.Popen(["nsenter", f"--net={lab.netns_path('app')}", sys.executable, "-c", SERVER],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline() == "ready\n"
        with socket.create_connection(("127.0.0.1", 47080), timeout=10) as conn:
            conn.sendall(b"host")
            conn.shutdown(socket.SHUT_WR)
            assert conn.recv(64) == b"hi from app host"
        assert server.wait(timeout=10) == 0
    finally:
        server.kill()
        server.wait()


def _ipv6(lab) -> None:
    """containerlab's IPv6 keys acted on: mgmt addresses (given, and from ipv6-range), both forms of link
    addresses, routes by exec; nothing `tentative` (labkit turns duplicate address detection off)."""
    eth0 = lab.exec("h1", "ip", "-6", "-o", "addr", "show", "dev", "eth0", check=True).stdout
    assert "fd00:172:31:80::100/64" in eth0 and "tentative" not in eth0  # the range's first: r1 gave its own
    lab.exec("h1", "ping", "-6", "-c1", "-W3", "fd00:172:31:80::10", check=True)  # r1 over the mgmt network
    lab.exec("h1", "ping", "-6", "-c1", "-W3", "fd00:80:2::2", check=True)  # through r1 and the bridge sw
    lab.exec("h2", "ping", "-6", "-c1", "-W3", "fd00:80:2::3", check=True)  # across the bridge
    _ping(lab, "h1", "10.80.1.1")  # the dual-stack link's IPv4 too
    for node in ("r1", "h1", "h2", "h3"):
        assert "tentative" not in lab.exec(node, "ip", "-6", "-o", "addr", "show", check=True).stdout


CHECKS = {"all-linux": _all_linux, "names": _names, "links": _links, "every-key": _every_key, "ipv6": _ipv6}


def test_every_runnable_file_has_its_checks() -> None:
    assert {case for _, case in RUNS} == set(CHECKS)
    assert os.geteuid() == 0
