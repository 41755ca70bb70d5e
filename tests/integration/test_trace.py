"""`labkit trace` against what the lab must do: the endpoint is one of the Service's, the hops
follow the backend (host-gw: node to node over eth0; vxlan: through flannel.1), the reply comes
back through the same nodes, and nothing of the trace is left. On the shared kube_lab (both
backends, both runtimes)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from labkit.lab import trace
from labkit.net import netns
from labkit.pytest_plugin import RunningLab

from .conftest import ROOT, labkit


def _nodes_of(report: dict, key: str, pods: dict) -> list[str]:
    """The nodes a direction crossed, pods replaced by the node they run on, repeats folded."""
    out: list[str] = []
    for hop in report[key]:
        node = pods[hop["name"]]["node"] if hop["name"] in pods else hop["name"]
        if not out or out[-1] != node:
            out.append(node)
    return out


def _backend(lab: RunningLab) -> str:
    return "vxlan" if "vxlan" in str(lab.topology) else "host-gw"


def _assert_backend_hops(lab: RunningLab, report: dict) -> None:
    nodes = lab.nodes()
    crossed = [h for h in report["probe"] if h["name"] in nodes and nodes[h["name"]]["kind"] == "k8s-node"]
    assert len(crossed) >= 2, report["probe"]
    sender, receiver = crossed[0], crossed[-1]
    if _backend(lab) == "vxlan":
        assert sender["oif"] == "flannel.1" and receiver["iif"] == "flannel.1", (sender, receiver)
        assert "dev flannel.1" in sender["route"] and "onlink" in sender["route"], sender
        assert sender["encap"].startswith("vxlan ") and "udp/8472" in sender["encap"], sender
        peer = nodes[receiver["name"]]["mgmt_ipv4"].split("/")[0]
        assert f"-> {peer} " in sender["encap"], sender  # the outer packet went to the receiving node
    else:
        assert sender["oif"] == "eth0" and receiver["iif"] == "eth0", (sender, receiver)
        gateway = nodes[receiver["name"]]["mgmt_ipv4"].split("/")[0]
        assert f"via {gateway} dev eth0" in sender["route"], sender
        assert sender["encap"] is None


def test_a_cross_node_pod_request_goes_the_backend_s_way_and_back(kube_lab: RunningLab) -> None:
    pods = kube_lab.pods()
    client = pods["default/client"]
    target = next(k for k, p in pods.items() if k.startswith("default/web-") and p["node"] != client["node"])
    report = trace(kube_lab.name, "default/client", f"{target}:8080")
    assert report["result"]["open"], report["result"]
    assert report["probe"][0]["name"] == "default/client" and report["probe"][0]["outcome"] == "sent"
    assert report["probe"][-1]["name"] == target and report["probe"][-1]["outcome"] == "delivered"
    assert _nodes_of(report, "probe", pods) == ["cp", pods[target]["node"]]
    _assert_backend_hops(kube_lab, report)
    # the reply: from the pod back to the client, through the same nodes the other way
    assert _nodes_of(report, "reply", pods) == list(reversed(_nodes_of(report, "probe", pods)))
    assert report["reply"][-1]["name"] == "default/client" and report["reply"][-1]["outcome"] == "delivered"
    for hop in report["probe"]:  # pod to pod: never NATed
        assert hop["packet_in"].split(" -> ")[0].startswith(client["ip"].split("/")[0] + ":")


def test_a_service_request_names_the_service_and_the_endpoint_it_chose(kube_lab: RunningLab) -> None:
    report = trace(kube_lab.name, "default/client", "web.default.svc.cluster.local")
    service = next(s for s in kube_lab.summary["services"] if s["name"] == "web")
    assert report["service"] == "default/web:80/tcp" and report["port"] == 80
    assert report["address"] == service["cluster_ip"] and report["result"]["open"]
    chosen = report["endpoint"]
    assert chosen and chosen.split(" ")[-1] in service["ports"][0]["endpoints"], (chosen, service)
    pod = chosen.split(" ")[0]
    assert report["probe"][-1]["name"] == pod and report["probe"][-1]["outcome"] == "delivered"
    meanings = [r["meaning"] for h in report["probe"] for r in h["rules"] if r["meaning"]]
    assert any(m.startswith("service lookup: ClusterIP matched (default/web/") for m in meanings), meanings
    assert f"DNAT to endpoint {chosen}" in meanings, meanings
    node = report["probe"][1]  # the client's node did the DNAT: the packet left it for the endpoint
    assert node["name"] == "cp" and node["packet_out"].endswith(chosen.split(" ")[-1]), node
    assert report["reply"][-1]["packet_in"].startswith(f"{service['cluster_ip']}:80 -> "), report["reply"][-1]


def test_a_node_port_from_outside_is_masqueraded_and_comes_back(kube_lab: RunningLab) -> None:
    report = trace(kube_lab.name, "ext", "w2:30080")
    assert report["result"]["open"] and report["service"] == "default/web-nodeport:80/tcp"
    w2 = next(h for h in report["probe"] if h["name"] == "w2")
    meanings = [r["meaning"] for r in w2["rules"] if r["meaning"]]
    assert any(m.startswith("service lookup: NodePort matched") for m in meanings), meanings
    assert any(m.startswith("masquerade") for m in meanings), meanings
    assert report["reply"][-1]["name"] == "ext" and report["reply"][-1]["packet_in"].startswith("172.31.0.4:30080")
    pods = kube_lab.pods()
    assert _nodes_of(report, "reply", pods) == list(reversed(_nodes_of(report, "probe", pods)))


def test_a_service_without_endpoints_is_rejected_on_the_client_s_node(kube_lab: RunningLab) -> None:
    report = trace(kube_lab.name, "default/client", "nobody")
    assert report["result"] == {"open": False, "reason": "connection refused"}
    assert report["service"] == "default/nobody:80/tcp" and report["endpoint"] is None
    assert report["dropped"]["where"] == "cp" and "without endpoints" in report["dropped"]["by"]
    # on a bridge (cni.mode: bridge) the node's reject goes back out at layer 2, past its ip output hook
    sender = [] if kube_lab.summary["cni"]["mode"] == "bridge" else [("cp", "sent")]
    assert [(h["name"], h["outcome"]) for h in report["reply"]] == [*sender, ("default/client", "delivered")]


def test_tracing_leaves_no_table_and_no_process(kube_lab: RunningLab) -> None:
    trace(kube_lab.name, "default/client", "web", protocol="tcp")
    report = trace(kube_lab.name, "team-a/probe", "kube-dns.kube-system:53", protocol="udp")
    assert report["result"]["open"] and report["service"] == "kube-system/kube-dns:53/udp"
    icmp = trace(kube_lab.name, "ext", "cp", protocol="icmp")
    assert icmp["result"]["open"] and [h["name"] for h in icmp["probe"]] == ["ext", "cp"]
    assert [h["name"] for h in icmp["reply"]] == ["cp", "ext"]
    paths = [n["netns_path"] for n in kube_lab.summary["nodes"]] + [p["netns_path"] for p in kube_lab.pods().values()]
    for where in paths:
        listed = subprocess.run(["nsenter", f"--net={where}", "nft", "list", "tables"], capture_output=True,
                                text=True, check=True)
        assert "labkit-trace" not in listed.stdout, (where, listed.stdout)
    monitors = [pid for pid in netns.pids_in_namespaces(paths) if _comm(pid) == "nft"]
    assert not monitors, monitors


def _comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return None


@pytest.mark.parametrize("fmt", ["json", "mermaid", "html"])
def test_the_command_line_draws_a_trace(kube_lab: RunningLab, fmt: str, tmp_path) -> None:
    out = tmp_path / f"trace.{fmt}"
    labkit("trace", kube_lab.name, "ext", "cp:30080", "--format", fmt, "-o", str(out))
    text = out.read_text()
    if fmt == "json":
        assert json.loads(text)["probe"][0]["name"] == "ext"
    elif fmt == "mermaid":
        assert text.lstrip().startswith("---") and "flowchart LR" in text and "probe1" in text
    else:
        assert 'id="trace"' in text and 'class="node kind-linux onpath"' in text and "NodePort matched" in text


def test_bad_trace_input_is_one_clear_error(kube_lab: RunningLab) -> None:
    proc = labkit("trace", kube_lab.name, "default/nope", "web", check=False)
    assert proc.returncode != 0 and proc.stderr.startswith("error: ") and "no node or pod 'default/nope'" in proc.stderr
    proc = labkit("trace", kube_lab.name, "ext", "cp", check=False)
    assert proc.returncode != 0 and "give a port" in proc.stderr and "Traceback" not in proc.stderr


def _tables(netns_path: str) -> str:
    return subprocess.run(["nsenter", f"--net={netns_path}", "nft", "list", "tables"], capture_output=True,
                          text=True, check=True).stdout


def test_a_trace_killed_half_way_leaves_no_process_and_the_next_trace_no_table(kube_lab: RunningLab) -> None:
    """The monitors and the agent die with the trace (PR_SET_PDEATHSIG); the table a killed trace
    left is replaced by the next trace's and removed with it."""
    w2 = kube_lab.nodes()["w2"]["netns_path"]
    paths = [n["netns_path"] for n in kube_lab.summary["nodes"]] + [p["netns_path"] for p in kube_lab.pods().values()]
    before = set(netns.pids_in_namespaces(paths))  # the lab's own: servers, pods' processes
    # w2 drops this (externalTrafficPolicy: Local, no local endpoint): the trace waits for its timeout
    proc = subprocess.Popen([sys.executable, "-m", "labkit.cli", "trace", kube_lab.name, "ext", "w2:30090",
                             "--timeout", "30"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while "labkit-trace" not in _tables(w2):  # the trace tables are going in (each call a few ms)
            assert proc.poll() is None and time.monotonic() < deadline, "the trace never put its table in w2"
    finally:
        proc.kill()
        proc.wait()
    while True:  # SIGKILL reaches the children as their parent goes
        left = sorted(set(netns.pids_in_namespaces(paths)) - before)
        if not left:
            break
        assert time.monotonic() < deadline, f"processes of the killed trace still run: {left}"
    assert "labkit-trace" in _tables(w2)  # a killed trace cannot clean up ...
    report = trace(kube_lab.name, "ext", "cp", protocol="icmp")  # ... the next trace does
    assert report["result"]["open"]
    for where in paths:
        assert "labkit-trace" not in _tables(where), where
    w2_report = trace(kube_lab.name, "ext", "w2:30090")
    assert w2_report["dropped"]["where"] == "w2" and "externalTrafficPolicy: Local" in w2_report["dropped"]["by"]
