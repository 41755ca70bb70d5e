"""The cluster network on every backend and mode: pods on every node reach each other without NAT,
reach the outside through the node's address, and leave nothing after down."""

from __future__ import annotations

import ipaddress
import itertools
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from labkit import state
from labkit.pytest_plugin import RunningLab
from labkit.topology.plan import netns_prefix

from labkit.families import host_port

from .conftest import families, labkit

# A one-shot TCP server that answers with the address it sees the client connect from, and says
# "ready" once it listens.
PEER_ADDRESS_SERVER = """
import ipaddress, socket, sys
try:  # both families where the namespace has IPv6 (an IPv4 peer shows as ::ffff:a.b.c.d: unmapped below)
    server = socket.create_server(("::", int(sys.argv[1])), family=socket.AF_INET6, dualstack_ipv6=True)
except OSError:
    server = socket.create_server(("", int(sys.argv[1])))
print("ready", flush=True)
conn, (peer, *_) = server.accept()
peer = ipaddress.ip_address(peer)
conn.sendall(str(getattr(peer, "ipv4_mapped", None) or peer).encode() + b"\\n")
conn.close()
"""


def serve_peer_address(netns_path: str, port: int) -> subprocess.Popen:
    """PEER_ADDRESS_SERVER in a network namespace (run from the host, so the same for both
    runtimes), returned once it listens."""
    server = subprocess.Popen(["nsenter", f"--net={netns_path}", sys.executable, "-c", PEER_ADDRESS_SERVER, str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = server.stdout.readline().strip()
    assert ready == "ready", server.stderr.read()
    return server


def test_every_pod_pings_every_other_pod(kube_lab: RunningLab) -> None:
    """... on every address it has: one per cluster family."""
    everyone = kube_lab.pods()
    pairs = [(src, dst, ip) for src, dst in itertools.permutations(everyone, 2) for ip in everyone[dst]["ips"]]

    def ping(pair: tuple[str, str, str]) -> tuple[str, str, bool]:
        src, _, ip = pair
        ok = kube_lab.exec(src, "ping", "-c1", "-W2", ip).returncode == 0
        return src, ip, ok

    with ThreadPoolExecutor(8) as pool:
        failed = [(s, ip) for s, ip, ok in pool.map(ping, pairs) if not ok]
    assert len(everyone) >= 5 and failed == []
    assert all(len(p["ips"]) == len(families(kube_lab)) for p in everyone.values())


def test_pods_are_spread_and_addressed_from_their_node_cidr(kube_lab: RunningLab) -> None:
    nodes = {n["name"]: n for n in kube_lab.summary["nodes"]}
    for pod in kube_lab.summary["pods"]:
        assert ipaddress.IPv4Address(pod["ip"]) in ipaddress.IPv4Network(nodes[pod["node"]]["pod_cidr"])
        pod_cidrs = [ipaddress.ip_network(c) for c in nodes[pod["node"]]["pod_cidrs"]]
        assert [ipaddress.ip_address(ip).version for ip in pod["ips"]] == list(families(kube_lab))
        assert all(any(ipaddress.ip_address(ip) in c for c in pod_cidrs) for ip in pod["ips"]), pod
    assert kube_lab.pods()["default/client"]["node"] == "cp" and kube_lab.pods()["team-a/probe"]["node"] == "w2"
    replicas = [p for p in kube_lab.pods() if p.startswith("default/echo-")]
    assert len(replicas) == 3
    assert all(re.fullmatch(r"default/echo-[a-z0-9]{10}-[a-z0-9]{5}", name) for name in replicas)


def test_pod_sees_its_own_hostname_hosts_and_resolv_conf(kube_lab: RunningLab) -> None:
    probe = kube_lab.pods()["team-a/probe"]
    assert kube_lab.exec("team-a/probe", "hostname").stdout.strip() == "probe"
    hosts = kube_lab.exec("team-a/probe", "cat", "/etc/hosts").stdout
    assert all(f"{ip}\tprobe" in hosts for ip in probe["ips"])  # kubelet writes every pod IP
    resolv = kube_lab.exec("team-a/probe", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 10.96.0.10" in resolv
    assert "search team-a.svc.cluster.local svc.cluster.local cluster.local" in resolv
    assert "options ndots:5" in resolv


def test_pod_to_pod_across_nodes_keeps_the_source_address(kube_lab: RunningLab) -> None:
    client, server_pod = kube_lab.pods()["default/client"], kube_lab.pods()["team-a/probe"]
    assert client["node"] != server_pod["node"]
    for family, (ip, source) in enumerate(zip(server_pod["ips"], client["ips"], strict=True)):
        server = serve_peer_address(server_pod["netns_path"], 9000 + family)
        try:
            seen = kube_lab.exec("default/client", "socat", "-T3", "-", f"TCP:{host_port(ip, 9000 + family)}").stdout
        finally:
            server.kill()
            server.wait()
        assert seen.strip() == source, f"pod-to-pod traffic to {ip} was NATed"


def test_pod_to_outside_is_masqueraded_to_the_node_address(kube_lab: RunningLab) -> None:
    """... unless `cni.masquerade: false` (kube-bgp, Calico's natOutgoing: false): then by its own address."""
    nodes = {n["name"]: n for n in kube_lab.summary["nodes"]}
    probe = kube_lab.pods()["team-a/probe"]
    masquerade = kube_lab.summary["cni"]["masquerade"]
    for family, pod_ip in zip(families(kube_lab), probe["ips"], strict=True):
        key = "mgmt_ipv4" if family == 4 else "mgmt_ipv6"
        server = serve_peer_address(kube_lab.netns_path("ext"), 9100 + family)
        try:
            seen = kube_lab.exec("team-a/probe", "socat", "-T3", "-",
                                 f"TCP:{host_port(nodes['ext'][key], 9100 + family)}").stdout
        finally:
            server.kill()
            server.wait()
        assert seen.strip() == (nodes[probe["node"]][key] if masquerade else pod_ip), family


def test_deployment_replicas_serve(kube_lab: RunningLab) -> None:
    client = kube_lab.pods()["default/client"]
    for name, pod in kube_lab.pods().items():
        if name.startswith("default/echo-"):
            for ip, source in zip(pod["ips"], client["ips"], strict=True):
                answer = kube_lab.exec("default/client", "socat", "-T3", "-", f"TCP:{host_port(ip, 8080)}").stdout
                pod_name, peer = answer.split()
                seen = ipaddress.ip_address(peer.strip("[]"))  # socat writes IPv6 in full
                assert pod_name == name.split("/")[1] and seen == ipaddress.ip_address(source), answer


def test_exec_into_a_pod_and_status_json(kube_lab: RunningLab) -> None:
    assert labkit("exec", kube_lab.name, "team-a/probe", "--", "sh", "-c", "exit 3", check=False).returncode == 3
    status = json.loads(labkit("status", "--name", kube_lab.name, "--format", "json").stdout)
    assert {(p["namespace"], p["name"]) for p in status["pods"]} == {
        (p["namespace"], p["name"]) for p in kube_lab.summary["pods"]}
    assert all({"namespace", "name", "node", "ip"} <= set(p) for p in status["pods"])
    assert (status["dns"]["ip"], status["dns"]["domain"]) == ("10.96.0.10", "cluster.local")


def test_pods_attach_as_the_topologys_cni_mode_says(kube_lab: RunningLab) -> None:
    """ptp: a routed /32 per pod and a /32 route per pod in the node; bridge: pods on cni0 (the
    gateway's address, hairpin on every port), /24 pod addresses, their MACs learnt by the bridge."""
    import yaml

    cni = yaml.safe_load(kube_lab.topology.read_text())["cluster"]["cni"]
    status = json.loads(labkit("status", "--name", kube_lab.name, "--format", "json").stdout)
    assert (status["cni"]["backend"], status["cni"]["mode"]) == (cni["backend"], cni.get("mode", "ptp"))
    cp = kube_lab.netns_path("cp")
    on_cp = [p for p in kube_lab.summary["pods"] if p["node"] == "cp"]
    assert len(on_cp) >= 2
    client = kube_lab.exec("default/client", "ip", "-j", "addr", "show", "eth0").stdout
    (prefixlen,) = [a["prefixlen"] for a in json.loads(client)[0]["addr_info"] if a["family"] == "inet"]
    node = lambda *argv: subprocess.run(["nsenter", f"--net={cp}", *argv], capture_output=True, text=True,  # noqa: E731
                                        check=True).stdout
    if status["cni"]["mode"] == "bridge":
        assert prefixlen == 24
        ports = [p for p in json.loads(node("bridge", "-j", "-d", "link", "show")) if p.get("master") == "cni0"]
        assert len(ports) == len(on_cp) and all(p["hairpin"] for p in ports)
        kube_lab.exec("default/client", "ping", "-c1", "-W2", on_cp[-1]["ip"])
        learnt = {e["mac"] for e in json.loads(node("bridge", "-j", "fdb", "show", "br", "cni0"))}
        pod_mac = json.loads(kube_lab.exec(f"{on_cp[-1]['namespace']}/{on_cp[-1]['name']}", "ip", "-j", "link",
                                           "show", "eth0").stdout)[0]["address"]
        assert pod_mac in learnt
    else:
        assert prefixlen == 32
        routes = {r["dst"] for r in json.loads(node("ip", "-j", "route"))}
        assert {p["ip"] for p in on_cp} <= routes


def test_a_pod_that_never_listens_fails_up_clearly_and_leaves_nothing(
        tmp_path, monkeypatch, labkit_lab_factory) -> None:
    """The plugin's own teardown checks that the failed lab left nothing behind."""
    from labkit.phases import pods

    topology = tmp_path / "deaf.yaml"
    topology.write_text(
        "name: deaf\ncluster: {}\ntopology:\n  nodes:\n    n1: {kind: k8s-node}\nworkloads:\n"
        "  - {apiVersion: v1, kind: Pod, metadata: {name: deaf, namespace: default}, spec: {containers: "
        "[{name: c, image: labkit/node, command: [sleep, infinity], ports: [{containerPort: 9999}]}]}}\n")
    monkeypatch.setattr(pods, "READY_TIMEOUT", 0.5)
    with pytest.raises(pytest.fail.Exception,
                       match=r"phase 'readiness': pod default/deaf: nothing listens on containerPort 9999"):
        labkit_lab_factory(topology)


def test_the_labs_dns_and_cni_servers_run(kube_lab: RunningLab) -> None:
    """Every cluster lab runs a DNS server and a CNI server, each with a pid file naming a live
    process (the plugin checks after down that they are gone)."""
    folder = Path(state.lab_dir(kube_lab.name))
    for kind in ("dns", "cni"):
        pids = [int(f.read_text().split()[0]) for f in (folder / kind).glob("*.pid")]
        assert pids and all(Path(f"/proc/{pid}").exists() for pid in pids), (kind, pids)


def test_the_labs_cni_bin_dir_attaches_a_namespace_of_ones_own(kube_lab: RunningLab) -> None:
    """What a container runtime on a node does: exec `labkit-cni` from the lab's CNI bin dir with
    the node's conflist. The lab's CNI server answers; the namespace gets an address of the node's
    podCIDR and reaches pods on other nodes both ways; DEL gives the address back."""
    cni, nodes = kube_lab.summary["cni"], {n["name"]: n for n in kube_lab.summary["nodes"]}
    conflist = json.loads(Path(cni["conflists"]["w1"]).read_text())
    conf = json.dumps({"cniVersion": conflist["cniVersion"], "name": conflist["name"], **conflist["plugins"][0]})
    extra = f"{netns_prefix(kube_lab.name)}default.extra"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_CONTAINERID": "extra", "CNI_IFNAME": "eth0",
           "CNI_NETNS": f"/run/netns/{extra}", "CNI_PATH": f"{cni['bin_dir']}:/usr/lib/cni"}

    def plugin(command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", f"--net={kube_lab.netns_path('w1')}", "--",
                               f"{cni['bin_dir']}/labkit-cni"], input=conf, text=True, capture_output=True,
                              env=dict(env, CNI_COMMAND=command), timeout=30)

    subprocess.run(["ip", "netns", "add", extra], check=True)
    try:
        added = plugin("ADD")
        assert added.returncode == 0, added.stdout + added.stderr
        ips = [entry["address"].split("/")[0] for entry in json.loads(added.stdout)["ips"]]
        assert [ipaddress.ip_address(ip).version for ip in ips] == list(families(kube_lab))
        assert all(any(ipaddress.ip_address(ip) in ipaddress.ip_network(c) for c in nodes["w1"]["pod_cidrs"])
                   for ip in ips), ips
        client = kube_lab.pods()["default/client"]
        assert client["node"] != "w1"
        for ip, client_ip in zip(ips, client["ips"], strict=True):
            assert subprocess.run(["ip", "netns", "exec", extra, "ping", "-c1", "-W2", client_ip]).returncode == 0
            assert kube_lab.exec("default/client", "ping", "-c1", "-W2", ip).returncode == 0
        log = Path(cni["socket"]).with_name("server.log").read_text()
        assert "ADD extra eth0 -> 0" in log, "the call ran in place, not in the lab's CNI server"
        deleted = plugin("DEL")
        assert deleted.returncode == 0 and deleted.stdout == "", deleted.stdout + deleted.stderr
        leases = Path(conflist["plugins"][0]["ipam"]["dataDir"])
        held = "".join(p.name for p in leases.iterdir())
        assert all(not (leases / ip).exists() and ip not in held for ip in ips)
    finally:
        plugin("DEL")
        subprocess.run(["ip", "netns", "del", extra], check=False)
