"""Pod placement: nodeName wins, the rest spread evenly and reproducibly."""

from __future__ import annotations

import pytest

from labkit.errors import InputError
from labkit.k8s import parse_manifests, schedule_pods

DEPLOY = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeName: NODE
      containers: [{name: web}]
---
apiVersion: v1
kind: Pod
metadata: {name: pinned}
spec:
  nodeName: w2
  containers: [{name: c}]
"""


def test_spread_evenly_around_pinned_pods():
    w = parse_manifests(DEPLOY.replace("      nodeName: NODE\n", ""))
    placement = schedule_pods(w, ["cp", "w1", "w2"])
    assert placement["default/pinned"] == "w2"
    counts = {n: list(placement.values()).count(n) for n in ("cp", "w1", "w2")}
    assert counts == {"cp": 2, "w1": 2, "w2": 1}
    assert list(placement) == [p.key for p in w.pods]
    assert schedule_pods(w, ["cp", "w1", "w2"]) == placement


def test_unknown_node_name_points_into_the_template():
    w = parse_manifests(DEPLOY.replace("NODE", "w9"), "web.yaml")
    with pytest.raises(InputError) as exc:
        schedule_pods(w, ["cp", "w1", "w2"])
    # Said once, not once per replica, at the template's field and line.
    assert str(exc.value) == (
        "web.yaml:10: spec.template.spec.nodeName: no k8s-node named 'w9'; valid: cp, w1, w2"
    )


def test_no_nodes():
    w = parse_manifests(DEPLOY.replace("      nodeName: NODE\n", ""), "web.yaml")
    with pytest.raises(InputError, match="no k8s-node"):
        schedule_pods(w, [])


def test_a_docker_host_takes_only_the_pods_that_name_it():
    w = parse_manifests(DEPLOY.replace("      nodeName: NODE\n", "").replace("nodeName: w2", "nodeName: dock1"))
    placement = schedule_pods(w, ["cp", "w1"], pinned=["dock1"])
    assert placement["default/pinned"] == "dock1"
    assert sorted(n for k, n in placement.items() if k != "default/pinned") == ["cp", "cp", "w1", "w1"]
    w = parse_manifests(DEPLOY.replace("NODE", "w9"), "web.yaml")
    with pytest.raises(InputError, match="valid: cp, w1, dock1"):
        schedule_pods(w, ["cp", "w1"], pinned=["dock1"])


def test_host_port_is_acted_on_only_on_a_docker_host(tmp_path):
    """portmap publishes it on a docker-host; on a k8s-node it is a field not acted on (a note)."""
    from labkit.topology import load_plan
    from labkit.topology.workloads import not_acted_on, plan_notes

    def notes(node: str) -> list[str]:
        path = tmp_path / f"{node}.yaml"
        path.write_text(f"""name: hp
cluster: {{}}
topology:
  nodes:
    cp: {{kind: k8s-node}}
    d1: {{kind: docker-host}}
workloads:
  - {{apiVersion: v1, kind: Pod, metadata: {{name: web}},
     spec: {{nodeName: {node}, containers: [{{name: web, ports: [{{containerPort: 80, hostPort: 8080}}]}}]}}}}
""")
        plan = load_plan(path)
        return [n for n in plan_notes(plan) if "hostPort" in n] + not_acted_on(plan)["fields"]

    assert notes("d1") == []
    assert len(notes("cp")) == 2
