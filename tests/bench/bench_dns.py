"""Benchmark: the cluster DNS pod exactly as a lab deploys it, against dnsmasq, under dnsperf.

`labkit.lab.up` builds a small lab of its own (unique name, in a temporary directory):
two k8s-nodes; on `cp` the kube-dns pod (labkit's DNS server, started by `up` with the
process model `cluster.dns.workers` gives it) and a `bench/dnsmasq` pod running dnsmasq;
on `w1` a `bench/client` pod. Both servers serve the same SERVICES ClusterIP names
(the lab's own Services, and a hosts file for dnsmasq with the same addresses), and
dnsperf, run inside the client pod's network namespace, sends both the same query file
to their Service's ClusterIP (kube-dns at `cluster.dns.ip`, dnsmasq at its own), through
the same nftables DNAT and host-gw route, in turns. The lab is taken down afterwards and
nothing of it is left.

In a lab, both servers' CPU per query is mostly the kernel's (veth, conntrack, DNAT,
routing: the reply's path is charged to the server's sendto), so the lab figure hides
the server's own code. A second measurement, "server alone", runs both on loopback
addresses of the host (the same worker count as the lab's DNS pod, the same names):
that is where a change to the server's hot path shows.

Both families: the lab is dual-stack (every Service has an IPv4 and an IPv6 ClusterIP, dnsmasq's
hosts file both addresses), and each server is asked A and AAAA of the same names in the same run,
both over IPv4 (the same path: the queries differ only in their type), and, in the headline
profile, AAAA over IPv6 too (to the DNS Services' IPv6 ClusterIPs: the proxy's IPv6 DNAT, the
pod's IPv6 address). Reported per query kind: both servers' qps and labkit/dnsmasq, and each
server's AAAA/A.

    python -m tests.bench.bench_dns [SECONDS] [WORKERS]   # as root; prints the result as JSON
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVICES = 200
DNS_IP = "10.96.0.10"
DNSMASQ_IP = "10.96.0.11"
DNS_IP6 = "fd00:10:96::a"          # the 10th of the IPv6 service CIDR: the DNS Service's by default
DNSMASQ_IP6 = "fd00:10:96::b"
POD_CIDRS = "10.244.0.0/16,fd00:10:244::/56"
SERVICE_CIDRS = "10.96.0.0/16,fd00:10:96::/112"
# (label, query type, family of the server address asked): what each profile measures, A over IPv4 first.
QUERIES = (("A", "A", 4), ("AAAA", "AAAA", 4), ("AAAA over IPv6", "AAAA", 6))
HEADLINE = "clients8"
# The headline profile: several clients, as many pods' resolvers are. The second one
# is dnsperf's defaults (one client socket, 100 queries outstanding: latency-bound).
DNSPERF_OPTS = ["-c", "8", "-T", "2", "-q", "200"]
PROFILES = {"clients8": DNSPERF_OPTS, "dnsperf_defaults": []}


def _cluster_ip(i: int) -> str:
    return f"10.96.{1 + i // 250}.{1 + i % 250}"


def _cluster_ip6(i: int) -> str:
    return f"fd00:10:96::{0x100 + i:x}"


def _dual_stack(cluster_ips: list[str]) -> dict:
    return {"clusterIP": cluster_ips[0], "clusterIPs": cluster_ips, "ipFamilies": ["IPv4", "IPv6"],
            "ipFamilyPolicy": "RequireDualStack"}


def lab_files(folder: Path, lab: str, workers: str | int = "auto") -> tuple[Path, str, dict[str, str]]:
    """Write the bench lab's topology, workloads and dnsmasq hosts file into `folder`.
    Returns (topology path, hosts file text, query file text per query type)."""
    hosts = "".join(f"{ip} svc-{i}.bench.svc.cluster.local\n"
                    for i in range(SERVICES) for ip in (_cluster_ip(i), _cluster_ip6(i)))
    queries = {qtype: "".join(f"svc-{i}.bench.svc.cluster.local {qtype}\n" for i in range(SERVICES))
               for qtype in ("A", "AAAA")}
    (folder / "hosts").write_text(hosts)
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "dnsmasq", "namespace": "bench", "labels": {"app": "dnsmasq"}},
         "spec": {"nodeName": "cp", "containers": [{
             "name": "dnsmasq", "image": "labkit/node",
             "command": ["dnsmasq", "-k", "-C", "/dev/null", "--no-resolv", "--no-hosts",
                         f"--addn-hosts={folder / 'hosts'}", "--pid-file=", "--user=root", "--group=root",
                         "--cache-size=1000"],
             "ports": [{"containerPort": 53, "protocol": "UDP"}]}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dnsmasq", "namespace": "bench"},
         "spec": {**_dual_stack([DNSMASQ_IP, DNSMASQ_IP6]), "selector": {"app": "dnsmasq"},
                  "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "client", "namespace": "bench", "labels": {"app": "client"}},
         "spec": {"nodeName": "w1", "containers": [{"name": "client", "image": "labkit/node",
                                                    "command": ["sleep", "infinity"]}]}},
    ]
    docs += [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc-{i}", "namespace": "bench"},
              "spec": {**_dual_stack([_cluster_ip(i), _cluster_ip6(i)]), "selector": {"app": "client"},
                       "ports": [{"name": "http", "port": 80}]}}
             for i in range(SERVICES)]
    (folder / "workloads.yaml").write_text("---\n".join(json.dumps(d) + "\n" for d in docs))
    topo = folder / "topology.yaml"
    topo.write_text(json.dumps({
        "name": lab,
        "mgmt": {"ipv4-subnet": "172.31.250.0/24"},
        "cluster": {"pod-cidr": POD_CIDRS, "service-cidr": SERVICE_CIDRS,
                    "dns": {"ip": DNS_IP, "workers": workers}},
        "topology": {"nodes": {"cp": {"kind": "k8s-node"}, "w1": {"kind": "k8s-node"}}},
        "workloads": ["workloads.yaml"],
    }, indent=1) + "\n")
    return topo, hosts, queries


def _in_netns(netns_path: str | None, argv: list[str], **kw) -> subprocess.CompletedProcess:
    """`argv` run in the network namespace at `netns_path` (None: this one)."""
    return subprocess.run(["nsenter", f"--net={netns_path}", "--", *argv] if netns_path else argv, **kw)


def _wait_answering(netns_path: str | None, addr: str, name: str, port: int = 53, qtype: str = "A") -> None:
    """Until `addr` answers `name` (with a record of `qtype`: NODATA is no answer) from inside the client's
    namespace (dig: one try each)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out = _in_netns(netns_path, ["dig", f"@{addr}", "-p", str(port), name, qtype, "+short", "+tries=1", "+time=1"],
                        capture_output=True, text=True).stdout.split()
        if out:
            return
    raise RuntimeError(f"{addr} port {port} does not answer {qtype} {name}")


def _dnsperf(netns_path: str | None, addr: str, port: int, queries: Path, seconds: float, opts: list[str]) -> dict:
    out = _in_netns(netns_path, ["dnsperf", "-s", addr, "-p", str(port), "-d", str(queries), "-l", str(seconds),
                                 *opts],
                    capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
    lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))
    noerror = re.search(r"NOERROR (\d+)", out)
    return {"qps": qps, "lost": lost, "noerror": int(noerror.group(1)) if noerror else 0}


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def _abba(measure, seconds: float, queries=QUERIES) -> dict[str, dict]:
    """Per profile, for each of `queries` (label, qtype, family) and both servers, ABBA rounds of half
    the time each (drift in the machine's load hits every measurement alike): `measure(who, half, opts,
    qtype, family)` -> dnsperf's figures. Only the headline profile asks over IPv6.

    Each profile's figures: per query label, both servers' qps, labkit/dnsmasq, lost and NOERROR
    counts; "aaaa_over_a": each server's AAAA qps over its A qps (both over IPv4); the A figures are
    also the profile's own top-level keys, as before there were others."""
    half = seconds / 2
    profiles = {}
    for profile, opts in PROFILES.items():
        kinds = [q for q in queries if q[2] == 4 or profile == HEADLINE]
        order = [(who, q) for q in kinds for who in ("labkit", "dnsmasq")]
        runs: dict[tuple, list[dict]] = {key: [] for key in order}
        for who, q in order + order[::-1]:
            runs[(who, q)].append(measure(who, half, opts, q[1], q[2]))
        by_query = {}
        for q in kinds:
            lk_qps, dm_qps = (sum(r["qps"] for r in runs[(w, q)]) / 2 for w in ("labkit", "dnsmasq"))
            by_query[q[0]] = {
                "labkit_qps": round(lk_qps),
                "dnsmasq_qps": round(dm_qps),
                "ratio": _ratio(lk_qps, dm_qps),
                "labkit_lost": sum(r["lost"] for r in runs[("labkit", q)]),
                "dnsmasq_lost": sum(r["lost"] for r in runs[("dnsmasq", q)]),
                "labkit_noerror": sum(r["noerror"] for r in runs[("labkit", q)]),
                "dnsmasq_noerror": sum(r["noerror"] for r in runs[("dnsmasq", q)]),
            }
        a, aaaa = by_query["A"], by_query.get("AAAA")
        profiles[profile] = {"dnsperf": " ".join(opts) or "(defaults)", **a, "by_query": by_query,
                             "aaaa_over_a": {who: _ratio(aaaa[f"{who}_qps"], a[f"{who}_qps"])
                                             for who in ("labkit", "dnsmasq")} if aaaa else {}}
    return profiles


def bench_server_alone(seconds: float, workers: int, folder: Path) -> dict[str, dict]:
    """Both servers on loopback addresses of the host, no lab path: the server's own
    speed. The labkit server with `workers` workers, its config the lab's names."""
    from labkit.dns.records import DnsConfig, Service, ServicePort
    from labkit.dns.server import command
    from tests.netutil import free_endpoint

    config = folder / "alone.json"
    DnsConfig(services=[Service("bench", f"svc-{i}", "ClusterIP", cluster_ips=[_cluster_ip(i), _cluster_ip6(i)],
                                ports=[ServicePort(80, "http")])
                        for i in range(SERVICES)]).dump(str(config))
    (lk_addr, lk_port), (dm_addr, dm_port) = free_endpoint(), free_endpoint()
    procs = []
    try:
        procs.append(subprocess.Popen(command(str(config), lk_addr, lk_port, workers=workers),
                                      stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            ["dnsmasq", "-k", "-C", "/dev/null", "--no-resolv", "--no-hosts", f"--addn-hosts={folder / 'hosts'}",
             f"--listen-address={dm_addr}", "--bind-interfaces", f"--port={dm_port}", "--pid-file=",
             "--user=root", "--group=root", "--no-dhcp-interface=lo", "--cache-size=1000"],
            stderr=subprocess.DEVNULL))
        host = None
        first = "svc-0.bench.svc.cluster.local"
        for addr, port in ((lk_addr, lk_port), (dm_addr, dm_port)):
            for qtype in ("A", "AAAA"):
                _wait_answering(host, addr, first, port, qtype)
        # over IPv4 loopback only: the test's IPv6 addresses are ULAs in namespaces of its own
        return _abba(lambda who, half, opts, qtype, family: _dnsperf(
            host, *((lk_addr, lk_port) if who == "labkit" else (dm_addr, dm_port)), folder / f"queries-{qtype}.txt",
            half, opts), seconds, [q for q in QUERIES if q[2] == 4])
    finally:
        for p in procs:
            _stop(p)


def _dns_workers(lab: str) -> int:
    """Worker processes of the lab's (first) DNS server (one when it serves alone, without a supervisor)."""
    from labkit import processes, state

    pid_file = next((Path(state.lab_dir(lab)) / "dns").glob("*.pid"))
    server = processes.read_pid_file(str(pid_file))
    assert server is not None, f"unreadable pid file {pid_file}"
    return len(processes.children(server.pid)) or 1


def bench_dns(seconds: float = 10, workers: str | int = "auto", server_alone: bool = True) -> dict:
    """dnsperf for `seconds` against each server per profile (in two halves, ABBA order),
    from the client pod of a lab brought up for it. Returns the headline profile's
    queries/s for both and the ratio labkit/dnsmasq at the top level, every profile's
    figures under "profiles", and those of both servers alone on loopback under
    "server_alone"."""
    for tool in ("dnsperf", "dnsmasq", "dig", "nsenter"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed")
    if os.geteuid() != 0:
        raise RuntimeError("the DNS benchmark brings up a lab: run it as root")
    from labkit import lab as labs
    from labkit.progress import Progress

    name = f"bdns{os.getpid() % 100000}"
    tmp = Path(tempfile.mkdtemp(prefix="labkit-bench-dns-"))
    os.chmod(tmp, 0o755)
    try:
        topo, _, queries = lab_files(tmp, name, workers)
        (tmp / "hosts").chmod(0o644)
        for qtype, text in queries.items():
            (tmp / f"queries-{qtype}.txt").write_text(text)
        summary = labs.up(str(topo), progress=Progress(quiet=True), name=name)
        pods = {f"{p['namespace']}/{p['name']}": p for p in summary["pods"]}
        client = pods["bench/client"]["netns_path"]
        dns_pod = next(p for k, p in pods.items() if k.startswith("kube-system/"))
        if dns_pod["node"] != pods["bench/dnsmasq"]["node"]:   # the same path for both, or no comparison
            raise RuntimeError(f"the DNS pod landed on {dns_pod['node']}, dnsmasq's on {pods['bench/dnsmasq']['node']}")
        first = "svc-0.bench.svc.cluster.local"
        servers = {("labkit", 4): DNS_IP, ("labkit", 6): DNS_IP6, ("dnsmasq", 4): DNSMASQ_IP,
                   ("dnsmasq", 6): DNSMASQ_IP6}
        for address in servers.values():
            for qtype in ("A", "AAAA"):
                _wait_answering(client, address, first, qtype=qtype)
        n_workers = _dns_workers(name)
        profiles = _abba(lambda who, half, opts, qtype, family: _dnsperf(
            client, servers[(who, family)], 53, tmp / f"queries-{qtype}.txt", half, opts), seconds)
        alone = bench_server_alone(seconds, n_workers, tmp) if server_alone else {}
        head = profiles[HEADLINE]
        return {"seconds": seconds, "names": SERVICES, "lab": name, "dns_pod_node": dns_pod["node"],
                "workers_setting": workers, "workers": n_workers, "cpus": len(os.sched_getaffinity(0)),
                "labkit_qps": head["labkit_qps"], "dnsmasq_qps": head["dnsmasq_qps"],
                "ratio": head["ratio"], "aaaa_labkit_qps": head["by_query"]["AAAA"]["labkit_qps"],
                "aaaa_dnsmasq_qps": head["by_query"]["AAAA"]["dnsmasq_qps"],
                "aaaa_ratio": head["by_query"]["AAAA"]["ratio"], "aaaa_over_a": head["aaaa_over_a"],
                "profiles": profiles, "server_alone": alone}
    finally:
        try:
            labs.down(name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _assert_nothing_left(name, tmp)


def _assert_nothing_left(lab: str, folder: Path) -> None:
    """The lab's namespaces, files and state are gone (labkit's own `leftovers`), and so
    are its DNS server and the dnsmasq pod's process."""
    from labkit import state
    from labkit.lab import leftovers

    left = leftovers(lab)
    marks = (f"{state.lab_dir(lab)}/".encode(), str(folder).encode())
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if any(mark in cmdline for mark in marks):
                argv = cmdline.replace(b"\0", b" ").decode(errors="replace")
                left.append(f"process {entry}: {argv[:80]}")
    if left:
        raise RuntimeError(f"the DNS benchmark's lab {lab} left: {', '.join(left)}")


def table_rows(result: dict) -> dict:
    """{row: {column: value}} for `invoke bench`'s table, plus notes."""
    rows: dict = {}
    for where, profiles in (("lab", result["profiles"]), ("server alone", result["server_alone"])):
        for r in profiles.values():
            for label, q in r["by_query"].items():
                rows[f"{where}, dnsperf {r['dnsperf']}, {label}"] = {
                    "labkit qps": q["labkit_qps"], "dnsmasq qps": q["dnsmasq_qps"], "labkit/dnsmasq": q["ratio"]}
            ratios = r["aaaa_over_a"]
            rows[f"{where}, dnsperf {r['dnsperf']}, AAAA qps / A qps"] = {
                "labkit qps": ratios.get("labkit"), "dnsmasq qps": ratios.get("dnsmasq"), "labkit/dnsmasq": ""}
    rows["labkit workers"] = f"{result['workers']} ({result['workers_setting']}, {result['cpus']} CPUs)"
    return rows


if __name__ == "__main__":
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 10
    w = sys.argv[2] if len(sys.argv) > 2 else "auto"
    print(json.dumps(bench_dns(secs, w if w == "auto" else int(w)), indent=2))
