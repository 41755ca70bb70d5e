"""Services over both families in a whole dual-stack lab (tests/topologies/good/services-dualstack.yaml):
clusterIPs of each family as the API server defaults them, in `labkit status`; a pod reaching a
Service's IPv4 and IPv6 ClusterIP without NAT; NodePorts on the node's IPv4 and IPv6 address from
a host outside the cluster; ClientIP affinity holding in each family; headless Services listing both
addresses of each pod. And an IPv6-only variant of the lab, whose Services have IPv6 alone. Each lab is
shared by its tests (module-scoped fixtures)."""

from __future__ import annotations

import ipaddress
from collections import Counter
from pathlib import Path

import pytest
import yaml

from labkit import lab
from labkit.pytest_plugin import RunningLab, start_lab
from labkit.topology.plan import Plan

pytestmark = pytest.mark.integration

TOPOLOGY = Path(__file__).resolve().parents[1] / "topologies" / "good" / "services-dualstack.yaml"
V4, V6 = ipaddress.ip_network("10.96.0.0/16"), ipaddress.ip_network("fd00:10:96::/112")


@pytest.fixture(scope="module")
def dual(request: pytest.FixtureRequest) -> tuple[RunningLab, Plan]:
    return start_lab(request, TOPOLOGY), lab.validate(str(TOPOLOGY))


@pytest.fixture(scope="module")
def six(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunningLab, Plan]:
    """The same lab on an IPv6-only cluster (without `sticky`: RequireDualStack needs two families)."""
    doc = yaml.safe_load(TOPOLOGY.read_text())
    doc["name"] = "svc6"
    doc["cluster"] = {"pod-cidr": "fd00:10:244::/56", "service-cidr": "fd00:10:96::/112"}
    doc["workloads"] = [w for w in doc["workloads"] if w["metadata"]["name"] != "sticky"]
    path = tmp_path_factory.mktemp("services-ipv6") / "services-ipv6.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return start_lab(request, path), lab.validate(str(path))


def ask(running: RunningLab, source: str, address: str, port: int, count: int = 1) -> list[tuple[str, str]]:
    """(pod hostname, the address it saw the client at) for each of `count` connections."""
    target = f"TCP6:[{address}]:{port}" if ":" in address else f"TCP4:{address}:{port}"
    found = []
    for _ in range(count):
        # -u: read the answer only; an early half-close would let the server's socat end before its echo
        out = running.exec(source, "socat", "-T3", "-u", target, "-", check=True).stdout.split()
        assert len(out) == 2, out
        seen = ipaddress.ip_address(out[1].strip("[]"))  # socat writes IPv6 in full, IPv4 clients as ::ffff:a.b.c.d
        found.append((out[0], str(getattr(seen, "ipv4_mapped", None) or seen)))
    return found


def node_ask(running: RunningLab, node: str, address: str, port: int, count: int = 1) -> list[tuple[str, str]]:
    return ask(running, node, address, port, count)


def test_status_has_every_cluster_ip_family_and_policy(dual) -> None:
    running, _ = dual
    web, sticky, four, db = (running.service(f"default/{n}") for n in ("web", "sticky", "four", "db"))
    assert web["ip_family_policy"] == "PreferDualStack" and web["ip_families"] == ["IPv4", "IPv6"]
    v4, v6 = (ipaddress.ip_address(a) for a in web["cluster_ips"])
    assert v4 in V4 and v6 in V6 and web["cluster_ip"] == str(v4)
    assert sticky["ip_families"] == ["IPv6", "IPv4"] and sticky["cluster_ip"] == sticky["cluster_ips"][0]
    assert ipaddress.ip_address(sticky["cluster_ip"]) in V6  # ipFamilies' order decides the primary
    assert (four["ip_family_policy"], four["ip_families"], len(four["cluster_ips"])) == ("SingleStack", ["IPv4"], 1)
    assert db["cluster_ips"] == ["None"] and db["ip_families"] == ["IPv4", "IPv6"]
    pods = {p["name"]: p for p in running.summary["pods"]}
    assert sorted(tuple(e["ips"]) for e in db["endpoints"]) == sorted(
        tuple(p["ips"]) for n, p in pods.items() if n.startswith("web-"))
    dns = running.service("kube-system/kube-dns")
    assert dns["cluster_ips"] == ["10.96.0.10", "fd00:10:96::a"] and dns["ip_family_policy"] == "PreferDualStack"
    # a port's endpoints: one per pod and family (EndpointSlices), IPv6 ones written [addr]:port
    assert len(web["ports"][0]["endpoints"]) == 4 and web["ports"][0]["endpoints"][-1].startswith("[fd00:10:244:")


@pytest.mark.parametrize("family", [4, 6])
def test_a_pod_reaches_the_cluster_ip_of_each_family_without_nat(dual, family) -> None:
    running, _ = dual
    web = running.service("default/web")
    address = next(a for a in web["cluster_ips"] if ipaddress.ip_address(a).version == family)
    client = running.pods()["default/client"]
    answers = ask(running, "default/client", address, 80, count=8)
    servers = {p["name"] for p in running.summary["pods"] if p["name"].startswith("web-")}
    assert {name for name, _ in answers} <= servers
    assert {seen for _, seen in answers} == {client["ips"][0 if family == 4 else 1]}


@pytest.mark.parametrize("family", [4, 6])
def test_node_ports_on_the_node_address_of_each_family(dual, family) -> None:
    running, plan = dual
    for node in ("cp", "w1"):
        mgmt = plan.node(node).mgmt_ipv4 if family == 4 else plan.node(node).mgmt_ipv6
        assert mgmt is not None
        answers = node_ask(running, "ext", str(mgmt.ip), 30080, count=4)
        ext = plan.node("ext").mgmt_ipv4 if family == 4 else plan.node("ext").mgmt_ipv6
        assert all(seen != str(ext.ip) for _, seen in answers)  # masqueraded: the pod answers the node
        assert all(ipaddress.ip_address(seen).version == family for _, seen in answers)


def test_client_ip_affinity_holds_in_each_family(dual) -> None:
    running, _ = dual
    sticky = running.service("default/sticky")
    pinned = {}
    for address in sticky["cluster_ips"]:
        hits = Counter(name for name, _ in ask(running, "default/client", address, 81, count=8))
        assert len(hits) == 1, (address, hits)
        pinned[address] = next(iter(hits))
    web = running.service("default/web")  # the same client without affinity spreads (the pinning is the Service's)
    for address in web["cluster_ips"]:
        assert len(Counter(name for name, _ in ask(running, "default/client", address, 80, count=12))) == 2


def test_a_single_stack_service_has_no_ipv6_rules(dual) -> None:
    running, _ = dual
    four = running.service("default/four")["cluster_ip"]
    assert ask(running, "default/client", four, 80)
    listing = running.exec("cp", "nft", "list", "table", "ip6", "labkit-proxy", check=True).stdout
    assert "fd00:10:96::" in listing and four not in listing and "default/four" not in listing


def test_an_ipv6_only_cluster_serves_its_services_on_ipv6_alone(six) -> None:
    running, plan = six
    web, four = running.service("default/web"), running.service("default/four")
    assert (web["ip_family_policy"], web["ip_families"]) == ("PreferDualStack", ["IPv6"])  # falls back to one
    assert four["ip_families"] == ["IPv6"] and ipaddress.ip_address(four["cluster_ip"]) in V6
    assert running.service("kube-system/kube-dns")["cluster_ips"] == ["fd00:10:96::a"]
    client = running.pods()["default/client"]
    assert {seen for _, seen in ask(running, "default/client", web["cluster_ip"], 80, count=4)} == {client["ip"]}
    cp = plan.node("cp").mgmt_ipv6
    assert cp is not None and ask(running, "ext", str(cp.ip), 30080, count=2)
    tables = running.exec("cp", "nft", "list", "tables", check=True).stdout
    assert "table ip6 labkit-proxy" in tables and "table ip labkit-proxy" not in tables
