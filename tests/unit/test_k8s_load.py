"""Manifest parsing: good manifests become typed models; bad ones get one exact message each."""

from __future__ import annotations

import re
from pathlib import Path

import pydantic
import pytest

from labkit.errors import InputError
from labkit.k8s import load_workloads, parse_manifests, template_hash
from labkit.yamldoc import parse_documents

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"
BAD = sorted((MANIFESTS / "bad").glob("*.yaml"))


@pytest.fixture(scope="module")
def shop():
    return load_workloads(["web.yaml"], MANIFESTS)


def test_every_kind_is_read(shop):
    assert [s.name for s in shop.services] == ["web", "db", "upstream"]
    assert [d.name for d in shop.deployments] == ["web"]
    assert [s.name for s in shop.stateful_sets] == ["db"]
    assert [p.name for p in shop.network_policies] == ["db-from-web"]
    assert [ns.name for ns in shop.namespaces] == ["default", "kube-system", "shop"]


def test_namespaces_carry_their_name_label(shop):
    shop_ns = shop.namespace("shop")
    assert shop_ns.labels == {"team": "web", "kubernetes.io/metadata.name": "shop"}
    assert shop.namespace("default").labels == {"kubernetes.io/metadata.name": "default"}


def test_deployment_pods_are_named_like_a_replicaset(shop):
    web = [p for p in shop.pods if p.name.startswith("web-")]
    assert len(web) == 3
    pod_hash = template_hash(shop.deployments[0].spec.template)
    assert re.fullmatch(r"[bcdfghjklmnpqrstvwxz2456789]{10}", pod_hash)
    for pod in web:
        assert re.fullmatch(rf"web-{pod_hash}-[bcdfghjklmnpqrstvwxz2456789]{{5}}", pod.name)
        assert pod.labels == {"app": "web", "tier": "front", "pod-template-hash": pod_hash}
        assert pod.namespace == "shop"
        assert shop.owners[pod.key] == "Deployment/web"
    assert len({p.name for p in web}) == 3


def test_pod_names_are_reproducible_and_follow_the_template(shop):
    again = load_workloads(["web.yaml"], MANIFESTS)
    assert [p.name for p in again.pods] == [p.name for p in shop.pods]
    text = (MANIFESTS / "web.yaml").read_text().replace("nginx:1.27", "nginx:1.28")
    changed = parse_manifests(text, "web.yaml")
    old = {p.name for p in shop.pods if p.name.startswith("web-")}
    new = {p.name for p in changed.pods if p.name.startswith("web-")}
    assert old.isdisjoint(new)


def test_stateful_set_pods(shop):
    db = [p for p in shop.pods if p.name.startswith("db-")]
    assert [p.name for p in db] == ["db-0", "db-1"]
    assert [(p.spec.hostname, p.spec.subdomain) for p in db] == [("db-0", "db"), ("db-1", "db")]
    assert db[1].labels["statefulset.kubernetes.io/pod-name"] == "db-1"


def test_container_fields_and_ignored_ones(shop):
    pod = next(p for p in shop.pods if p.name.startswith("web-"))
    (container,) = pod.spec.containers
    assert container.command == ("python3", "-m", "http.server")
    assert container.args == ("8080",)
    assert [(e.name, e.value) for e in container.env] == [("MODE", "demo")]
    assert [(p.name, p.containerPort, p.protocol) for p in container.ports] == [("http", 8080, "TCP")]
    assert pod.spec.named_port("http", "TCP") == 8080
    assert pod.spec.named_port("http", "UDP") is None
    assert not hasattr(container, "resources")


def test_service_fields(shop):
    web, db, upstream = shop.services
    assert web.spec.type == "NodePort"
    assert web.spec.sessionAffinity == "ClientIP"
    assert web.spec.sessionAffinityConfig.clientIP.timeoutSeconds == 600
    http, metrics = web.spec.ports
    assert (http.target, http.nodePort, http.protocol) == ("http", 30080, "TCP")
    assert (metrics.target, metrics.protocol) == (9100, "UDP")  # targetPort defaults to port
    assert db.spec.headless and db.spec.clusterIP == "None"
    assert upstream.spec.type == "ExternalName" and upstream.spec.externalName == "example.com"


def test_network_policy(shop):
    (policy,) = shop.network_policies
    assert policy.spec.policyTypes == ("Ingress",)
    peers = policy.spec.ingress[0].from_
    assert peers[0].podSelector.matchLabels == {"app": "web"}
    assert peers[1].namespaceSelector.matches({"team": "ops"})
    assert not peers[1].namespaceSelector.matches({"team": "db"})
    assert peers[2].ipBlock.except_ == ("172.16.1.0/24",)
    assert [(p.port, p.endPort) for p in policy.spec.ingress[0].ports] == [(5432, None), (30000, 32767)]


def test_policy_types_default_to_egress_when_egress_rules_exist():
    w = parse_manifests(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: out}\n"
        "spec:\n  podSelector: {}\n  egress:\n    - to: [{namespaceSelector: {}}]\n"
    )
    spec = w.network_policies[0].spec
    assert spec.policyTypes == ("Ingress", "Egress")
    assert spec.podSelector.matches({"anything": "x"})
    assert spec.egress[0].to[0].namespaceSelector.matches({})


def test_models_are_frozen(shop):
    with pytest.raises(pydantic.ValidationError):
        shop.services[0].spec.type = "ClusterIP"


def test_kind_list_and_inline_sources():
    topo = parse_documents(
        "workloads:\n"
        "  - apiVersion: v1\n"
        "    kind: Pod\n"
        "    metadata: {name: a}\n"
        "    spec:\n"
        "      containers: [{name: c, command: [sleep, '1']}]\n"
        "  - apiVersion: v1\n"
        "    kind: List\n"
        "    items:\n"
        "      - {apiVersion: v1, kind: Pod, metadata: {name: b}, spec: {containers: [{name: c}]}}\n",
        "lab.yaml",
    )[0].data
    w = load_workloads(topo["workloads"], ".", origin="lab.yaml")
    assert [p.key for p in w.pods] == ["default/a", "default/b"]


def test_inline_errors_name_the_topology_file_and_line():
    topo = parse_documents(
        "name: lab\nworkloads:\n  - apiVersion: v1\n    kind: Pod\n    metadata: {name: a}\n"
        "    spec:\n      containers: [{name: c, ports: [{containerPort: 0}]}]\n",
        "lab.yaml",
    )[0].data
    with pytest.raises(InputError) as exc:
        load_workloads(topo["workloads"], ".", origin="lab.yaml")
    assert str(exc.value) == (
        "lab.yaml:7: spec.containers[0].ports[0].containerPort: 0 is out of range; valid: port numbers 1-65535"
    )


def test_every_problem_is_reported_at_once():
    text = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, tty: yes}], hostname: A}\n"
        "---\napiVersion: v1\nkind: Widget\nmetadata: {name: b}\n"
    )
    with pytest.raises(InputError) as exc:
        parse_manifests(text, "m.yaml")
    assert [str(p) for p in exc.value.problems] == [
        "m.yaml:4: spec.hostname: 'A' is not a valid DNS-1123 label; valid: lowercase letters, digits "
        "and '-', starting and ending with a letter or digit",
        "m.yaml:7: kind: 'Widget' is not a kind of v1; valid: Binding, ConfigMap, Endpoints, Event, LimitRange, "
        "Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, PodTemplate, ReplicationController, "
        "ResourceQuota, Secret, Service, ServiceAccount",
    ]


def test_missing_file():
    with pytest.raises(InputError, match=r"nope\.yaml: no such file"):
        load_workloads(["nope.yaml"], MANIFESTS)


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_manifest(path, monkeypatch):
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ")
    monkeypatch.chdir(path.parent)
    with pytest.raises(InputError) as exc:
        load_workloads([path.name], ".")
    assert str(exc.value) == expected
    assert exc.value.exit_code == 2


def test_documentation_examples_load_with_their_extra_fields():
    w = load_workloads(["upstream-examples.yaml"], MANIFESTS)
    assert len(w.pods) == 3 and all(p.labels["app"] == "nginx" for p in w.pods)
    (container,) = w.pods[0].spec.containers
    assert [(e.name, e.value) for e in container.env] == [("POD_IP", "")]  # valueFrom is not modelled
    assert w.services[0].spec.ports[0].target == 9376
    assert w.services[0].spec.selector == {"app.kubernetes.io/name": "MyApp"}
    deny = w.network_policies[1]
    assert deny.spec.policyTypes == ("Ingress", "Egress") and deny.spec.ingress == ()


def test_every_bad_label_of_a_map_is_reported():
    text = (
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels:\n"
        "    good: yes-1\n    -bad: x\n    also/bad/: y\n    ok: '-value'\n"
        "spec:\n  containers: [{name: c, command: [sleep, infinity]}]\n"
    )
    with pytest.raises(InputError) as exc:
        parse_manifests(text, "m.yaml")
    assert [(p.line, p.field) for p in exc.value.problems] == [
        (7, "metadata.labels.-bad"), (8, "metadata.labels.also/bad/"), (9, "metadata.labels.ok"),
    ]
    assert "label value '-value' is not valid" in exc.value.problems[2].message


def test_an_empty_argument_after_the_program_is_fine():
    text = ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
            "spec:\n  containers: [{name: c, command: [echo, ''], args: ['']}]\n")
    (pod,) = parse_manifests(text).pods
    assert pod.spec.containers[0].command == ("echo", "")
