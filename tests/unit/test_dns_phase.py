"""Phase `dns`'s config: what the DNS server is given, from the plan and the service views, on one family
and on both; and the nameserver pods are given (the preferred family's DNS address)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from labkit.dns.records import AAAA, PTR, SRV, A, build_records
from labkit.phases.build import PodRecord
from labkit.phases.dns import dns_config, listen_addresses
from labkit.phases.pods import kubelet_resolv_conf
from labkit.proxy import build_service_view
from labkit.topology import load_plan

ROOT = Path(__file__).resolve().parents[2]
Z = "cluster.local."


def _plan(tmp_path: Path, pod_cidr: str, service_cidr: str):
    path = tmp_path / "topo.yaml"
    path.write_text(textwrap.dedent(f"""
        name: dnsphase
        cluster:
          pod-cidr: {pod_cidr}
          service-cidr: {service_cidr}
        topology:
          nodes:
            cp: {{kind: k8s-node}}
    """))
    return load_plan(path)


def test_single_stack_config_is_as_before() -> None:
    """kube-3node (IPv4 only): one nameserver, every Service one ClusterIP, endpoints one address."""
    plan = load_plan(ROOT / "topologies/kube-3node.yaml")
    pod_ips = {p.key: f"10.244.0.{i + 2}" for i, p in enumerate(plan.workloads.pods)}
    views = build_service_view(plan.workloads, pod_ips, allocation=plan.allocation)
    cfg = dns_config(plan, list(views), plan.workloads)
    cfg.validate()
    assert cfg.nameservers == ["10.96.0.10"]
    by_name = {(s.namespace, s.name): s for s in cfg.services}
    assert by_name[("kube-system", "kube-dns")].cluster_ips == ["10.96.0.10"]
    assert all(len(s.cluster_ips) <= 1 for s in cfg.services)
    assert all(len(e.ips) == 1 for s in cfg.services for e in s.endpoints)
    rs = build_records(cfg)
    web = by_name[("default", "web")].cluster_ip
    assert [rr[3] for rr in rs.lookup(f"web.default.svc.{Z}", A).answer] == [web]
    assert rs.lookup(f"web.default.svc.{Z}", AAAA).nodata


@pytest.mark.parametrize("pods, services, want", [
    ("10.244.0.0/16,fd00:10:244::/56", "10.96.0.0/16,fd00:10:96::/112", ["10.96.0.10", "fd00:10:96::a"]),
    ("fd00:10:244::/56,10.244.0.0/16", "fd00:10:96::/112,10.96.0.0/16", ["fd00:10:96::a", "10.96.0.10"]),
    ("fd00:10:244::/56", "fd00:10:96::/112", ["fd00:10:96::a"]),
])
def test_nameservers_are_the_dns_addresses_of_every_family_and_pods_ask_the_preferred(
        tmp_path: Path, pods: str, services: str, want: list[str]) -> None:
    plan = _plan(tmp_path, pods, services)
    cfg = dns_config(plan, [], plan.workloads)
    assert cfg.nameservers == want
    rs = build_records(cfg)
    ns = rs.lookup("cluster.local", 2)
    assert sorted(rr[3] for rr in ns.additional) == sorted(want)
    # the kubelet's resolv.conf: the preferred family's DNS address (kubeadm gives clusterDNS one address)
    assert kubelet_resolv_conf(plan.cluster, "default").splitlines()[0] == f"nameserver {want[0]}"


DUAL_WORKLOADS = """
        workloads:
          - apiVersion: apps/v1
            kind: StatefulSet
            metadata: {name: db}
            spec:
              serviceName: db
              replicas: 1
              selector: {matchLabels: {app: db}}
              template:
                metadata: {labels: {app: db}}
                spec: {containers: [{name: db, image: labkit/node, ports: [{name: pg, containerPort: 5432}]}]}
          - apiVersion: v1
            kind: Service
            metadata: {name: db}
            spec:
              clusterIP: None
              ipFamilyPolicy: RequireDualStack
              selector: {app: db}
              ports: [{name: pg, port: 5432}]
          - apiVersion: v1
            kind: Service
            metadata: {name: web}
            spec:
              ipFamilyPolicy: PreferDualStack
              clusterIP: 10.96.0.20
              clusterIPs: [10.96.0.20, "fd00:10:96::20"]
              selector: {app: db}
              ports: [{name: http, port: 80, targetPort: 5432}]
          - apiVersion: v1
            kind: Service
            metadata: {name: v4}
            spec: {clusterIP: 10.96.0.21, selector: {app: db}, ports: [{port: 80}]}
"""


def test_dual_stack_views_give_both_families(tmp_path: Path) -> None:
    """The service views of a dual-stack plan (clusterIPs of each family; endpoints with each pod IP)."""
    path = tmp_path / "topo.yaml"
    path.write_text(textwrap.dedent("""
        name: dnsphase
        cluster:
          pod-cidr: 10.244.0.0/16,fd00:10:244::/56
          service-cidr: 10.96.0.0/16,fd00:10:96::/112
        topology:
          nodes:
            cp: {kind: k8s-node}
    """) + textwrap.dedent(DUAL_WORKLOADS))
    plan = load_plan(path)
    pod_ips = {"default/db-0": ("10.244.0.6", "fd00:10:244::6")}
    views = build_service_view(plan.workloads, pod_ips, allocation=plan.allocation)
    cfg = dns_config(plan, list(views), plan.workloads)
    cfg.validate()
    rs = build_records(cfg)
    assert [rr[3] for rr in rs.lookup(f"web.default.svc.{Z}", AAAA).answer] == ["fd00:10:96::20"]
    assert [rr[3] for rr in rs.lookup(f"web.default.svc.{Z}", A).answer] == ["10.96.0.20"]
    assert rs.lookup(f"v4.default.svc.{Z}", AAAA).nodata                      # SingleStack: its family only
    dns = rs.lookup(f"kube-dns.kube-system.svc.{Z}", AAAA).answer
    assert [rr[3] for rr in dns] == ["fd00:10:96::a"]                         # kube-dns at each DNS address
    srv = rs.lookup(f"_http._tcp.web.default.svc.{Z}", SRV)
    assert [rr[3][2] for rr in srv.answer] == [80]
    assert sorted(rr[3] for rr in srv.additional) == ["10.96.0.20", "fd00:10:96::20"]
    # the StatefulSet pod's hostname under its headless Service, both families; PTR in ip6.arpa
    assert [rr[3] for rr in rs.lookup(f"db-0.db.default.svc.{Z}", AAAA).answer] == ["fd00:10:244::6"]
    assert [rr[3] for rr in rs.lookup(f"db-0.db.default.svc.{Z}", A).answer] == ["10.244.0.6"]
    srv = rs.lookup(f"_pg._tcp.db.default.svc.{Z}", SRV)
    assert [rr[3] for rr in srv.answer] == [(0, 100, 5432, f"db-0.db.default.svc.{Z}")]
    assert sorted(rr[3] for rr in srv.additional) == ["10.244.0.6", "fd00:10:244::6"]
    ptr = "6.0.0.0." + "0.0.0.0." * 4 + "4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa."
    assert [rr[3] for rr in rs.lookup(ptr, PTR).answer] == [f"db-0.db.default.svc.{Z}"]


def test_a_dns_pod_listens_on_each_of_its_addresses() -> None:
    pod = PodRecord("kube-system", "dns-0", "cp", "10.244.0.3", "n", "/run/netns/n",
                    ips=["10.244.0.3", "fd00:10:244::3"])
    assert listen_addresses(pod) == ["10.244.0.3", "fd00:10:244::3"]
    assert listen_addresses(PodRecord("kube-system", "dns-1", "cp", "10.244.0.4", "n", "/run/netns/n")) == [
        "10.244.0.4"]
