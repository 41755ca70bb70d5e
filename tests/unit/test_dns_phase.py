"""Phase `dns`'s config: what the DNS server is given, from the plan and the service views, on one family
and on both; and the nameserver pods are given (the preferred family's DNS address)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import SimpleNamespace

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


def _port(port: int, name: str, endpoints: list[tuple[str, int]]):
    return SimpleNamespace(port=port, name=name, protocol="TCP", target_port=port,
                           endpoints=[SimpleNamespace(ip=ip, port=p) for ip, p in endpoints])


def test_dual_stack_views_give_both_families(tmp_path: Path) -> None:
    """Views as the services branch shapes them (cluster_ips; addresses with the pod's `ips`)."""
    plan = _plan(tmp_path, "10.244.0.0/16,fd00:10:244::/56", "10.96.0.0/16,fd00:10:96::/112")
    web = SimpleNamespace(
        namespace="default", name="web", type="ClusterIP", headless=False, external_name=None,
        cluster_ip="10.96.0.20", cluster_ips=("10.96.0.20", "fd00:10:96::20"),
        ports=[_port(80, "http", [("10.244.0.5", 8080), ("fd00:10:244::5", 8080)])],
        addresses=[SimpleNamespace(ip="10.244.0.5", ips=("10.244.0.5", "fd00:10:244::5"), hostname=None,
                                   pod="default/web-0", node="cp")])
    db = SimpleNamespace(
        namespace="default", name="db", type="ClusterIP", headless=True, external_name=None,
        cluster_ip=None, cluster_ips=(), ports=[_port(5432, "pg", [])],
        addresses=[SimpleNamespace(ip="fd00:10:244::6", ips=("fd00:10:244::6", "10.244.0.6"), hostname="db-0",
                                   pod="default/db-0", node="cp")])
    cfg = dns_config(plan, [web, db], plan.workloads)
    cfg.validate()
    rs = build_records(cfg)
    assert [rr[3] for rr in rs.lookup(f"web.default.svc.{Z}", AAAA).answer] == ["fd00:10:96::20"]
    assert [rr[3] for rr in rs.lookup(f"web.default.svc.{Z}", A).answer] == ["10.96.0.20"]
    srv = rs.lookup(f"_http._tcp.web.default.svc.{Z}", SRV)
    assert [rr[3][2] for rr in srv.answer] == [80] and len(srv.additional) == 2
    assert [rr[3] for rr in rs.lookup(f"db-0.db.default.svc.{Z}", AAAA).answer] == ["fd00:10:244::6"]
    assert [rr[3] for rr in rs.lookup(f"db-0.db.default.svc.{Z}", A).answer] == ["10.244.0.6"]
    ptr = "6.0.0.0." + "0.0.0.0." * 4 + "4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa."
    assert [rr[3] for rr in rs.lookup(ptr, PTR).answer] == [f"db-0.db.default.svc.{Z}"]
    # the shape of main's views before they carried both (cluster_ip and ip only) still reads
    old = SimpleNamespace(**{**vars(web), "addresses": [SimpleNamespace(ip="10.244.0.5", hostname=None,
                                                                        pod="default/web-0", node="cp")]})
    del old.cluster_ips
    cfg = dns_config(plan, [old], plan.workloads)
    assert cfg.services[0].cluster_ips == ["10.96.0.20"] and cfg.services[0].endpoints[0].ips == ["10.244.0.5"]


def test_a_dns_pod_listens_on_each_of_its_addresses() -> None:
    pod = PodRecord("kube-system", "dns-0", "cp", "10.244.0.3", "n", "/run/netns/n",
                    ips=["10.244.0.3", "fd00:10:244::3"])
    assert listen_addresses(pod) == ["10.244.0.3", "fd00:10:244::3"]
    assert listen_addresses(PodRecord("kube-system", "dns-1", "cp", "10.244.0.4", "n", "/run/netns/n")) == [
        "10.244.0.4"]
