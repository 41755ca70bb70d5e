"""labkit.cni.attach without the kernel: network-status from results, configs as they run, DEL's guards."""

from __future__ import annotations

import json
import os

import pytest

from labkit import paths
from labkit.cni import attach
from labkit.k8s import parse_manifests
from labkit.k8s.multus import pod_attachments

MANIFESTS = """\
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: scratch}
spec:
  config: '{"cniVersion": "0.3.1", "type": "bridge", "bridge": "br-s",
            "ipam": {"type": "host-local", "subnet": "10.20.0.0/24", "dataDir": "/var/lib/cni/networks"}}'
---
apiVersion: v1
kind: Pod
metadata:
  name: p
  annotations: {k8s.v1.cni.cncf.io/networks: scratch}
spec: {containers: [{name: c, command: [sleep, infinity]}]}
"""


def test_status_entry_takes_the_sandbox_interface_and_its_addresses() -> None:
    result = {"interfaces": [{"name": "br-s", "mac": "aa:aa:aa:aa:aa:01"},
                             {"name": "veth1", "mac": "aa:aa:aa:aa:aa:02"},
                             {"name": "net1", "mac": "aa:aa:aa:aa:aa:03", "sandbox": "/run/netns/x"}],
              "ips": [{"address": "10.20.0.2/24", "gateway": "10.20.0.1", "interface": 2}],
              "dns": {"nameservers": ["10.20.0.53"]}}
    assert attach.status_entry("default/scratch", "net1", result, "/run/netns/x") == {
        "name": "default/scratch", "interface": "net1", "ips": ["10.20.0.2"], "mac": "aa:aa:aa:aa:aa:03",
        "dns": {"nameservers": ["10.20.0.53"]}}
    assert attach.status_entry("labkit", "net1", result, "/run/netns/x", default=True)["default"] is True


def test_host_local_keeps_its_leases_in_the_labs_folder() -> None:
    workloads = parse_manifests(MANIFESTS)
    (attachment,) = pod_attachments(workloads.pods[0], workloads.network_attachments)
    listconf = attach.conflist_for(attachment, "/run/labkit/x/multus/ipam/w1")
    assert listconf["plugins"][0]["ipam"]["dataDir"] == "/run/labkit/x/multus/ipam/w1"
    assert listconf["name"] == "scratch"
    assert attachment.network.conflist["plugins"][0]["ipam"]["dataDir"] == "/var/lib/cni/networks"  # untouched


def test_cni_args_name_the_pod_as_multus_does() -> None:
    assert attach.cni_args("default", "db", "lab.default.db") == (
        "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=db;K8S_POD_INFRA_CONTAINER_ID=lab.default.db")


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_STATE_DIR", str(tmp_path))
    return tmp_path


def record(lab: str, node_netns_id: list[int]) -> str:
    path = paths.lab(lab).multus_record("default", "p")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    entry = {"network": "default/s", "conflist": {"cniVersion": "0.3.1", "name": "s",
                                                  "plugins": [{"type": "no-such-plugin"}]},
             "ifname": "net1", "container_id": "x.default.p", "args": "", "capability_args": {},
             "netns": "/proc/self/ns/net", "netns_id": node_netns_id, "node_netns": "/proc/self/ns/net",
             "node_netns_id": node_netns_id, "result": None}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"attachments": [entry]}, fh)
    return path


def test_del_never_enters_a_namespace_that_is_not_the_one_it_was_made_in(state_dir) -> None:
    """A node namespace path that now names another namespace (a pid reused after a crash): no plugin
    runs there (a macvlan DEL in the wrong namespace would fail, or worse, find an interface of that name)."""
    path = record("x", [0, 0])
    assert attach.release_all("x") == []  # nothing ran: the plugin would not have been found
    assert not os.path.exists(path)
    st = os.stat("/proc/self/ns/net")
    path = record("x", [st.st_dev, st.st_ino])  # the same namespace: DEL runs, and says what failed
    assert attach.release_all("x") == ["default/p: CNI error 100: failed to find plugin 'no-such-plugin' in path "
                                        "['/opt/cni/bin', '/usr/lib/cni', '/usr/libexec/cni']"]
    assert os.path.exists(path)  # kept: a later down tries again


def test_release_of_a_pod_without_attachments_is_nothing(state_dir) -> None:
    attach.release("x", "default", "p")
    assert attach.release_all("x") == []
