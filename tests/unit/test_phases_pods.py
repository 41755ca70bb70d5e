"""The pods phase's pure parts: a pod's addresses from its CNI result (the cluster's family order) and the
hosts file the kubelet writes for them."""

from __future__ import annotations

from types import SimpleNamespace

from labkit.cni import bridged
from labkit.phases.pods import kubelet_hosts, pod_ips

# as labkit-cni answers a dual-stack ADD in bridge mode: the bridge, the host veth, the pod's interface
RESULT = {
    "interfaces": [{"name": "cni0", "mac": "0e:62:0a:f4:01:01"}, {"name": "veth1", "mac": "aa:aa:aa:aa:aa:01"},
                   {"name": "eth0", "mac": "aa:aa:aa:aa:aa:02", "sandbox": "/run/netns/p"}],
    "ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 2},
            {"address": "fd00:10:244:1::5/64", "gateway": "fd00:10:244:1::1", "interface": 2}],
}


def test_pod_ips_come_in_the_clusters_family_order() -> None:
    assert pod_ips(RESULT, (4, 6)) == ["10.244.1.5", "fd00:10:244:1::5"]
    assert pod_ips(RESULT, (6, 4)) == ["fd00:10:244:1::5", "10.244.1.5"]  # IPv6 preferred: first
    single = {**RESULT, "ips": RESULT["ips"][:1]}
    assert pod_ips(single, (4,)) == ["10.244.1.5"]


def test_pod_ips_skip_other_interfaces_and_duplicates() -> None:
    chained = {**RESULT, "ips": [{"address": "192.168.9.1/24", "interface": 0}, *RESULT["ips"],
                                 {"address": "10.244.1.99/24", "interface": 2}]}
    assert pod_ips(chained, (4, 6)) == ["10.244.1.5", "fd00:10:244:1::5"]
    no_index = {"ips": [{"address": "fd00:10:244:1::7/128"}, {"address": "10.244.1.7/32"}]}
    assert pod_ips(no_index, (4, 6)) == ["10.244.1.7", "fd00:10:244:1::7"]
    assert pod_ips({"ips": []}, (4,)) == []


def test_hosts_file_has_a_line_per_pod_ip() -> None:
    pod = SimpleNamespace(hostname="web-0", namespace="default", spec=SimpleNamespace(subdomain="web"))
    cluster = SimpleNamespace(domain="cluster.local")
    hosts = kubelet_hosts(pod, ["10.244.1.5", "fd00:10:244:1::5"], cluster)
    assert hosts.splitlines()[-2:] == ["10.244.1.5\tweb-0.web.default.svc.cluster.local web-0",
                                       "fd00:10:244:1::5\tweb-0.web.default.svc.cluster.local web-0"]
    assert kubelet_hosts(pod, ["10.244.1.5"], cluster).count("web-0.web") == 1


def test_bridge_mac_per_family() -> None:
    """IPv4: the gateway's bytes, as ever; IPv6: its prefix's last two bytes (the node) and its own last two."""
    assert bridged.bridge_mac("10.244.1.1") == "0e:62:0a:f4:01:01"
    assert bridged.bridge_mac("fd00:10:244:1::1") == "0e:62:00:01:00:01"
    assert bridged.bridge_mac("fd00:10:244:2::1") != bridged.bridge_mac("fd00:10:244:1::1")
