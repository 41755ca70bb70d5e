"""The cluster's HTTP front door: kube-edge.yaml's Ingress and HTTPRoutes on labkit's HAProxy, from the
outside client through a NodePort to the pods, under both runtimes; `apply` shifting a canary split and
reloading the proxy while a long-lived connection through it keeps flowing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from labkit import lab, processes
from labkit.ingress import haproxy
from labkit.phases.ingress import folder_of
from labkit.pytest_plugin import RunningLab, labkit_fixture

from .conftest import RUNTIMES, TOPOLOGIES

edge = labkit_fixture(TOPOLOGIES / "kube-edge.yaml", runtime=RUNTIMES)

ASK = """
import json, sys
from labkit.agent import http_get
address, port, count, spec = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
print(json.dumps([http_get(address, port, spec, timeout=5) for _ in range(count)]))
"""


def ask(running: RunningLab, source: str, address: str, port: int, count: int = 1, **spec: object) -> list[dict]:
    """`count` HTTP requests from `source`'s network namespace, one after the other."""
    proc = subprocess.run(["nsenter", f"--net={running.netns_path(source)}", "--", sys.executable, "-c", ASK,
                           address, str(port), str(count), json.dumps(spec)],
                          capture_output=True, text=True, check=True, timeout=120)
    return json.loads(proc.stdout)


def apps(answers: list[dict]) -> list[str]:
    """Which app answered each request ("app-a", "app-b", or the status code)."""
    return [a["body"].split()[0] if a.get("http_status") == 200 else str(a.get("http_status")) for a in answers]


def node_ip(running: RunningLab, node: str) -> str:
    return running.nodes()[node]["mgmt_ipv4"].split("/")[0]


def test_the_shipped_expectations_hold(edge: RunningLab) -> None:
    report = lab.verify_topology(str(TOPOLOGIES / "kube-edge.yaml"), name=edge.name)
    assert report.ok, report.text()


def test_a_zero_weight_gets_nothing_and_a_half_split_reaches_both(edge: RunningLab) -> None:
    front = "198.51.100.10"  # the LoadBalancer address, the Gateway's listener on 8080
    assert set(apps(ask(edge, "ext", front, 8080, 20, host="canary.gw.test"))) == {"app-a"}  # weight 100/0
    assert set(apps(ask(edge, "ext", front, 8080, 10, host="canary.gw.test", headers={"X-Canary": "yes"}))) \
        == {"app-b"}
    # 50/50, weighted round robin in each of the two proxies: both apps within any four of one proxy's requests
    assert set(apps(ask(edge, "ext", front, 8080, 20, host="half.gw.test"))) == {"app-a", "app-b"}
    # and through a NodePort of the same Service
    node_port = edge.service("labkit-ingress/haproxy")["ports"][-1]["node_port"]
    assert set(apps(ask(edge, "ext", node_ip(edge, "w1"), node_port, 10, host="canary.gw.test"))) == {"app-a"}


def test_tls_is_served_with_the_secrets_certificate(edge: RunningLab) -> None:
    script = ("import socket, ssl, sys\nc = ssl.create_default_context()\nc.check_hostname = False\n"
              "c.verify_mode = ssl.CERT_NONE\n"
              "s = c.wrap_socket(socket.create_connection((sys.argv[1], 32443), timeout=5), "
              "server_hostname='shop.example.test')\n"
              "import hashlib\nprint(hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest())\n")
    proc = subprocess.run(["nsenter", f"--net={edge.netns_path('ext')}", "--", sys.executable, "-c", script,
                           node_ip(edge, "cp")], capture_output=True, text=True, check=True, timeout=60)
    pem = subprocess.run(["openssl", "x509", "-outform", "DER"], capture_output=True, check=True,
                         input=_secret_certificate()).stdout
    import hashlib

    assert proc.stdout.strip() == hashlib.sha256(pem).hexdigest()


def _secret_certificate() -> bytes:
    import base64

    import yaml

    docs = list(yaml.safe_load_all((TOPOLOGIES / "workloads" / "kube-edge.yaml").read_text()))
    secret = next(d for d in docs if d and d.get("kind") == "Secret")
    return base64.b64decode(secret["data"]["tls.crt"])


def test_status_says_what_the_proxy_serves(edge: RunningLab) -> None:
    found = lab.status(edge.name)[0]["ingress"]
    assert found["service"] == "labkit-ingress/haproxy"
    service = edge.service("labkit-ingress/haproxy")  # a LoadBalancer: MetalLB's BGP pool, announced by every node
    assert (service["type"], service["load_balancer"]["ip"], service["load_balancer"]["mode"]) == \
        ("LoadBalancer", "198.51.100.10", "bgp")
    assert [(f["port"], f["protocol"]) for f in found["frontends"]] == [(80, "HTTP"), (443, "HTTPS"), (8080, "HTTP")]
    assert [i["name"] for i in found["ingresses"]] == ["default/shop"]
    assert {r["name"] for r in found["routes"]} == {"default/canary", "default/half"}
    assert [b["problem"] for b in found["backends"] if "problem" in b] == ["no endpoints: answers 503"]
    assert found["skipped"] == {}
    config = Path(found["config"]).read_text()
    assert "use_backend" in config and "server " in config


# ---------------------------------------------------------------- apply: the canary shifts, nothing drops

STREAM = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
s.sendall(b"POST /stream HTTP/1.1\\r\\nHost: shop.example.test\\r\\nContent-Length: 1000000\\r\\n\\r\\nline-one\\n")
seen = b""
for word in (b"line-one", b"line-two"):
    while word not in seen:
        chunk = s.recv(4096)
        if not chunk:
            print("closed", flush=True)
            sys.exit(1)
        seen += chunk
    print(word.decode(), flush=True)
    if word == b"line-one":
        sys.stdin.readline()
        s.sendall(b"line-two\\n")
"""


def test_apply_shifts_the_canary_and_a_long_connection_survives_the_reload(labkit_lab_factory, tmp_path) -> None:
    (tmp_path / "workloads").mkdir()
    shutil.copy(TOPOLOGIES / "workloads" / "kube-edge.yaml", tmp_path / "workloads" / "kube-edge.yaml")
    topo = tmp_path / "edge-apply.yaml"
    topo.write_text((TOPOLOGIES / "kube-edge.yaml").read_text().replace("name: kubeedge", "name: ingapply"))
    running = labkit_lab_factory(topo)
    w2 = node_ip(running, "w2")
    gateway = running.service("labkit-ingress/haproxy")["ports"][-1]["node_port"]
    stream = subprocess.Popen(["nsenter", f"--net={running.netns_path('ext')}", "--", sys.executable, "-c", STREAM,
                               w2, "32080"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert stream.stdout is not None and stream.stdin is not None
        assert stream.stdout.readline().strip() == "line-one"  # the connection is up, through a proxy
        folder = folder_of(running.name)
        proxies = [p for p in running.pods() if p.startswith("labkit-ingress/")]
        before = {p: haproxy.workers(f"{folder}/{p.split('/')[1]}.sock") for p in proxies}
        shifted = (tmp_path / "workloads" / "kube-edge.yaml").read_text().replace(
            "{name: app-a, port: 80, weight: 100}", "{name: app-a, port: 80, weight: 0}").replace(
            "{name: app-b, port: 80, weight: 0}", "{name: app-b, port: 80, weight: 100}")
        (tmp_path / "workloads" / "kube-edge.yaml").write_text(shifted)
        lab.apply(str(topo), name=running.name)
        after = {p: haproxy.workers(f"{folder}/{p.split('/')[1]}.sock") for p in proxies}
        assert all(after[p] and not set(after[p]) & set(before[p]) for p in proxies), (before, after)  # reloaded
        assert set(apps(ask(running, "ext", w2, gateway, 20, host="canary.gw.test"))) == {"app-b"}  # 0/100 now
        stream.stdin.write("go\n")
        stream.stdin.flush()
        assert stream.stdout.readline().strip() == "line-two"  # the old worker still carries it
    finally:
        stream.kill()
        stream.wait()
    # a proxy whose HAProxy died: status says so, and apply starts it again
    victim = proxies[0].split("/")[1]
    master = processes.recorded(f"{folder}/{victim}.pid", marker=folder)
    assert master is not None
    processes.stop([master])
    found = lab.status(running.name)[0]
    assert found["phase"] == "degraded"
    assert found["health"]["problems"] == [f"HAProxy of ingress pod {proxies[0]} is not running (labkit apply "
                                           "restarts it)"]
    lab.apply(str(topo), name=running.name)
    assert lab.status(running.name)[0]["health"]["ok"]
    assert haproxy.workers(f"{folder}/{victim}.sock")
