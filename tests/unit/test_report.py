"""The status table for people: addresses are never cut short, even in a narrow terminal."""

from __future__ import annotations

import io

from rich.console import Console

from labkit.report import print_status

LAB = {
    "name": "kube3", "runtime": "netns", "phase": "up",
    "nodes": [{"name": "w1", "kind": "k8s-node", "mgmt_ipv4": "172.31.0.3", "pod_cidr": "10.244.1.0/24",
               "interfaces": [{"name": "eth0", "ipv4": ["172.31.0.3/24"]}]}],
    "pods": [{"namespace": "default", "name": "echo-g9qjpcd68s-lwk9j", "node": "w1", "ip": "10.244.1.222"}],
    "services": [{"namespace": "default", "name": "echo-local", "type": "NodePort", "cluster_ip": "10.96.175.227",
                  "external_traffic_policy": "Local",
                  "ports": [{"port": 8080, "protocol": "TCP", "node_port": 30090}],
                  "endpoints": [{"ip": "10.244.1.222"}, {"ip": "10.244.0.123"}]}],
    "dns": {"ip": "10.96.0.10", "domain": "cluster.local"},
    "cni": {"bin_dir": "/run/labkit/kube3/cni/bin", "socket": "/run/labkit/kube3/cni/labkit-cni.sock"},
}


def test_addresses_stay_whole_in_a_narrow_terminal():
    out = io.StringIO()
    print_status([LAB], Console(file=out, width=80, force_terminal=False))
    text = out.getvalue()
    for address in ("172.31.0.3", "10.244.1.0/24", "10.244.1.222", "10.96.175.227", "10.244.0.123"):
        assert address in text, address
    assert "Local)" in text and "default/echo-loc" in text  # folded over two lines, not cut
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    assert "cluster DNS 10.96.0.10 (zone cluster.local)" in text
    assert "/run/labkit/kube3/cni/bin" in text


def test_no_labs():
    out = io.StringIO()
    print_status([], Console(file=out, width=80))
    assert out.getvalue().strip() == "no labs are up"


def test_a_mapped_lab_shows_the_files_name_and_the_name_it_runs_as():
    out = io.StringIO()
    print_status([{**LAB, "name": "my-la-04d875", "title": "My_Lab.2026"}], Console(file=out, width=160))
    assert "lab My_Lab.2026 (runs as my-la-04d875) (netns, up)" in out.getvalue()
