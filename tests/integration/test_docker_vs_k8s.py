"""docker-vs-k8s.yaml: Docker's bridge-and-NAT model beside Kubernetes' flat pod network, under both runtimes."""

from __future__ import annotations

import json

from labkit import lab
from labkit.progress import Progress
from labkit.pytest_plugin import RunningLab, labkit_fixture
from labkit.verify import load_expects

from .conftest import RUNTIMES, TOPOLOGIES

side_by_side = labkit_fixture(TOPOLOGIES / "docker-vs-k8s.yaml", runtime=RUNTIMES)


def seen_by(running: RunningLab, source: str, target: str) -> str:
    """The client address the server at `target` (host:port) sees from `source`."""
    result = running.exec(source, "socat", "-T3", "-", f"TCP:{target},connect-timeout=3")
    assert result.returncode == 0, result.stdout
    return result.stdout.split()[1]


def test_the_topologys_own_expectations_hold(side_by_side: RunningLab) -> None:
    report = lab.verify_lab(side_by_side.name, load_expects(side_by_side.topology))
    assert [r.line() for r in report.mismatches] == [] and len(report.results) == 5


def test_every_docker_host_numbers_its_containers_alike(side_by_side: RunningLab) -> None:
    pods = side_by_side.pods()
    assert pods["default/c1"]["ip"] == pods["default/c2"]["ip"] == "172.17.0.2"  # one per host, the same
    for host in ("dock1", "dock2"):
        addr = json.loads(side_by_side.exec(host, "ip", "-j", "addr", "show", "docker0").stdout)[0]
        assert [(a["local"], a["prefixlen"]) for a in addr["addr_info"] if a["family"] == "inet"] == \
            [("172.17.0.1", 16)]


def test_docker_nats_where_kubernetes_does_not(side_by_side: RunningLab) -> None:
    nodes = {n["name"]: n["mgmt_ipv4"] for n in side_by_side.summary["nodes"]}
    pods = side_by_side.pods()
    # through the published port, web2 sees dock1's address: c1's own is meaningless off dock1
    assert seen_by(side_by_side, "default/c1", f"{nodes['dock2']}:8080") == nodes["dock1"]
    # on its own host's bridge, a container sees the other's own address
    assert seen_by(side_by_side, "default/c2", f"{pods['default/web2']['ip']}:80") == pods["default/c2"]["ip"]
    # a pod reaches a pod on another node at its own address, and is seen at its own address
    assert seen_by(side_by_side, "default/p1", f"{pods['default/web-k2']['ip']}:80") == pods["default/p1"]["ip"]


def test_docker_hosts_are_no_cluster_nodes(side_by_side: RunningLab) -> None:
    nodes = {n["name"]: n for n in side_by_side.summary["nodes"]}
    assert nodes["dock1"]["kind"] == "docker-host" and not nodes["dock1"]["pod_cidr"]
    dns = [p for p in side_by_side.summary["pods"] if p["namespace"] == "kube-system"]
    assert dns and all(p["node"] in ("k1", "k2") for p in dns)  # no pod lands on a docker-host unasked
    conflist = json.loads(open(side_by_side.summary["cni"]["conflists"]["dock1"]).read())
    assert [p["type"] for p in conflist["plugins"]] == ["bridge", "portmap"]


PUBLISHED = """name: dockap
cluster: {{}}
topology:
  nodes:
    d1: {{kind: docker-host}}
    n1: {{kind: k8s-node}}
workloads:
  - {{apiVersion: v1, kind: Pod, metadata: {{name: client}},
     spec: {{nodeName: n1, containers: [{{name: c, image: labkit/node, command: [sleep, infinity]}}]}}}}
{extra}"""

WEB = """  - {apiVersion: v1, kind: Pod, metadata: {name: web},
     spec: {nodeName: d1, containers: [{name: web, image: labkit/node, ports: [{containerPort: 80, hostPort: 8080}],
                                        command: [socat, "TCP-LISTEN:80,reuseaddr,fork", "SYSTEM:hostname"]}]}}
"""


def test_apply_publishes_and_unpublishes_a_docker_hosts_port(tmp_path, labkit_lab_factory) -> None:
    path = tmp_path / "dockap.yaml"
    path.write_text(PUBLISHED.format(extra=""))
    running = labkit_lab_factory(str(path))
    d1 = next(n["mgmt_ipv4"] for n in running.summary["nodes"] if n["name"] == "d1")

    def fetch() -> str:
        result = running.exec("default/client", "socat", "-T2", "-", f"TCP:{d1}:8080,connect-timeout=2")
        return result.stdout.strip() if result.returncode == 0 else "closed"

    assert fetch() == "closed"
    path.write_text(PUBLISHED.format(extra=WEB))
    lab.apply(str(path), name=running.name, progress=Progress(quiet=True))
    assert fetch() == "web"
    path.write_text(PUBLISHED.format(extra=""))
    lab.apply(str(path), name=running.name, progress=Progress(quiet=True))
    assert fetch() == "closed"  # portmap's DEL took its DNAT away with the pod
    rules = running.exec("d1", "nft", "list", "ruleset").stdout
    assert "dport 8080" not in rules
