"""Cluster DNS on kube-dualstack.yaml, and on its IPv6-only variant, from inside a pod, as a workload asks it.

The DNS Service has a ClusterIP of each cluster family (the proxy DNATs each to the DNS pod's address of that
family, where the server listens too); Services answer A and AAAA (NODATA for a family they lack), headless
endpoints of both families, PTR in ip6.arpa, SRV with both families' addresses in the additional section;
pods' resolv.conf names the DNS address of the preferred family, and a name resolves and connects over IPv6
through the pod's own resolver. One lab per variant, shared by the module's tests."""

from __future__ import annotations

import ipaddress
import subprocess

import pytest
import yaml

from labkit.pytest_plugin import RunningLab, start_lab

from .conftest import TOPOLOGIES

DUALSTACK = TOPOLOGIES / "kube-dualstack.yaml"
Z = "cluster.local"
HEADLESS = """
apiVersion: v1
kind: Service
metadata: {name: web-direct, namespace: default}
spec:
  clusterIP: None
  ipFamilyPolicy: PreferDualStack
  selector: {app: web}
  ports: [{name: http, port: 8080}]
"""
# variant -> (pod-cidr, service-cidr, the DNS Service's addresses): the shipped file's, and IPv6 only
VARIANTS = {
    "dual-stack": (None, None, ["10.96.0.10", "fd00:10:96::a"]),
    "ipv6-only": ("fd00:10:244::/56", "fd00:10:96::/112", ["fd00:10:96::a"]),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def ds(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> RunningLab:
    """kube-dualstack.yaml (or its IPv6-only variant) plus a headless Service over its web pods."""
    pod_cidr, service_cidr, _ = VARIANTS[request.param]
    folder = tmp_path_factory.mktemp(f"dns-{request.param}")
    (folder / "headless.yaml").write_text(HEADLESS)
    doc = yaml.safe_load(DUALSTACK.read_text())
    doc["workloads"] = [str(DUALSTACK.parent / w) for w in doc["workloads"]] + [str(folder / "headless.yaml")]
    if pod_cidr:
        doc["cluster"].update({"pod-cidr": pod_cidr, "service-cidr": service_cidr})
        for node in doc["topology"]["nodes"].values():   # no IPv4 ClusterIPs to route to
            node.pop("routes", None)
        doc.pop("expect", None)
    topology = folder / f"kube-dualstack-{request.param}.yaml"
    topology.write_text(yaml.safe_dump(doc, sort_keys=False))
    running = start_lab(request, topology, runtime="netns")
    running.expected_dns_ips = VARIANTS[request.param][2]
    return running


def dig(running: RunningLab, server: str, *args: str) -> tuple[str, list[str], list[str]]:
    """dig from the client pod's network namespace: (status, answers, additional records) as "TYPE rdata"."""
    client = running.pods()["default/client"]
    out = subprocess.run(["nsenter", f"--net={client['netns_path']}", "dig", f"@{server}", "+time=2", "+tries=1",
                          "+noall", "+comments", "+answer", "+additional", *args],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    sections: dict[str, list[str]] = {"ANSWER": [], "ADDITIONAL": []}
    current = None
    for line in out.splitlines():
        if line.startswith(";; ") and " SECTION:" in line:
            current = line[3:].split(" SECTION:")[0]
        elif line and not line.startswith(";") and current in sections:
            sections[current].append(" ".join(line.split()[3:]))
    return out.split("status: ", 1)[1].split(",", 1)[0], sorted(sections["ANSWER"]), sorted(sections["ADDITIONAL"])


def by_family(addresses: list[str]) -> dict[int, str]:
    return {ipaddress.ip_address(a).version: a for a in addresses}


def records(kind: str, addresses: list[str]) -> list[str]:
    return sorted(f"{kind} {a}" for a in addresses)


def dns_ips(running: RunningLab) -> list[str]:
    return running.service("kube-system/kube-dns")["cluster_ips"]


def test_the_dns_service_has_an_address_of_each_cluster_family(ds: RunningLab) -> None:
    assert dns_ips(ds) == ds.expected_dns_ips
    assert ds.summary["dns"]["ip"] == ds.expected_dns_ips[0]   # the preferred family's, as before


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
def test_a_and_aaaa_of_a_service_at_every_dns_address(ds: RunningLab, transport: str) -> None:
    web = by_family(ds.service("default/web")["cluster_ips"])
    assert sorted(web) == sorted(by_family(dns_ips(ds)))   # PreferDualStack: every cluster family
    for server in dns_ips(ds):
        for family, kind in ((4, "A"), (6, "AAAA")):
            status, answer, _ = dig(ds, server, transport, kind, f"web.default.svc.{Z}")
            assert (status, answer) == ("NOERROR", records(kind, [web[family]] if family in web else [])), server


def test_headless_endpoints_ptr_and_srv_over_ipv6(ds: RunningLab) -> None:
    v6 = by_family(dns_ips(ds))[6]
    pods = [p for p in ds.summary["pods"] if p["name"].startswith("web-")]
    assert pods and all(len(p["ips"]) == len(dns_ips(ds)) for p in pods)
    base = f"web-direct.default.svc.{Z}"
    for family, kind in ((4, "A"), (6, "AAAA")):
        want = [by_family(p["ips"])[family] for p in pods if family in by_family(p["ips"])]
        assert dig(ds, v6, kind, base)[:2] == ("NOERROR", records(kind, want))
    pod6 = by_family(pods[0]["ips"])[6]
    dashed = pod6.replace(":", "-")
    assert dig(ds, v6, "AAAA", f"{dashed}.{base}")[1] == [f"AAAA {pod6}"]
    assert dig(ds, v6, "-x", pod6)[1] == [f"PTR {dashed}.{base}."]
    web = by_family(ds.service("default/web")["cluster_ips"])
    assert dig(ds, v6, "-x", web[6])[1] == [f"PTR web.default.svc.{Z}."]
    _, answer, additional = dig(ds, v6, "SRV", f"_http._tcp.web.default.svc.{Z}")
    assert answer == [f"SRV 0 100 80 web.default.svc.{Z}."]
    assert additional == sorted([*records("A", [web[4]] if 4 in web else []), f"AAAA {web[6]}"])
    assert dig(ds, v6, "AAAA", f"{dashed}.default.pod.{Z}")[1] == [f"AAAA {pod6}"]


def test_pods_ask_the_preferred_family_and_reach_a_service_by_name_over_ipv6(ds: RunningLab) -> None:
    resolv = ds.exec("default/client", "cat", "/etc/resolv.conf").stdout
    assert resolv.splitlines()[0] == f"nameserver {dns_ips(ds)[0]}", resolv
    web = by_family(ds.service("default/web")["cluster_ips"])
    # the pod's own resolver (its resolv.conf, its search list): AAAA of the short name
    found = ds.exec("default/client", "getent", "ahostsv6", "web").stdout.split()
    assert web[6] in found, found
    served = ds.exec("default/client", "socat", "-T3", "-", "TCP6:web:80,connect-timeout=3").stdout.strip()
    assert served in {p["name"] for p in ds.summary["pods"] if p["name"].startswith("web-")}, served


def test_the_dns_server_listens_on_every_address_of_its_pod(ds: RunningLab) -> None:
    dns_pod = next(p for p in ds.summary["pods"] if p["labels"].get("k8s-app") == "kube-dns")
    listening = subprocess.run(["nsenter", f"--net={dns_pod['netns_path']}", "ss", "-Hlnu", "sport = :53"],
                               capture_output=True, text=True, check=True).stdout
    for address in dns_pod["ips"]:
        assert (f"[{address}]:53" if ":" in address else f"{address}:53") in listening, listening
    assert len(listening.splitlines()) == len(dns_pod["ips"]), listening
