"""The API server's rules as labkit applies them: names per field, tolerations, node labels and
taints, nodeSelector scheduling, Job pod counts, hostNetwork and run-once pods. Pure; no root."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from labkit.errors import InputError
from labkit.k8s import names, parse_manifests, schedule_pods
from labkit.k8s.fields import unused_fields
from labkit.k8s.models import Pod, Toleration
from labkit.k8s.nodes import cluster_nodes, tolerates
from labkit.runtime import podproc

CORPUS = Path(__file__).resolve().parents[1] / "manifests" / "kubectl"


def test_service_port_names_are_dns_labels_and_container_port_names_iana_names():
    assert names.service_port_name("8001-8000") is None  # what `kubectl create service --tcp 8001:8000` writes
    assert names.iana_svc_name("8001-8000") is not None  # a container port needs a letter
    assert names.service_port_name("a--b") is None and names.iana_svc_name("a--b") is not None
    assert names.service_port_name("x" * 63) is None and names.iana_svc_name("x" * 16) is not None


@pytest.mark.parametrize(("key", "valid"), [
    ("app", True), ("app.kubernetes.io/name", True), ("example.com/A_b.c", True),
    ("/app", False), ("a/b/c", False), ("Example.com/app", False), ("app/", False), ("-app", False),
    ("x" * 63, True), ("x" * 64, False),
])
def test_label_keys_are_qualified_names(key, valid):
    assert (names.label_key(key) is None) == valid


def test_object_name_rules_per_kind():
    assert names.job_name("j" * 63) is None and "63" in names.job_name("j" * 64)
    assert names.path_segment_name("system:controller:pod-reader") is None  # RBAC names may hold ':'
    assert names.path_segment_name("..") and names.path_segment_name("a/b") and names.path_segment_name("a%b")


@pytest.mark.parametrize(("toleration", "taint", "tolerated"), [
    ({"key": "k", "operator": "Exists"}, ("k", "", "NoSchedule"), True),
    ({"key": "k", "operator": "Exists", "effect": "NoExecute"}, ("k", "", "NoSchedule"), False),
    ({"operator": "Exists"}, ("anything", "v", "NoSchedule"), True),
    ({"key": "k", "value": "v"}, ("k", "v", "NoSchedule"), True),
    ({"key": "k", "value": "v"}, ("k", "w", "NoSchedule"), False),
])
def test_tolerations_match_taints_as_the_scheduler_does(toleration, taint, tolerated):
    assert Toleration.model_validate(toleration).tolerates(*taint) == tolerated


def test_the_first_node_is_the_control_plane_and_tainted_only_beside_others():
    (alone,) = cluster_nodes(["cp"])
    assert alone.control_plane and alone.taints == ()
    cp, w1 = cluster_nodes(["cp", "w1"])
    assert cp.control_plane and [str(t) for t in cp.taints] == ["node-role.kubernetes.io/control-plane:NoSchedule"]
    assert not w1.control_plane and w1.labels["kubernetes.io/hostname"] == "w1"
    pod = _pod("spec: {containers: [{name: c, command: [sleep, infinity]}]}")
    assert not tolerates(pod.spec, cp) and tolerates(pod.spec, w1)


def _pod(spec: str, name: str = "p") -> Pod:
    (pod,) = parse_manifests(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\n{spec}\n", "p.yaml").pods
    return pod


def test_node_selector_places_pods_and_explains_a_selector_no_node_matches():
    text = ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  nodeSelector: {kubernetes.io/hostname: w2}\n"
            "  containers: [{name: c, command: [sleep, infinity]}]\n")
    assert schedule_pods(parse_manifests(text), ["cp", "w1", "w2"]) == {"default/p": "w2"}
    with pytest.raises(InputError) as exc:
        schedule_pods(parse_manifests(text.replace("w2}", "w9}"), "p.yaml"), ["cp", "w1"])
    assert str(exc.value).startswith("p.yaml:5: spec.nodeSelector: no k8s-node has these labels; valid: labels "
                                     "of the nodes: cp (kubernetes.io/hostname=cp,")
    with pytest.raises(InputError, match=r"p.yaml:6: spec.nodeSelector: node 'w1' \(spec.nodeName\) does not"):
        schedule_pods(parse_manifests(text.replace("spec:\n", "spec:\n  nodeName: w1\n"), "p.yaml"), ["cp", "w1"])


@pytest.mark.parametrize(("fields", "count"), [("", 1), ("parallelism: 3", 3), ("parallelism: 3\n  completions: 2", 2),
                                                ("suspend: true", 0)])
def test_job_pod_count(fields, count):
    text = ("apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n  " + fields + "\n  template:\n    spec:\n"
            "      restartPolicy: OnFailure\n      containers: [{name: c, command: ['true']}]\n")
    assert len(parse_manifests(text).pods) == count


def test_unused_fields_skip_empty_values_and_what_the_api_server_writes():
    data = {"apiVersion": "v1", "kind": "Pod", "status": {"phase": "Running"},
            "metadata": {"name": "p", "creationTimestamp": None, "uid": "x", "annotations": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "resources": {}, "livenessProbe": {"exec": {}}}],
                     "resources": {"limits": {"cpu": "1"}}, "hostPID": False}}
    found = [u.pattern for u in unused_fields(Pod, data, "Pod")]
    assert found == ["spec.containers[].livenessProbe", "spec.resources"]


def test_host_network_and_job_pods_as_the_runtime_gets_them():
    from labkit.phases.pods import pod_spec
    from labkit.topology import load_plan

    plan = load_plan(str(CORPUS / "lab.yaml"))
    exporter = next(p for p in plan.workloads.pods if p.name == "exporter")
    spec = pod_spec(plan, exporter, "w1", ips=["172.31.0.3"])
    assert spec.host_netns == plan.node("w1").netns and spec.hostname == "w1"
    assert spec.hosts == "" and spec.resolv_conf == "" and not spec.run_once  # the node's own files
    with_dns = exporter.model_copy(update={"spec": exporter.spec.model_copy(
        update={"dnsPolicy": "ClusterFirstWithHostNet"})})
    assert "nameserver" in pod_spec(plan, with_dns, "w1", ips=["172.31.0.3"]).resolv_conf
    job_pod = next(p for p in plan.workloads.pods if p.name.startswith("once-"))
    assert pod_spec(plan, job_pod, "w1", ips=["10.244.1.5"]).run_once


def test_a_run_once_container_leaves_its_exit_code(tmp_path):
    for name, argv in (("ok", ["true"]), ("bad", ["sh", "-c", "exit 3"])):
        (tmp_path / f"{name}.log").write_text("")
        subprocess.run(podproc.recording_exit(argv, str(tmp_path / f"{name}.exit")), check=False)
    (tmp_path / "running.log").write_text("")
    assert podproc.exit_codes(str(tmp_path)) == [3, 0, None]  # bad, ok, running (by name)


def test_status_table_shows_the_phase_of_pods_that_ran_once():
    import io

    from rich.console import Console

    from labkit.report import print_status

    pods = [{"namespace": "default", "name": "once-x2b4d", "node": "w1", "ip": "10.244.1.5", "phase": "Succeeded"},
            {"namespace": "default", "name": "web", "node": "w2", "ip": "10.244.2.5", "phase": "Running"}]
    out = io.StringIO()
    print_status([{"name": "lab", "runtime": "netns", "phase": "up", "nodes": [], "pods": pods, "services": []}],
                 Console(file=out, width=120, force_terminal=False))
    assert "phase" in out.getvalue() and "Succeeded" in out.getvalue()


def test_environment_variable_names_are_printable_ascii_without_equals():
    assert names.env_var_name("1st.var name") is None  # the API server's relaxed rule (GA in 1.34)
    assert names.env_var_name("A=B") and names.env_var_name("") and names.env_var_name("caf\u00e9")
