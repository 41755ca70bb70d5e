"""`labkit apply`: a running lab follows its file's workloads — pods, services, DNS and policies."""

from __future__ import annotations

import glob
import os
import re
import select

import pytest

from labkit import lab, state
from labkit.errors import LabkitError
from labkit.progress import Progress

from .conftest import RUNTIMES

TOPOLOGY = """name: apply
cluster: {{}}
topology:
  nodes:
    n1: {{kind: k8s-node}}
    n2: {{kind: k8s-node}}
workloads:
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {{name: web, namespace: default}}
    spec:
      replicas: {replicas}
      selector: {{matchLabels: {{app: web}}}}
      template:
        metadata: {{labels: {{app: web}}}}
        spec:
          containers:
            - {{name: web, image: labkit/node, ports: [{{containerPort: 80}}],
               command: [socat, "TCP-LISTEN:80,reuseaddr,fork", "SYSTEM:hostname"]}}
  - {{apiVersion: v1, kind: Service, metadata: {{name: web, namespace: default}},
     spec: {{selector: {{app: web}}, ports: [{{port: 80}}]}}}}
  - {{apiVersion: v1, kind: Pod, metadata: {{name: client, namespace: default, labels: {{app: client}}}},
     spec: {{containers: [{{name: c, image: labkit/node, command: [sleep, infinity]}}]}}}}
{extra}"""

DENY_WEB = """  - {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy,
     metadata: {name: deny-web, namespace: default},
     spec: {podSelector: {matchLabels: {app: web}}, policyTypes: [Ingress]}}
"""


def write(path, replicas: int, extra: str = "") -> str:
    path.write_text(TOPOLOGY.format(replicas=replicas, extra=extra))
    return str(path)


def answers(running, n: int = 12) -> set[str]:
    out = set()
    for _ in range(n):
        result = running.exec("default/client", "socat", "-T2", "-", "TCP:web:80,connect-timeout=2")
        out.add(result.stdout.strip() if result.returncode == 0 else "closed")
    return out


def web_pods(name: str) -> set[str]:
    return {p["name"] for p in lab.status(name)[0]["pods"] if p["name"].startswith("web-")}


def leases(name: str) -> int:
    """IPAM lease files (one per address, named by it) of every node."""
    return len([f for f in glob.glob(os.path.join(state.lab_dir(name), "ipam", "*", "*"))
                if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", os.path.basename(f))])


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_apply_follows_replicas_services_dns_and_policies(tmp_path, runtime: str, labkit_lab_factory) -> None:
    topology = write(tmp_path / "apply.yaml", 3)
    running = labkit_lab_factory(topology, runtime=runtime)
    three = web_pods(running.name)
    assert len(three) == 3 and answers(running) <= three
    before = leases(running.name)

    lab.apply(write(tmp_path / "apply.yaml", 1), name=running.name, progress=Progress(quiet=True))
    (one,) = web_pods(running.name)
    assert one in three, "a pod that stays is not restarted"
    assert answers(running) == {one}, "the service and DNS follow the remaining endpoint"
    assert leases(running.name) == before - 2, "removed pods' addresses are released"
    assert not any(p in str(lab.leftovers(running.name)) for p in three - {one}), "removed pods left things"

    lab.apply(write(tmp_path / "apply.yaml", 1, DENY_WEB), name=running.name, progress=Progress(quiet=True))
    assert answers(running, 2) == {"closed"}, "a new policy applies"
    lab.apply(write(tmp_path / "apply.yaml", 4), name=running.name, progress=Progress(quiet=True))
    four = web_pods(running.name)
    assert len(four) == 4 and one in four
    assert answers(running, 40) == four, "the policy is gone and every new endpoint serves"


def test_apply_refuses_a_changed_topology_and_a_lab_that_is_not_up(tmp_path, labkit_lab_factory) -> None:
    topology = write(tmp_path / "apply.yaml", 1)
    running = labkit_lab_factory(topology)
    changed = tmp_path / "changed.yaml"
    changed.write_text(open(topology).read().replace("    n2: {kind: k8s-node}\n",
                                                     "    n2: {kind: k8s-node}\n    n3: {kind: k8s-node}\n"))
    with pytest.raises(LabkitError, match="nodes or links .* changed .* up --reconfigure"):
        lab.apply(str(changed), name=running.name, progress=Progress(quiet=True))
    assert len(web_pods(running.name)) == 1
    lab.down(running.name)
    with pytest.raises(LabkitError, match="is not up"):
        lab.apply(topology, name=running.name, progress=Progress(quiet=True))


def test_apply_replaces_a_cni_server_that_died(tmp_path, labkit_lab_factory) -> None:
    import signal

    from labkit import paths
    from labkit.cni.server import is_serving

    topology = write(tmp_path / "apply.yaml", 1)
    running = labkit_lab_factory(topology)
    pid_file, cni_socket = paths.lab(running.name).cni_server_pid, paths.lab(running.name).cni_socket
    old = int(open(pid_file).read().split()[0])
    exited = os.pidfd_open(old)  # readable once the process has exited (a zombie's socket is closed too)
    try:
        os.kill(old, signal.SIGKILL)
        assert select.select([exited], [], [], 10)[0], "the CNI server outlived SIGKILL"
    finally:
        os.close(exited)
    assert not is_serving(cni_socket)
    lab.apply(topology, name=running.name, progress=Progress(quiet=True))
    new = int(open(pid_file).read().split()[0])
    assert new != old and is_serving(cni_socket)
    lab.apply(topology, name=running.name, progress=Progress(quiet=True))  # a live one is kept
    assert int(open(pid_file).read().split()[0]) == new
