"""labkit graph of a dual-stack lab: nodes, links, pods and Services labelled with both families' addresses."""

from __future__ import annotations

from labkit.graph import build_model, render_graph

DUAL = {
    "name": "ds", "runtime": "netns",
    "mgmt": {"subnet": "172.31.0.0/24", "subnet6": "fd00:172:31::/64", "host_access": False},
    "nodes": [
        {"name": "cp", "kind": "k8s-node", "mgmt_ipv4": "172.31.0.2", "mgmt_ipv6": "fd00:172:31::2",
         "pod_cidr": "10.244.0.0/24", "pod_cidrs": ["10.244.0.0/24", "fd00:10:244::/64"],
         "interfaces": [{"name": "eth0", "ipv4": ["172.31.0.2/24"], "ipv6": ["fd00:172:31::2/64"], "peer": None},
                        {"name": "eth1", "ipv4": ["10.0.0.1/30"], "ipv6": ["fd00:1::1/64"], "peer": "r6:eth1"}]},
        {"name": "r6", "kind": "linux", "mgmt_ipv4": None, "mgmt_ipv6": "fd00:172:31::9",
         "interfaces": [{"name": "eth0", "ipv4": [], "ipv6": ["fd00:172:31::9/64"], "peer": None},
                        {"name": "eth1", "ipv4": [], "ipv6": ["fd00:1::2/64"], "peer": "cp:eth1"}]},
    ],
    "links": [{"a": "cp:eth1", "b": "r6:eth1"}],
    "pods": [{"namespace": "default", "name": "web", "node": "cp", "ip": "10.244.0.5",
              "ips": ["10.244.0.5", "fd00:10:244::5"]}],
    "services": [{"namespace": "default", "name": "web", "type": "ClusterIP", "cluster_ip": "10.96.0.20",
                  "cluster_ips": ["10.96.0.20", "fd00:10:96::14"], "ports": [{"port": 80, "protocol": "TCP"}],
                  "endpoints": ["[fd00:10:244::5]:80", "10.244.0.5:80"]}],
    "dns": {"ip": "10.96.0.10", "ips": ["10.96.0.10", "fd00:10:96::a"]},
}


def test_the_model_holds_both_families() -> None:
    model = build_model(DUAL)
    cp, r6 = model.nodes
    assert cp.pod_cidrs == ["10.244.0.0/24", "fd00:10:244::/64"] and cp.mgmt_ipv6 == "fd00:172:31::2"
    assert cp.mgmt_ifname == "eth0" and cp.mgmt_addresses == ["172.31.0.2/24", "fd00:172:31::2/64"]
    assert r6.mgmt_ifname == "eth0" and r6.mgmt_addresses == ["fd00:172:31::9/64"]  # found by its IPv6 address
    assert model.links[0].a.addresses == ["10.0.0.1/30", "fd00:1::1/64"]
    pod = model.pods[0]
    assert pod.addresses == "10.244.0.5 fd00:10:244::5"
    svc = model.services[0]
    assert svc.address == "10.96.0.20 fd00:10:96::14"
    assert [e.pod.key if e.pod else None for e in svc.endpoints] == ["default/web", "default/web"]
    assert model.mgmt is not None and model.mgmt["subnets"] == "172.31.0.0/24 fd00:172:31::/64"


def test_every_format_labels_both_families() -> None:
    for fmt in ("mermaid", "dot", "html"):
        text = render_graph(DUAL, fmt)
        for address in ("fd00:10:244::/64", "10.244.0.0/24", "fd00:10:244::5", "10.244.0.5", "fd00:10:96::14",
                        "fd00:1::1/64", "fd00:172:31::9/64", "fd00:172:31::/64"):
            assert address in text, (fmt, address)


def test_an_ipv4_summary_draws_as_before() -> None:
    v4 = {"name": "v4", "mgmt": {"subnet": "172.31.0.0/24", "host_access": False},
          "nodes": [{"name": "a", "kind": "linux", "mgmt_ipv4": "172.31.0.2", "pod_cidr": "10.244.0.0/24",
                     "interfaces": [{"name": "eth0", "ipv4": ["172.31.0.2/24"]}]}],
          "pods": [{"namespace": "default", "name": "p", "node": "a", "ip": "10.244.0.5"}]}
    mermaid = render_graph(v4, "mermaid")
    assert '["a<br/>linux<br/>pods 10.244.0.0/24"]' in mermaid
    assert '(["pod default/p<br/>10.244.0.5"])' in mermaid or '("pod default/p<br/>10.244.0.5")' in mermaid
    assert '[["mgmt 172.31.0.0/24"]]' in mermaid
