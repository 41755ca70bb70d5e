"""NetworkAttachmentDefinitions and the networks annotation, as the plan reads and checks them."""

from __future__ import annotations

import json
import textwrap

import pytest

from labkit.errors import InputError
from labkit.k8s import parse_manifests
from labkit.k8s.multus import NetworkSelection, parse_config, parse_networks, pod_attachments
from labkit.topology import load_plan

MACVLAN = {"cniVersion": "0.3.1", "type": "macvlan", "master": "net1", "mode": "bridge",
           "capabilities": {"ips": True}, "ipam": {"type": "static"}}


def nad(name: str, config: dict | str, namespace: str = "default") -> str:
    text = config if isinstance(config, str) else json.dumps(config)
    return (f"apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\n"
            f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  config: '{text}'\n")


def pod(name: str, networks: str, node: str = "w1") -> str:
    return (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations:\n"
            f"    k8s.v1.cni.cncf.io/networks: {json.dumps(networks)}\n"
            f"spec: {{nodeName: {node}, containers: [{{name: c, command: [sleep, infinity]}}]}}\n")


# ---------------------------------------------------------------- the annotation


def test_names_form() -> None:
    assert parse_networks("net-a, other/net-b ,net-c@data0", "default") == (
        NetworkSelection("net-a", "default"), NetworkSelection("net-b", "other"),
        NetworkSelection("net-c", "default", "data0"))


def test_json_form() -> None:
    text = '[{"name": "s", "namespace": "x", "interface": "san0", "ips": ["10.0.0.5/24"], "mac": "02:00:00:00:00:01"}]'
    assert parse_networks(text, "default") == (
        NetworkSelection("s", "x", "san0", ("10.0.0.5/24",), "02:00:00:00:00:01"),)


@pytest.mark.parametrize(("text", "message"), [
    ("a,,b", "has an empty entry"),
    ("a/b/c", "write NAME, NAMESPACE/NAME or NAME@INTERFACE"),
    ("Net_A", "'Net_A'"),
    ("a@this-name-is-too-long", "is not an interface name"),
    ("[{\"name\": \"a\", \"ips\": [\"10.0.0.5\"]}]", "needs its prefix length"),
    ("[{\"name\": \"a\", \"default-route\": [\"10.0.0.1\"]}]", "'default-route' not supported by labkit"),
    ("[{\"name\": \"a\", \"mac\": \"zz\"}]", "is not a MAC address"),
    ("[{\"namespace\": \"a\"}]", "[0].name: expected a name"),
    ("[{\"name\": ", "is not valid JSON"),
    ("[]", "non-empty list"),
])
def test_bad_annotation(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=None) as exc:
        parse_networks(text, "default")
    assert message in str(exc.value)


# ---------------------------------------------------------------- the definition's config


def test_conf_and_conflist_forms_become_a_list() -> None:
    assert parse_config(json.dumps(MACVLAN)) == {
        "cniVersion": "0.3.1", "plugins": [{k: v for k, v in MACVLAN.items() if k != "cniVersion"}]}
    listed = {"cniVersion": "1.0.0", "name": "data", "plugins": [
        {"type": "bridge", "bridge": "br-data", "ipam": {"type": "host-local", "subnet": "10.20.0.0/24"}},
        {"type": "tuning", "capabilities": {"mac": True}}]}
    assert parse_config(json.dumps(listed)) == listed


@pytest.mark.parametrize(("config", "message"), [
    ({**MACVLAN, "type": "ipvlan"}, "ipvlan links are not available on this kernel"),
    ({**MACVLAN, "type": "vlan"}, "802.1Q VLAN sub-interfaces are not available"),
    ({**MACVLAN, "ipam": {"type": "dhcp"}}, "needs the CNI dhcp daemon"),
    ({**MACVLAN, "cniVersion": "1.1.0"}, "cniVersion: '1.1.0' is not spoken"),
    ({k: v for k, v in MACVLAN.items() if k != "cniVersion"}, "cniVersion: required"),
    ({"cniVersion": "0.3.1"}, "needs 'type'"),
    ({"cniVersion": "0.3.1", "type": "bridge"}, "bridge: name the node's bridge"),
    ({"cniVersion": "0.3.1", "plugins": [MACVLAN, {"type": "portmap"}]}, "plugins[1].type: 'portmap' is not valid"),
    ({"cniVersion": "0.3.1", "type": "tuning"}, "the first plugin makes the pod's interface"),
    ("{\"cniVersion\": ", "is not valid JSON"),
    ("[1]", "must be a JSON object"),
    ("", "is empty"),
    ("[" * 5000, "is not valid JSON"),
])
def test_bad_config_names_the_manifest_line(config: dict | str, message: str) -> None:
    text = config if isinstance(config, str) else json.dumps(config)
    doc = ("apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata: {name: storage}\n"
           f"spec:\n  config: {json.dumps(text)}\n")
    with pytest.raises(InputError) as exc:
        parse_manifests(doc, "nad.yaml")
    assert str(exc.value).startswith("nad.yaml:5: spec.config: ")
    assert message in str(exc.value)


def test_a_too_big_config_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 65536"):
        parse_config(json.dumps({**MACVLAN, "pad": "x" * 70000}))


def test_attachments_are_numbered_as_multus_numbers_them() -> None:
    workloads = parse_manifests("---\n".join([
        nad("storage", MACVLAN), nad("data", {"cniVersion": "0.3.1", "type": "bridge", "bridge": "br-data"}),
        nad("far", MACVLAN, namespace="other"),
        pod("p", '[{"name": "storage", "ips": ["10.10.0.5/24"]}, {"name": "data", "interface": "d0"},'
                 ' {"name": "far", "namespace": "other"}]')]))
    got = [(a.key, a.ifname, a.ips) for a in pod_attachments(workloads.pods[0], workloads.network_attachments)]
    assert got == [("default/storage", "net1", ("10.10.0.5/24",)), ("default/data", "d0", ()),
                   ("other/far", "net3", ())]
    assert workloads.network_attachments[0].conflist["name"] == "storage"  # the definition's name


def test_a_deployments_pods_carry_the_templates_annotation() -> None:
    text = nad("storage", MACVLAN) + "---\n" + textwrap.dedent("""\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec:
          replicas: 2
          selector: {matchLabels: {app: web}}
          template:
            metadata:
              labels: {app: web}
              annotations: {k8s.v1.cni.cncf.io/networks: storage}
            spec: {containers: [{name: c, command: [sleep, infinity]}]}
        """)
    workloads = parse_manifests(text)
    assert [len(pod_attachments(p, workloads.network_attachments)) for p in workloads.pods] == [1, 1]


# ---------------------------------------------------------------- against the topology


def lab(tmp_path, manifests: list[str], links: str = "") -> str:
    (tmp_path / "w.yaml").write_text("---\n".join(manifests))
    (tmp_path / "t.yaml").write_text(textwrap.dedent(f"""\
        name: mt
        cluster: {{pod-cidr: 10.244.0.0/16}}
        topology:
          nodes:
            w1: {{kind: k8s-node}}
            w2: {{kind: k8s-node}}
            sw: {{kind: bridge}}
          links:
            - endpoints: ["w1:net1", "sw:p1"]
        {links}
        workloads: [w.yaml]
        """))
    return str(tmp_path / "t.yaml")


def test_a_good_lab_validates(tmp_path) -> None:
    asks = pod("p", '[{"name": "storage", "ips": ["10.1.0.2/24"]}]')
    plan = load_plan(lab(tmp_path, [nad("storage", MACVLAN), asks]))
    assert plan.workloads is not None and len(plan.workloads.network_attachments) == 1


@pytest.mark.parametrize(("networks", "node", "message"), [
    ("nope", "w1", "network 'default/nope': no NetworkAttachmentDefinition of that name; "
                   "defined in default: default/storage"),
    ("storage", "w2", "its macvlan master 'net1' is not an interface of node 'w2', where the pod runs"),
    ("storage@eth0", "w1", "interface eth0 is already the pod's"),
    ("storage, storage@net1", "w1", "interface net1 is already the pod's"),
    ('[{"name": "storage", "mac": "02:00:00:00:00:09"}]', "w1",
     "asks for 'mac', but no plugin of its config declares \"capabilities\": {\"mac\": true}"),
])
def test_bad_networks_annotation_names_file_line_and_field(tmp_path, networks: str, node: str, message: str) -> None:
    with pytest.raises(InputError) as exc:
        load_plan(lab(tmp_path, [nad("storage", MACVLAN), pod("p", networks, node)]))
    text = str(exc.value)
    assert "w.yaml:12: metadata.annotations.k8s.v1.cni.cncf.io/networks: " in text, text
    assert message in text, text


def test_a_host_network_pod_gets_no_attachments(tmp_path) -> None:
    text = pod("p", "storage").replace("nodeName: w1,", "nodeName: w1, hostNetwork: true,")
    with pytest.raises(InputError, match="a hostNetwork pod lives in its node's network namespace"):
        load_plan(lab(tmp_path, [nad("storage", MACVLAN), text]))


def test_ips_need_a_plugin_that_takes_them(tmp_path) -> None:
    config = {**MACVLAN, "capabilities": {}, "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}}
    with pytest.raises(InputError, match="asks for 'ips', but no plugin"):
        load_plan(lab(tmp_path, [nad("storage", config), pod("p", '[{"name": "storage", "ips": ["10.1.0.2/24"]}]')]))
