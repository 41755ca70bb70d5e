"""The kubectl-style corpus (tests/manifests/kubectl/lab.yaml) brought up under each runtime:
DaemonSet pods where the control plane's taint and nodeSelector put them, a hostNetwork pod with
its node's address (an endpoint at it, exec in it), a Job's pod run to completion and then no
endpoint, and `apply` following a DaemonSet's changed nodeSelector."""

from __future__ import annotations

import shutil
import time

from labkit import lab
from labkit.progress import Progress
from labkit.pytest_plugin import labkit_fixture

from .conftest import ROOT, RUNTIMES

CORPUS = ROOT / "tests" / "manifests" / "kubectl"
corpus_lab = labkit_fixture(CORPUS / "lab.yaml", runtime=RUNTIMES, scope="module")


def owned(running, owner: str) -> dict[str, dict]:
    summary = lab.status(running.name)[0]
    prefix = owner.split("/")[1] + "-"
    return {p["name"]: p for p in summary["pods"] if p["name"].startswith(prefix)}


def test_daemon_sets_follow_taints_and_node_selectors(corpus_lab):
    assert sorted(p["node"] for p in owned(corpus_lab, "DaemonSet/agent").values()) == ["cp", "w1", "w2"]
    assert sorted(p["node"] for p in owned(corpus_lab, "DaemonSet/workers").values()) == ["w1", "w2"]
    assert [p["node"] for p in owned(corpus_lab, "DaemonSet/only-w2").values()] == ["w2"]


def test_host_network_pod_is_its_node(corpus_lab):
    node_ip = corpus_lab.nodes()["w1"]["mgmt_ipv4"]
    assert corpus_lab.pod_ip("default/exporter") == node_ip
    addresses = corpus_lab.exec("default/exporter", "ip", "-4", "-o", "addr", check=True).stdout
    assert f" {node_ip}/" in addresses, "exec runs in the node's network namespace"
    assert corpus_lab.exec("default/exporter", "hostname", check=True).stdout.strip() == "w1"
    service = corpus_lab.service("default/exporter")
    assert service["ports"][0]["endpoints"] == [f"{node_ip}:9100"]
    reply = corpus_lab.exec("default/client", "socat", "-T2", "-", f"TCP:{service['cluster_ip']}:9100",
                            check=True)
    assert reply.stdout.strip() == "w1", "the Service reaches the pod at its node's address"


def test_kubectl_service_port_name_serves(corpus_lab):
    web = corpus_lab.service("default/web")
    assert web["ports"][0]["name"] == "8001-8000"
    reply = corpus_lab.exec("default/client", "socat", "-T2", "-", f"TCP:{web['cluster_ip']}:8001", check=True)
    assert reply.stdout.strip().startswith("web-")


def test_up_summary_lists_what_is_not_acted_on(corpus_lab):
    noted = corpus_lab.summary["not_acted_on"]
    assert "ConfigMap default/cfg" in noted["objects"] and "Widget default/blue" in noted["objects"]
    assert "Pod spec.resources" in noted["fields"]


def test_job_runs_to_completion_and_is_then_no_endpoint(corpus_lab, tmp_path):
    (job_pod,) = owned(corpus_lab, "Job/once")
    deadline = time.monotonic() + 60  # `true` ends at once; the wait is for a loaded machine
    while (phase := owned(corpus_lab, "Job/once")[job_pod]["phase"]) == "Running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert phase == "Succeeded"
    assert owned(corpus_lab, "Deployment/web")[next(iter(owned(corpus_lab, "Deployment/web")))]["phase"] == "Running"
    lab.apply(str(CORPUS / "lab.yaml"), name=corpus_lab.name, progress=Progress(quiet=True))
    web = next(s for s in lab.status(corpus_lab.name)[0]["services"] if s["name"] == "web")
    job_ip = owned(corpus_lab, "Job/once")[job_pod]["ip"]
    assert not any(e.startswith(f"{job_ip}:") for e in web["ports"][0]["endpoints"])
    assert len(web["ports"][0]["endpoints"]) == 2


def test_apply_moves_daemon_set_pods_with_their_node_selector(corpus_lab, tmp_path):
    copy = tmp_path / "corpus"
    shutil.copytree(CORPUS, copy)
    daemonsets = copy / "daemonset.yaml"
    daemonsets.write_text(daemonsets.read_text().replace("kubernetes.io/hostname: w2", "kubernetes.io/hostname: w1"))
    host_network = copy / "hostnetwork.yaml"  # the exporter pod goes; the node and its other pods stay
    host_network.write_text(host_network.read_text().split("---\n", 1)[1])
    before = set(owned(corpus_lab, "DaemonSet/agent"))
    lab.apply(str(copy / "lab.yaml"), name=corpus_lab.name, progress=Progress(quiet=True))
    assert [p["node"] for p in owned(corpus_lab, "DaemonSet/only-w2").values()] == ["w1"]
    assert set(owned(corpus_lab, "DaemonSet/agent")) == before, "an unchanged DaemonSet's pods stay"
    assert "default/exporter" not in {f"{p['namespace']}/{p['name']}" for p in lab.status(corpus_lab.name)[0]["pods"]}
    gone = corpus_lab.exec("w1", "socat", "-T2", "-", "TCP:127.0.0.1:9100,connect-timeout=2")
    assert gone.returncode != 0, "the removed hostNetwork pod's server is stopped"
    kept = corpus_lab.exec("w1", "socat", "-T2", "-", "TCP:127.0.0.1:9101,connect-timeout=2", check=True)
    assert kept.stdout.strip() == "w1", "the node's other hostNetwork pod keeps running"
