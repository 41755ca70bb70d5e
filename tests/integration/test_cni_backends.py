"""Cross-node pod traffic with the host-gw and vxlan backends, plus egress masquerade.

Two node namespaces and an `ext` namespace share a mgmt network (a bridge in a
switch namespace); each node gets a pod through the in-process plugin API.
"""

from __future__ import annotations

import json
import sys

import pytest

from labkit.cni import backends as bk
from labkit.cni import plugin
from labkit.cni.conflist import render_conflist

from .test_cni_helpers import needs_root, scratch_fixture

pytestmark = [pytest.mark.integration, needs_root]

scratch = pytest.fixture(scratch_fixture)

CLUSTER = "10.244.0.0/16"
MGMT = "172.31.250"


def build_cluster(s, backend):
    sw = s.netns("sw")
    s.sh(sw, "ip", "link", "add", "br0", "type", "bridge")
    s.sh(sw, "ip", "link", "set", "br0", "up")

    def attach(ns, host_ip, i):
        port = f"{s.prefix}-{i}"
        s.veth(ns, "eth0", sw, port)
        s.sh(sw, "ip", "link", "set", port, "master", "br0", "up")
        s.sh(ns, "ip", "addr", "add", f"{host_ip}/24", "dev", "eth0")
        s.sh(ns, "ip", "link", "set", "eth0", "up")

    nodes = []
    for i in (1, 2):
        ns = s.netns(f"n{i}")
        attach(ns, f"{MGMT}.{i + 1}", i)
        nodes.append(bk.ClusterNode(f"n{i}", ns, f"{MGMT}.{i + 1}", f"10.244.{i}.0/24"))
    ext = s.netns("ext")
    attach(ext, f"{MGMT}.10", 9)

    mtu = bk.pod_mtu(backend, bk.underlay_mtu(nodes[0].netns_path))
    bk.apply_cluster(backend, nodes)
    bk.apply_cluster(backend, nodes)  # idempotent
    pods = []
    for n in nodes:
        bk.apply_masquerade(n.netns_path, CLUSTER, pod_cidr=n.pod_cidr)
        bk.apply_masquerade(n.netns_path, CLUSTER, pod_cidr=n.pod_cidr)  # atomic replace
        conf = json.loads(render_conflist(f"{s.prefix}-k", n.pod_cidr, mtu=mtu,
                                          data_dir=f"{s.tmpdir()}/ipam"))["plugins"][0]
        conf |= {"cniVersion": "1.1.0", "name": f"{s.prefix}-k"}
        pod = s.netns(f"{n.name}pod")
        res = plugin.execute("ADD", conf, container_id=f"{n.name}-web", netns=pod,
                             ifname="eth0", node_netns=n.netns_path)
        pods.append((pod, res["ips"][0]["address"].split("/")[0], conf))
    return nodes, pods, ext, mtu


@pytest.mark.parametrize("backend", ["host-gw", "vxlan"])
def test_cross_node_pods_no_nat_and_masquerade(scratch, backend):
    s = scratch
    nodes, pods, ext, mtu = build_cluster(s, backend)
    (pod1, ip1, conf1), (pod2, ip2, _) = pods
    assert ip1.startswith("10.244.1.") and ip2.startswith("10.244.2.")

    if backend == "vxlan":
        assert mtu == 1450
        link = json.loads(s.sh(nodes[0].netns_path, "ip", "-j", "-d", "link", "show",
                               "flannel.1").stdout)[0]
        info = link["linkinfo"]["info_data"]
        assert (info["id"], info["port"], info["local"], info["link"]) == \
            (1, 8472, nodes[0].node_ip, "eth0")
        assert info.get("learning") is False
        assert link["mtu"] == 1450 and link["address"] == bk.vtep_mac_for(nodes[0].node_ip)
        assert json.loads(s.sh(pod1, "ip", "-j", "link", "show", "eth0").stdout)[0]["mtu"] == 1450
        routes = s.sh(nodes[0].netns_path, "ip", "route", "show", "10.244.2.0/24").stdout
        assert "via 10.244.2.0 dev flannel.1" in routes and "onlink" in routes
        neigh = s.sh(nodes[0].netns_path, "ip", "neigh", "show", "dev", "flannel.1").stdout
        assert "10.244.2.0" in neigh and "PERMANENT" in neigh
        fdb = s.sh(nodes[0].netns_path, "bridge", "fdb", "show", "dev", "flannel.1").stdout
        assert f"dst {nodes[1].node_ip}" in fdb
        # re-applying keeps the device (no flap): same ifindex
        bk.apply_cluster(backend, nodes)
        again = json.loads(s.sh(nodes[0].netns_path, "ip", "-j", "link", "show",
                                "flannel.1").stdout)[0]
        assert again["ifindex"] == link["ifindex"]
    else:
        assert mtu == 1500
        routes = s.sh(nodes[0].netns_path, "ip", "route", "show", "10.244.2.0/24").stdout
        assert f"via {nodes[1].node_ip} dev eth0" in routes

    # pod <-> pod across nodes
    assert s.ping(pod1, ip2) and s.ping(pod2, ip1)
    # the server pod sees the client pod's own IP: no NAT between pods
    srv = s.tcp_server(pod2, 8080)
    assert s.tcp_client(pod1, ip2, 8080) == "hello"
    assert srv.stdout.readline().strip() == ip1
    # leaving the cluster: masqueraded to the node's IP
    srv = s.tcp_server(ext, 9090)
    assert s.tcp_client(pod1, f"{MGMT}.10", 9090) == "hello"
    assert srv.stdout.readline().strip() == nodes[0].node_ip
    table = s.sh(nodes[0].netns_path, "nft", "list", "table", "ip", "labkit-cni").stdout
    assert "masquerade" in table and CLUSTER in table

    # teardown of what the backend made
    plugin.execute("DEL", conf1, container_id="n1-web", netns=pod1, ifname="eth0",
                   node_netns=nodes[0].netns_path)
    for n in nodes:
        bk.remove_backend(backend, n, nodes)
        bk.remove_masquerade(n.netns_path)
        bk.remove_masquerade(n.netns_path)  # idempotent
        assert "10.244." not in s.sh(n.netns_path, "ip", "route", "show", "proto", "static").stdout
        assert s.sh(n.netns_path, "ip", "link", "show", "flannel.1", check=False).returncode != 0
        assert "labkit-cni" not in s.sh(n.netns_path, "nft", "list", "tables").stdout
    assert not s.ping(pod2, ip1)


CLUSTER6 = "fd00:10:244::/56"
MGMT6 = "fd00:172:31:250"
# A one-shot TCP server on both families (IPv4 peers shown without ::ffff:) printing the peer it saw.
SERVER_BOTH = r"""
import socket, sys
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1])))
s.listen(8)
print("ready", flush=True)
for _ in range(int(sys.argv[2])):
    c, addr = s.accept()
    print(addr[0].removeprefix("::ffff:"), flush=True)
    c.sendall(b"hello\n")
    c.close()
"""


def build_dual_stack_cluster(s, backend, mode):
    """Two dual-stack nodes (IPv4 and IPv6 on the mgmt network, nodad) and `ext`, a pod on each node
    with an address of each family (host-local ranges), the backend and masquerade applied per family."""
    sw = s.netns("sw")
    s.sh(sw, "ip", "link", "add", "br0", "type", "bridge")
    s.sh(sw, "ip", "link", "set", "br0", "up")

    def attach(ns, i, host):
        port = f"{s.prefix}-{i}"
        s.veth(ns, "eth0", sw, port)
        s.sh(sw, "ip", "link", "set", port, "master", "br0", "up")
        s.sh(ns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
        s.sh(ns, "ip", "addr", "add", f"{MGMT}.{host}/24", "dev", "eth0")
        s.sh(ns, "ip", "addr", "add", f"{MGMT6}::{host}/64", "dev", "eth0", "nodad")
        s.sh(ns, "ip", "link", "set", "eth0", "up")

    nodes = []
    for i in (1, 2):
        ns = s.netns(f"n{i}")
        attach(ns, i, i + 1)
        s.sh(ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        nodes.append(bk.ClusterNode(f"n{i}", ns, f"{MGMT}.{i + 1}", f"10.244.{i}.0/24",
                                    pod_cidrs=(f"10.244.{i}.0/24", f"fd00:10:244:{i}::/64"),
                                    node_ip6=f"{MGMT6}::{i + 1}"))
    ext = s.netns("ext")
    attach(ext, 9, 10)
    mtu = bk.pod_mtu(backend, bk.underlay_mtu(nodes[0].netns_path))
    bk.apply_cluster(backend, nodes)
    bk.apply_cluster(backend, nodes)  # idempotent
    pods = []
    for n in nodes:
        bk.apply_masquerade(n.netns_path, [CLUSTER, CLUSTER6], pod_cidr=list(n.pod_cidrs))
        conf = json.loads(render_conflist(f"{s.prefix}-k", list(n.pod_cidrs), mtu=mtu, mode=mode,
                                          data_dir=f"{s.tmpdir()}/ipam"))["plugins"][0]
        conf |= {"cniVersion": "1.1.0", "name": f"{s.prefix}-k"}
        pod = s.netns(f"{n.name}pod")
        res = plugin.execute("ADD", conf, container_id=f"{n.name}-web", netns=pod, ifname="eth0",
                             node_netns=n.netns_path)
        pods.append((pod, [ip["address"].split("/")[0] for ip in res["ips"]]))
    return nodes, pods, ext


@pytest.mark.parametrize(("backend", "mode"), [("host-gw", "ptp"), ("vxlan", "ptp"), ("host-gw", "bridge"),
                                             ("vxlan", "bridge")])
def test_dual_stack_pods_cross_nodes_per_family_without_nat(scratch, backend, mode):
    """Each family end to end: the pods' addresses from their node's podCIDR of that family, pod to pod
    across nodes with the source address kept, pod to outside with the node's address of the family."""
    s = scratch
    nodes, pods, ext = build_dual_stack_cluster(s, backend, mode)
    (pod1, ips1), (pod2, ips2) = pods
    assert [ips1[0].startswith("10.244.1."), ips1[1].startswith("fd00:10:244:1::")] == [True, True], ips1
    assert [ips2[0].startswith("10.244.2."), ips2[1].startswith("fd00:10:244:2::")] == [True, True], ips2
    if backend == "vxlan":
        held = json.loads(s.sh(nodes[0].netns_path, "ip", "-6", "-j", "addr", "show", "dev", "flannel.1").stdout)
        (vtep,) = [a for a in held[0]["addr_info"] if a["scope"] == "global"]
        assert (vtep["local"], vtep["prefixlen"], vtep.get("tentative", False)) == ("fd00:10:244:1::", 128, False)
        neigh = s.sh(nodes[0].netns_path, "ip", "-6", "neigh", "show", "dev", "flannel.1").stdout
        assert "fd00:10:244:2:: lladdr" in neigh and "PERMANENT" in neigh
        route = s.sh(nodes[0].netns_path, "ip", "-6", "route", "show", "fd00:10:244:2::/64").stdout
        assert "via fd00:10:244:2:: dev flannel.1" in route and "onlink" in route
    else:
        route = s.sh(nodes[0].netns_path, "ip", "-6", "route", "show", "fd00:10:244:2::/64").stdout
        assert f"via {MGMT6}::3 dev eth0" in route
    for ip in ips2:
        assert s.ping(pod1, ip), ip
    srv = s.spawn(pod2, sys.executable, "-c", SERVER_BOTH, "8080", "2")
    assert srv.stdout.readline().strip() == "ready", srv.stderr.read()
    assert [s.tcp_client(pod1, ip, 8080) for ip in ips2] == ["hello", "hello"]
    assert [srv.stdout.readline().strip() for _ in ips2] == ips1  # no NAT, in either family
    srv = s.spawn(ext, sys.executable, "-c", SERVER_BOTH, "9090", "2")
    assert srv.stdout.readline().strip() == "ready", srv.stderr.read()
    assert [s.tcp_client(pod1, ip, 9090) for ip in (f"{MGMT}.10", f"{MGMT6}::10")] == ["hello", "hello"]
    assert [srv.stdout.readline().strip() for _ in range(2)] == [nodes[0].node_ip, nodes[0].node_ip6]
    for n in nodes:
        bk.remove_backend(backend, n, nodes)
        bk.remove_masquerade(n.netns_path)
        assert "fd00:10:244:" not in s.sh(n.netns_path, "ip", "-6", "route", "show", "proto", "static").stdout
        assert "labkit-cni" not in s.sh(n.netns_path, "nft", "list", "tables").stdout
