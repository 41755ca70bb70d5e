"""Services and cluster DNS on the shipped cluster labs, from inside pods, as a workload would use them."""

from __future__ import annotations

import collections
import json
import subprocess

import pytest

from labkit.pytest_plugin import RunningLab

from labkit.families import host_port

from .conftest import families, labkit

ZONE = "cluster.local"


def fetch(running: RunningLab, pod: str, target: str) -> str:
    """Connect from `pod` to target (host:port); the server answers with its pod's hostname."""
    result = running.exec(pod, "socat", "-T3", "-", f"TCP:{target},connect-timeout=3")
    return result.stdout.strip() if result.returncode == 0 else f"FAILED: {result.stdout.strip()}"


def web_pods(running: RunningLab) -> set[str]:
    return {p.split("/")[1] for p in running.pods() if p.startswith("default/web-")}


def test_cluster_ip_by_address_and_by_name_through_the_search_list(kube_lab: RunningLab) -> None:
    web = kube_lab.service("default/web")
    assert len(web["cluster_ips"]) == len(families(kube_lab)) and web["cluster_ips"][0] == web["cluster_ip"]
    for target in (*(host_port(ip, 80) for ip in web["cluster_ips"]), "web:80", "web.default:80",
                   f"web.default.svc.{ZONE}:80"):
        assert fetch(kube_lab, "default/client", target) in web_pods(kube_lab), target
    # from another namespace the short name is not ours, the namespaced one is
    assert fetch(kube_lab, "team-a/probe", "web.default:80") in web_pods(kube_lab)


def test_connections_spread_over_every_endpoint(kube_lab: RunningLab) -> None:
    web = kube_lab.service("default/web")
    counts = collections.Counter(fetch(kube_lab, "default/client", f"{web['cluster_ip']}:80") for _ in range(60))
    assert set(counts) == web_pods(kube_lab), counts
    assert max(counts.values()) <= 2 * 60 / len(web_pods(kube_lab)), counts


def test_client_ip_affinity_pins_each_client(kube_lab: RunningLab) -> None:
    sticky = kube_lab.service("default/web-sticky")
    for client in ("default/client", "team-a/probe"):
        for ip in sticky["cluster_ips"]:  # affinity per family: each of a client's addresses is pinned
            answers = {fetch(kube_lab, client, host_port(ip, 80)) for _ in range(12)}
            assert len(answers) == 1 and answers <= web_pods(kube_lab), (ip, answers)


def test_node_port_on_every_node_from_a_pod_and_from_outside(kube_lab: RunningLab) -> None:
    nodes = [n for n in kube_lab.summary["nodes"] if n["kind"] == "k8s-node"]
    ext = next(n for n in kube_lab.summary["nodes"] if n["name"] == "ext")
    for node in nodes:
        for family in families(kube_lab):  # a NodePort on every node address of every cluster family
            address = host_port(node["mgmt_ipv4"] if family == 4 else node["mgmt_ipv6"], 30080)
            assert fetch(kube_lab, "default/client", address) in web_pods(kube_lab), address
            outside = kube_lab.exec(ext["name"], "socat", "-T3", "-", f"TCP:{address}")
            assert outside.stdout.strip() in web_pods(kube_lab), (address, outside.stdout)


def test_external_traffic_policy_local_keeps_the_client_address_and_stays_on_the_node(
        kube_lab: RunningLab) -> None:
    """echo-local (NodePort 30090, externalTrafficPolicy: Local): from outside, each node answers with
    its own echo pods only, which see the outside host's own address; a node without one drops."""
    nodes = {n["name"]: n for n in kube_lab.summary["nodes"] if n["kind"] == "k8s-node"}
    ext = next(n for n in kube_lab.summary["nodes"] if n["name"] == "ext")
    echo_node = {p.split("/")[1]: info["node"] for p, info in kube_lab.pods().items() if p.startswith("default/echo-")}
    assert kube_lab.service("default/echo-local")["external_traffic_policy"] == "Local"
    empty = set(nodes) - set(echo_node.values())
    assert empty, "the test needs a node without echo pods"
    for name, node in nodes.items():
        target = f"TCP:{node['mgmt_ipv4']}:30090,connect-timeout=1"
        if name in empty:
            result = kube_lab.exec("ext", "socat", "-T2", "-", target)
            assert result.returncode != 0 and "timed out" in result.stdout, result.stdout  # dropped, as kube-proxy
            continue
        for _ in range(4):
            result = kube_lab.exec("ext", "socat", "-T3", "-", target)
            pod, seen = result.stdout.split()
            assert echo_node[pod] == name and seen == ext["mgmt_ipv4"], result.stdout
    # a pod at its own node's NodePort is served cluster-wide, as with Cluster. (At another node's it
    # arrives masqueraded to its node's address, by the CNI's egress rule: there it counts as outside.)
    client_node = nodes[kube_lab.pods()["default/client"]["node"]]
    answers = {fetch(kube_lab, "default/client", f"{client_node['mgmt_ipv4']}:30090").split()[0] for _ in range(12)}
    assert answers <= set(echo_node) and {echo_node[a] for a in answers} - {client_node["name"]}, answers


def test_service_without_endpoints_is_refused_at_once(kube_lab: RunningLab) -> None:
    nobody = kube_lab.service("default/nobody")
    assert nobody["endpoints"] == []
    for ip in nobody["cluster_ips"]:
        result = kube_lab.exec("default/client", "socat", "-T5", "-", f"TCP:{host_port(ip, 80)},connect-timeout=5")
        # refused by the service's reject rule, not left to the connect timeout
        assert result.returncode != 0 and "Connection refused" in result.stdout, (ip, result.stdout)


def test_hairpin_a_pod_reaches_itself_through_its_service(kube_lab: RunningLab) -> None:
    web = kube_lab.service("default/web")
    me = sorted(web_pods(kube_lab))[0]
    for ip in web["cluster_ips"]:
        answers = [fetch(kube_lab, f"default/{me}", host_port(ip, 80)) for _ in range(30)]
        assert all(a in web_pods(kube_lab) for a in answers), answers
        assert me in answers, f"never reached itself through the ClusterIP {ip}"


def dig(running: RunningLab, *args: str) -> str:
    """dig from the host inside team-a/probe's network namespace (no image needs dig), asking
    the nameserver of the pod's resolv.conf."""
    probe = running.pods()["team-a/probe"]
    result = subprocess.run(["nsenter", f"--net={probe['netns_path']}", "dig", f"@{running.summary['dns']['ip']}",
                             "+time=2", "+tries=1", *args], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def answers(output: str) -> list[str]:
    section, lines = False, []
    for line in output.splitlines():
        if line.startswith(";; ANSWER SECTION"):
            section = True
        elif section and not line.strip():
            break
        elif section:
            lines.append(" ".join(line.split()[3:]))
    return lines


def status_of(output: str) -> str:
    return output.split("status: ", 1)[1].split(",", 1)[0]


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
def test_dns_records_of_the_spec(kube_lab: RunningLab, transport: str) -> None:
    web = kube_lab.service("default/web")
    db = {p["name"]: p["ips"] for p in kube_lab.summary["pods"] if p["name"].startswith("db-")}
    q = lambda *a: dig(kube_lab, transport, *a)  # noqa: E731 - a short alias reads best here

    assert answers(q("TXT", f"dns-version.{ZONE}")) == ['TXT "1.1.0"']
    by_type = {4: "A", 6: "AAAA"}
    for family in (4, 6):
        rtype = by_type[family]
        mine = [ip for ip in web["cluster_ips"] if (":" in ip) == (family == 6)]
        found = q(rtype, f"web.default.svc.{ZONE}")
        assert status_of(found) == "NOERROR" and answers(found) == [f"{rtype} {ip}" for ip in mine]  # or NODATA
        headless = [ip for ips in db.values() for ip in ips if (":" in ip) == (family == 6)]
        assert sorted(answers(q(rtype, f"db.team-a.svc.{ZONE}"))) == sorted(f"{rtype} {ip}" for ip in headless)
        assert answers(q(rtype, f"db-0.db.team-a.svc.{ZONE}")) == [
            f"{rtype} {ip}" for ip in db["db-0"] if (":" in ip) == (family == 6)]
    assert answers(q("SRV", f"_http._tcp.web.default.svc.{ZONE}")) == [f"SRV 0 100 80 web.default.svc.{ZONE}."]
    for ip in web["cluster_ips"]:
        assert answers(q("-x", ip)) == [f"PTR web.default.svc.{ZONE}."], ip
    srv = sorted(answers(q("SRV", f"_postgres._tcp.db.team-a.svc.{ZONE}")))
    assert srv == [f"SRV 0 50 5432 db-0.db.team-a.svc.{ZONE}.", f"SRV 0 50 5432 db-1.db.team-a.svc.{ZONE}."]
    assert answers(q("A", f"search.default.svc.{ZONE}"))[0] == "CNAME search.example.org."
    assert status_of(q("A", f"nope.default.svc.{ZONE}")) == "NXDOMAIN"
    assert status_of(q("A", f"team-a.svc.{ZONE}")) == "NOERROR"  # an existing namespace: NODATA
    assert status_of(q("A", "example.org")) == "REFUSED"  # no upstreams configured


def test_status_json_lists_services(kube_lab: RunningLab) -> None:
    status = json.loads(labkit("status", "--name", kube_lab.name, "--format", "json").stdout)
    by_name = {(s["namespace"], s["name"]): s for s in status["services"]}
    web = by_name[("default", "web")]
    assert web["type"] == "ClusterIP" and web["cluster_ip"].startswith("10.96.")
    assert web["ip_families"] == ["IPv4", "IPv6"][:len(families(kube_lab))] and len(web["cluster_ips"]) == len(
        families(kube_lab))
    assert [p["port"] for p in web["ports"]] == [80] and len(web["endpoints"]) == 3
    assert by_name[("default", "web-nodeport")]["ports"][0]["node_port"] == 30080
    assert by_name[("team-a", "db")]["cluster_ip"] == "None"
    assert by_name[("kube-system", "kube-dns")]["cluster_ip"] == "10.96.0.10"
    dns = status["dns"]
    assert (dns["ip"], dns["domain"]) == ("10.96.0.10", "cluster.local")
    # each family's DNS address where the status lists them: the kube-dns Service's ClusterIPs
    assert dns.get("ips", [dns["ip"]]) == by_name[("kube-system", "kube-dns")].get("cluster_ips", [dns["ip"]])


def test_the_topologys_own_expectations_hold(kube_lab: RunningLab) -> None:
    """`labkit verify` of the shipped file against the running lab: every check as expected."""
    from labkit.lab import verify_lab
    from labkit.verify import load_expects

    expects = load_expects(kube_lab.topology)
    report = verify_lab(kube_lab.name, expects)
    assert [r.line() for r in report.mismatches] == [] and len(report.results) == len(expects) >= 14
