"""Several interfaces per pod (Multus): kube-multus.yaml under both runtimes, its attachments made by the
reference plugins, its network-status, and CNI DEL when `apply` removes a pod and when `down` runs."""

from __future__ import annotations

import json
import os
import shutil

from labkit import lab, paths, state
from labkit.cni import attach
from labkit.progress import Progress
from labkit.pytest_plugin import RunningLab, labkit_fixture, unique_lab_name

from .conftest import RUNTIMES, TOPOLOGIES, labkit

multus = labkit_fixture(TOPOLOGIES / "kube-multus.yaml", runtime=RUNTIMES)


def addresses(running: RunningLab, target: str) -> dict[str, str]:
    """interface -> its IPv4 address with prefix, as `ip` shows it in the pod."""
    out = running.exec(target, "ip", "-o", "-4", "addr", "show", check=True).stdout
    return {line.split()[1]: line.split()[3] for line in out.splitlines()}


def test_the_shipped_expectations_hold(multus: RunningLab) -> None:
    report = lab.verify_topology(str(TOPOLOGIES / "kube-multus.yaml"), name=multus.name)
    assert report.ok, report.text()


def test_no_link_end_has_its_peers_ifindex(multus: RunningLab) -> None:
    """A veth whose ifindex equals its peer's gets its carrier changes late (not urgent to the kernel's
    linkwatch): san's first port forwarded up to a second after `up`, and storage <-> w1's pods missed."""
    for node in multus.summary["nodes"]:
        links = json.loads(multus.exec(node["name"], "ip", "-j", "link", "show", check=True).stdout)
        planned = {i["name"] for i in node["interfaces"]} | ({"eth0"} if node["mgmt_ipv4"] else set())
        same = [link["ifname"] for link in links
                if link["ifname"] in planned and link.get("link_index") == link["ifindex"]]
        assert same == [], f"{node['name']}: {same}"


def test_pods_have_their_extra_interfaces(multus: RunningLab) -> None:
    db = addresses(multus, "default/db")
    assert db["eth0"] == f"{multus.pod_ip('default/db')}/32"
    assert db["net1"] == "10.10.0.11/24"  # the annotation's ips, through static IPAM
    assert db["net2"].startswith("10.20.0.") and db["net2"].endswith("/24")  # host-local on br-scratch
    assert addresses(multus, "default/backup")["san0"] == "10.10.0.12/24"  # the interface asked for
    assert set(addresses(multus, "default/cache")) == {"lo", "eth0", "net1"}  # the names form: net1
    detail = multus.exec("default/db", "ip", "-d", "link", "show", "net1", check=True).stdout
    assert "macvlan mode bridge" in detail, detail
    ports = multus.exec("w1", "ip", "-o", "link", "show", "master", "br-scratch", check=True).stdout
    assert len(ports.splitlines()) == 2, ports  # db's and cache's veths on w1's bridge


def test_network_status_is_multus_format_cluster_network_first(multus: RunningLab) -> None:
    pods = {f"{p['namespace']}/{p['name']}": p for p in lab.status(multus.name)[0]["pods"]}
    status = pods["default/db"]["network_status"]
    assert [(s["name"], s["interface"], s.get("default", False)) for s in status] == [
        ("labkit", "eth0", True), ("default/storage", "net1", False), ("default/scratch", "net2", False)]
    assert status[0]["ips"] == [multus.pod_ip("default/db")]
    assert status[1]["ips"] == ["10.10.0.11"]
    assert all(set(s) >= {"name", "interface", "ips", "mac", "dns"} for s in status)
    link = multus.exec("default/db", "ip", "-o", "link", "show", "net1", check=True).stdout.split()
    assert status[1]["mac"] == link[link.index("link/ether") + 1]
    assert [s["name"] for s in pods["default/backup"]["network_status"]] == ["labkit", "default/storage"]


def test_apply_deletes_a_removed_pods_attachments(labkit_lab_factory, tmp_path) -> None:
    """Without `cache` in the file, apply runs CNI DEL for its attachment: its host-local lease is
    released and its veth leaves w1's bridge; the others keep theirs."""
    shutil.copytree(TOPOLOGIES, tmp_path / "t")
    running = labkit_lab_factory(tmp_path / "t" / "kube-multus.yaml", runtime="netns")
    leases = os.path.join(paths.lab(running.name).multus_ipam_dir("w1"), "scratch")
    cache_ip = addresses(running, "default/cache")["net1"].split("/")[0]
    db_ip = addresses(running, "default/db")["net2"].split("/")[0]
    assert {cache_ip, db_ip} <= set(os.listdir(leases))
    workloads = tmp_path / "t" / "workloads" / "kube-multus.yaml"
    docs = workloads.read_text().split("\n---\n")
    workloads.write_text("\n---\n".join(d for d in docs if "name: cache\n" not in d))
    lab.apply(str(tmp_path / "t" / "kube-multus.yaml"), name=running.name, progress=Progress(quiet=True))
    assert cache_ip not in os.listdir(leases) and db_ip in os.listdir(leases)
    assert not os.path.exists(paths.lab(running.name).multus_record("default", "cache"))
    ports = running.exec("w1", "ip", "-o", "link", "show", "master", "br-scratch", check=True).stdout
    assert len(ports.splitlines()) == 1, ports
    assert "default/cache" not in {f"{p['namespace']}/{p['name']}" for p in state.read(running.name)["summary"]["pods"]}


def test_down_deletes_every_attachment_first(labkit_lab_factory) -> None:
    """What down runs first (attach.release_all): every pod's extra interfaces go and every lease is
    released, from the records, while the namespaces are still there."""
    running = labkit_lab_factory(TOPOLOGIES / "kube-multus.yaml", runtime="netns")
    leases = os.path.join(paths.lab(running.name).multus_ipam_dir("w1"), "scratch")
    assert attach.release_all(running.name) == []
    assert [n for n in os.listdir(leases) if n[0].isdigit()] == []
    assert set(addresses(running, "default/db")) == {"lo", "eth0"}
    assert set(addresses(running, "default/backup")) == {"lo", "eth0"}
    assert os.listdir(paths.lab(running.name).multus_pods_dir) == []


def test_the_records_keep_what_del_needs(multus: RunningLab) -> None:
    with open(paths.lab(multus.name).multus_record("default", "db"), encoding="utf-8") as fh:
        entries = json.load(fh)["attachments"]
    assert [(e["network"], e["ifname"]) for e in entries] == [("default/storage", "net1"), ("default/scratch", "net2")]
    assert entries[0]["capability_args"] == {"ips": ["10.10.0.11/24"]}
    assert "K8S_POD_NAMESPACE=default;K8S_POD_NAME=db" in entries[0]["args"]
    assert entries[1]["conflist"]["plugins"][0]["ipam"]["dataDir"] == paths.lab(multus.name).multus_ipam_dir("w1")
    assert oct(os.stat(paths.lab(multus.name).multus_record("default", "db")).st_mode & 0o777) == "0o600"


def test_an_attachment_the_plugin_refuses_fails_up_clearly_and_leaves_nothing(tmp_path) -> None:
    """A config that validates but the plugin refuses at ADD (an MTU above its master's): up names the
    pod and the network, and undoes everything, the attachments made before it included."""
    shutil.copytree(TOPOLOGIES, tmp_path / "t")
    workloads = tmp_path / "t" / "workloads" / "kube-multus.yaml"
    workloads.write_text(workloads.read_text().replace('"mode": "bridge",', '"mode": "bridge", "mtu": 9000,'))
    name = unique_lab_name("mubad")
    try:
        proc = labkit("up", "-q", "--name", name, str(tmp_path / "t" / "kube-multus.yaml"), check=False)
    finally:
        found = lab.leftovers(name)
        lab.down(name)
    assert found == []
    assert proc.returncode == 1
    assert "pod default/db on w1: CNI ADD failed: CNI error" in proc.stderr, proc.stderr
    assert "network default/storage (net1): macvlan: " in proc.stderr and "mtu" in proc.stderr.lower(), proc.stderr
    assert "Traceback" not in proc.stderr
