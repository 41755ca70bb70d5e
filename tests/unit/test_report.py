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


def test_the_ingress_controller_is_one_line_with_what_it_leaves_alone():
    out = io.StringIO()
    edge = {"service": "labkit-ingress/haproxy", "config": "/run/labkit/edge/ingress/haproxy.cfg",
            "frontends": [{"port": 80, "protocol": "HTTP", "routes": 3}],
            "skipped": {"default/x": "no IngressClass 'nginx'"}}
    print_status([{**LAB, "ingress": edge}], Console(file=out, width=200, force_terminal=False))
    text = out.getvalue()
    assert "ingress: HAProxy behind labkit-ingress/haproxy on 80/HTTP (3 routes); config " \
           "/run/labkit/edge/ingress/haproxy.cfg" in text
    assert "not served: default/x: no IngressClass 'nginx'" in text


DUAL = {
    **LAB,
    "nodes": [{"name": "w1", "kind": "k8s-node", "mgmt_ipv4": "172.31.0.3", "mgmt_ipv6": "fd00:172:31::3",
               "pod_cidr": "10.244.1.0/24", "pod_cidrs": ["10.244.1.0/24", "fd00:10:244:1::/64"],
               "interfaces": [{"name": "eth0", "ipv4": ["172.31.0.3/24"], "ipv6": ["fd00:172:31::3/64"]}]}],
    "pods": [{"namespace": "default", "name": "web", "node": "w1", "ip": "10.244.1.5",
              "ips": ["10.244.1.5", "fd00:10:244:1::5"]}],
    "services": [{"namespace": "default", "name": "web", "type": "ClusterIP", "cluster_ip": "10.96.0.20",
                  "cluster_ips": ["10.96.0.20", "fd00:10:96::14"], "ports": [{"port": 80, "protocol": "TCP"}],
                  "endpoints": [{"ip": "10.244.1.5"}, {"ip": "fd00:10:244:1::5"}]}],
    "dns": {"ip": "10.96.0.10", "ips": ["10.96.0.10", "fd00:10:96::a"], "domain": "cluster.local"},
}


def test_a_dual_stack_lab_shows_both_families_whole():
    out = io.StringIO()
    print_status([DUAL], Console(file=out, width=100, force_terminal=False))
    text = out.getvalue()
    for address in ("172.31.0.3", "fd00:172:31::3", "10.244.1.0/24", "fd00:10:244:1::/64", "fd00:172:31::3/64",
                    "10.244.1.5", "fd00:10:244:1::5", "10.96.0.20", "fd00:10:96::14"):
        assert address in text, address
    assert "mgmt ip " in text and "mgmt ipv4" not in text
    assert "cluster DNS 10.96.0.10, fd00:10:96::a (zone cluster.local)" in text
    assert "…" not in text


def test_an_ipv4_lab_keeps_its_columns():
    out = io.StringIO()
    print_status([LAB], Console(file=out, width=120, force_terminal=False))
    assert "mgmt ipv4" in out.getvalue()
