"""The DNS server of a dual-stack DNS pod: in a network namespace of its own with an IPv4 and an IPv6
address (ULA), started as `up` starts it (dns.deploy.start_servers, both addresses), asked with dig from
a second namespace over both families, UDP and TCP.

What a dual-stack cluster's pods ask: AAAA and A of a dual-stack Service, NODATA for the family a
single-stack Service lacks, headless endpoints of both families, ip6.arpa PTR, SRV with both families'
addresses in the additional section, pods' dashed IPv6 names; and garbage at the IPv6 address leaves it
serving.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from labkit.dns.deploy import start_servers
from labkit.dns.records import DnsConfig, Endpoint, Service, ServicePort

pytestmark = pytest.mark.integration

DIG = shutil.which("dig")
SERVER4, SERVER6 = "10.255.53.1", "fd00:53::1"
CLIENT4, CLIENT6 = "10.255.53.2", "fd00:53::2"
PORT = 53
Z = "cluster.local"


UPSTREAM = ("127.0.0.1", 5353)   # in the server's namespace: a second server, zone example.org


def dualstack_config() -> DnsConfig:
    return DnsConfig(
        nameservers=["10.96.0.10", "fd00:10:96::a"], upstreams=[f"{UPSTREAM[0]}:{UPSTREAM[1]}"],
        services=[
            Service("default", "web", "ClusterIP", cluster_ips=["10.96.0.20", "fd00:10:96::20"],
                    ports=[ServicePort(80, "http")],
                    endpoints=[Endpoint(ips=["10.244.1.5", "fd00:10:244:1::5"], pod="web-1")]),
            Service("default", "v4only", "ClusterIP", "10.96.0.21", ports=[ServicePort(80, "http")]),
            Service("default", "v6only", "ClusterIP", cluster_ips=["fd00:10:96::22"], ports=[ServicePort(80, "http")]),
            Service("prod", "db", "Headless", ports=[ServicePort(5432, "pg")],
                    endpoints=[Endpoint(ips=["10.244.1.6", "fd00:10:244:1::6"], hostname="db-0"),
                               Endpoint(ips=["fd00:10:244:2::7", "10.244.2.7"])]),
        ])


class DnsPod:
    """Two namespaces joined by a veth pair, both families on it; the server in the first, both addresses."""

    def __init__(self, workers: int, nodad: bool = True) -> None:
        """`nodad`: the server's IPv6 address is usable at once (else tentative a second or so)."""
        prefix = f"lkt-dns6-{secrets.token_hex(2)}"
        self.server_ns, self.client_ns = f"{prefix}-srv", f"{prefix}-cli"
        self.folder = tempfile.mkdtemp(prefix=f"{prefix}-")
        self.pid: int | None = None
        self.upstream_pid: int | None = None
        self.workers = workers
        self.made: list[str] = []
        for ns in (self.server_ns, self.client_ns):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            self.made.append(ns)
            self.sh(ns, "ip", "link", "set", "lo", "up")
        subprocess.run(["ip", "link", "add", "eth0", "netns", self.server_ns, "type", "veth", "peer", "name", "eth0",
                        "netns", self.client_ns], check=True)
        for ns, v4, v6 in ((self.server_ns, SERVER4, SERVER6), (self.client_ns, CLIENT4, CLIENT6)):
            self.sh(ns, "ip", "addr", "add", f"{v4}/24", "dev", "eth0")
            dad = [] if ns == self.server_ns and not nodad else ["nodad"]   # `nodad`: the server's may be tentative
            self.sh(ns, "ip", "-6", "addr", "add", f"{v6}/64", "dev", "eth0", *dad)
            self.sh(ns, "ip", "link", "set", "eth0", "up")

    def start(self) -> DnsPod:
        upstream = os.path.join(self.folder, "upstream.json")
        DnsConfig(zone="example.org", services=[Service("default", "far", "ClusterIP", cluster_ips=[
            "192.0.2.80", "fd00:99::80"])]).dump(upstream)
        self.upstream_pid = start_servers(upstream, [("upstream", f"/run/netns/{self.server_ns}", UPSTREAM[0])],
                                          self.folder, workers=1, port=UPSTREAM[1])[0]
        config = os.path.join(self.folder, "dns.json")
        dualstack_config().dump(config)
        (self.pid,) = start_servers(config, [("dns-0", f"/run/netns/{self.server_ns}", [SERVER4, SERVER6])],
                                    self.folder, workers=self.workers, port=PORT)
        self.serving = int(open(os.path.join(self.folder, "dns-0.pid")).read().split()[0])
        return self

    def sh(self, ns: str, *argv: str, check: bool = True, timeout: float = 20,
           input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=check,
                              timeout=timeout, input=input)

    def dig(self, server: str, *args: str, tcp: bool = False) -> tuple[str, list[str], list[str]]:
        """(status, answer records, additional records) as "TYPE rdata", sorted."""
        out = self.sh(self.client_ns, DIG, f"@{server}", "-p", str(PORT), "+tcp" if tcp else "+notcp",
                      "+tries=1", "+time=3", "+noall", "+comments", "+answer", "+additional", *args).stdout
        status = out.split("status: ", 1)[1].split(",", 1)[0]
        sections: dict[str, list[str]] = {"ANSWER": [], "ADDITIONAL": []}
        current = None
        for line in out.splitlines():
            if line.startswith(";; ") and " SECTION:" in line:
                current = line[3:].split(" SECTION:")[0]
            elif line and not line.startswith(";") and current in sections:
                sections[current].append(" ".join(line.split()[3:]))
        return status, sorted(sections["ANSWER"]), sorted(sections["ADDITIONAL"])

    def stop(self) -> None:
        for pid in (self.pid, self.upstream_pid):
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGTERM)   # one process each (or the supervisor): it stops its workers
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-workers"])
def pod(request: pytest.FixtureRequest) -> Iterator[DnsPod]:
    if DIG is None:
        pytest.fail("dig is missing (dnsutils; scripts/bootstrap.sh installs it)")
    p = DnsPod(workers=request.param)
    try:
        yield p.start()
    finally:
        p.stop()


@pytest.mark.parametrize("server", [SERVER4, SERVER6], ids=["v4", "v6"])
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_and_aaaa_of_a_dual_stack_service_from_either_address(pod: DnsPod, server: str, tcp: bool) -> None:
    assert pod.dig(server, "AAAA", f"web.default.svc.{Z}", tcp=tcp)[:2] == ("NOERROR", ["AAAA fd00:10:96::20"])
    assert pod.dig(server, "A", f"web.default.svc.{Z}", tcp=tcp)[:2] == ("NOERROR", ["A 10.96.0.20"])
    # the nameserver of the zone has both families too
    assert pod.dig(server, "AAAA", f"ns.dns.{Z}", tcp=tcp)[1] == ["AAAA fd00:10:96::a"]


def test_the_family_a_service_lacks_is_nodata_not_nxdomain(pod: DnsPod) -> None:
    assert pod.dig(SERVER6, "AAAA", f"v4only.default.svc.{Z}")[:2] == ("NOERROR", [])
    assert pod.dig(SERVER6, "A", f"v4only.default.svc.{Z}")[1] == ["A 10.96.0.21"]
    assert pod.dig(SERVER6, "A", f"v6only.default.svc.{Z}")[:2] == ("NOERROR", [])
    assert pod.dig(SERVER6, "AAAA", f"v6only.default.svc.{Z}")[1] == ["AAAA fd00:10:96::22"]
    assert pod.dig(SERVER6, "AAAA", f"nope.default.svc.{Z}")[0] == "NXDOMAIN"


def test_headless_endpoints_of_both_families(pod: DnsPod) -> None:
    base = f"db.prod.svc.{Z}"
    assert pod.dig(SERVER6, "AAAA", base)[1] == ["AAAA fd00:10:244:1::6", "AAAA fd00:10:244:2::7"]
    assert pod.dig(SERVER6, "A", base)[1] == ["A 10.244.1.6", "A 10.244.2.7"]
    assert pod.dig(SERVER6, "AAAA", f"db-0.{base}")[1] == ["AAAA fd00:10:244:1::6"]
    assert pod.dig(SERVER6, "A", f"db-0.{base}")[1] == ["A 10.244.1.6"]
    # without a hostname: one name per address, as CoreDNS names them (one EndpointSlice per family)
    assert pod.dig(SERVER6, "AAAA", f"fd00-10-244-2--7.{base}")[1] == ["AAAA fd00:10:244:2::7"]
    assert pod.dig(SERVER6, "A", f"fd00-10-244-2--7.{base}")[:2] == ("NOERROR", [])
    assert pod.dig(SERVER6, "A", f"10-244-2-7.{base}")[1] == ["A 10.244.2.7"]


def test_srv_targets_come_with_both_families_in_the_additional_section(pod: DnsPod) -> None:
    status, answer, additional = pod.dig(SERVER6, "SRV", f"_http._tcp.web.default.svc.{Z}")
    assert answer == [f"SRV 0 100 80 web.default.svc.{Z}."]
    assert additional == ["A 10.96.0.20", "AAAA fd00:10:96::20"]
    status, answer, additional = pod.dig(SERVER4, "SRV", f"_pg._tcp.db.prod.svc.{Z}", tcp=True)
    assert answer == [f"SRV 0 33 5432 10-244-2-7.db.prod.svc.{Z}.", f"SRV 0 33 5432 db-0.db.prod.svc.{Z}.",
                      f"SRV 0 33 5432 fd00-10-244-2--7.db.prod.svc.{Z}."]
    assert additional == ["A 10.244.1.6", "A 10.244.2.7", "AAAA fd00:10:244:1::6", "AAAA fd00:10:244:2::7"]


def test_ip6_arpa_ptr_of_cluster_ips_and_endpoints(pod: DnsPod) -> None:
    assert pod.dig(SERVER6, "-x", "fd00:10:96::20")[1] == [f"PTR web.default.svc.{Z}."]
    assert pod.dig(SERVER6, "-x", "fd00:10:244:1::6")[1] == [f"PTR db-0.db.prod.svc.{Z}."]
    assert pod.dig(SERVER6, "-x", "fd00:10:244:2::7", tcp=True)[1] == [f"PTR fd00-10-244-2--7.db.prod.svc.{Z}."]
    assert pod.dig(SERVER4, "-x", "10.96.0.20")[1] == [f"PTR web.default.svc.{Z}."]


def test_pod_names_of_both_families(pod: DnsPod) -> None:
    assert pod.dig(SERVER6, "AAAA", f"fd00-10-244-1--5.default.pod.{Z}")[1] == [
        "AAAA fd00:10:244:1::5"]
    assert pod.dig(SERVER6, "A", f"fd00-10-244-1--5.default.pod.{Z}")[:2] == ("NOERROR", [])
    assert pod.dig(SERVER6, "A", f"10-244-1-5.default.pod.{Z}")[1] == ["A 10.244.1.5"]
    assert pod.dig(SERVER6, "AAAA", f"fe80--1%eth0.default.pod.{Z}")[0] == "NXDOMAIN"


GARBAGE = r"""
import os, random, socket, sys
server, port = sys.argv[1], int(sys.argv[2])
random.seed(17)
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
for n in (0, 1, 11, 12, 13, 17, 40, 300, 1500):
    for _ in range(30):
        u.sendto(os.urandom(n), (server, port))
# a valid header, then a name running past the end, a pointer in the question, a label type 0x40
for bad in (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3fabc",
            b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",
            b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x41abc\x00\x00\x01\x00\x01"):
    u.sendto(bad, (server, port))
for n in (1, 2, 3, 100):
    t = socket.create_connection((server, port), timeout=3)
    t.sendall(os.urandom(n))
    t.close()
print("sent")
"""


def test_garbage_at_the_ipv6_address_leaves_it_serving(pod: DnsPod) -> None:
    sent = pod.sh(pod.client_ns, sys.executable, "-c", GARBAGE, SERVER6, str(PORT))
    assert sent.stdout.strip() == "sent", sent.stderr
    time.sleep(0.2)
    assert pod.dig(SERVER6, "AAAA", f"web.default.svc.{Z}")[1] == ["AAAA fd00:10:96::20"]
    assert pod.dig(SERVER6, "AAAA", f"web.default.svc.{Z}", tcp=True)[1] == ["AAAA fd00:10:96::20"]
    os.kill(pod.serving, 0)   # and the same process serves


def test_each_address_has_its_own_sockets(pod: DnsPod) -> None:
    """UDP and TCP on each address of the pod, one UDP socket per worker and address: the IPv6 ones bound
    to the IPv6 address alone (IPV6_V6ONLY), so the IPv4 address is never served through v4-mapped ones."""
    udp = pod.sh(pod.server_ns, "ss", "-Hlnu", f"sport = :{PORT}").stdout.splitlines()
    tcp = pod.sh(pod.server_ns, "ss", "-Hlnt", f"sport = :{PORT}").stdout.splitlines()
    for lines, each in ((udp, pod.workers), (tcp, 1)):
        assert sum(f" {SERVER4}:{PORT} " in line for line in lines) == each, lines
        assert sum(f" [{SERVER6}]:{PORT} " in line for line in lines) == each, lines
        assert len(lines) == 2 * each, lines


def test_a_tentative_ipv6_address_is_waited_for() -> None:
    """A pod's IPv6 address added without `nodad` is tentative for a second or two (duplicate address
    detection), and binding it fails meanwhile: the server waits for it rather than failing to start."""
    p = DnsPod(workers=1, nodad=False)
    try:
        def state() -> str:
            out = p.sh(p.server_ns, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "to", f"{SERVER6}/128").stdout
            assert SERVER6 in out, out
            return out

        assert "tentative" in state()
        p.start()
        assert "tentative" not in state()
        assert p.dig(SERVER6, "AAAA", f"web.default.svc.{Z}")[1] == ["AAAA fd00:10:96::20"]
    finally:
        p.stop()


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_names_outside_the_zone_are_forwarded_for_ipv6_clients(pod: DnsPod, tcp: bool) -> None:
    """The upstream's answer goes back to the IPv6 client through the IPv6 address's own socket."""
    status, answer, _ = pod.dig(SERVER6, "AAAA", "far.default.svc.example.org", tcp=tcp)
    assert (status, answer) == ("NOERROR", ["AAAA fd00:99::80"])
    assert pod.dig(SERVER6, "A", "far.default.svc.example.org", tcp=tcp)[1] == ["A 192.0.2.80"]
    assert pod.dig(SERVER6, "A", "nope.example.org", tcp=tcp)[0] == "NXDOMAIN"


def test_sighup_reload_reaches_every_address(pod: DnsPod) -> None:
    """Every address's loop (the second one in a thread of its own) serves the reloaded records."""
    config = os.path.join(pod.folder, "dns.json")
    cfg = dualstack_config()
    cfg.services.append(Service("default", "late", "ClusterIP", cluster_ips=["fd00:10:96::77", "10.96.0.77"]))
    try:
        cfg.dump(config)
        os.kill(pod.serving, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while pod.dig(SERVER6, "AAAA", f"late.default.svc.{Z}")[1] != ["AAAA fd00:10:96::77"]:
            assert time.monotonic() < deadline, "not reloaded"
            time.sleep(0.1)
        for _ in range(10):   # every worker, both addresses, both transports
            for server in (SERVER4, SERVER6):
                assert pod.dig(server, "AAAA", f"late.default.svc.{Z}")[1] == ["AAAA fd00:10:96::77"]
                assert pod.dig(server, "A", f"late.default.svc.{Z}", tcp=True)[1] == ["A 10.96.0.77"]
    finally:
        dualstack_config().dump(config)
        os.kill(pod.serving, signal.SIGHUP)
