"""Stand-in workloads in real labs: the Kubernetes documentation's example kinds, as written, come up under
both runtimes (topologies/kube-docs.yaml: `cluster.stand-ins: true`, so docker stands in for images its
engine lacks), every Service answers through its ClusterIP with the stand-in's /hostname, and `verify` holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit import lab, paths, processes
from labkit.errors import LabkitError
from labkit.pytest_plugin import RunningLab, labkit_fixture
from labkit.report import print_status

from .conftest import RUNTIMES, TOPOLOGIES, labkit

DOCS = TOPOLOGIES / "kube-docs.yaml"
docs_lab = labkit_fixture(DOCS, runtime=RUNTIMES, scope="module")

ONE_NGINX = """\
name: {name}
cluster: {cluster}
topology:
  nodes:
    cp: {{kind: k8s-node}}
workloads:
  - apiVersion: v1
    kind: Pod
    metadata: {{name: web}}
    spec:
      containers:
        - {{name: nginx, image: "nginx:1.14.2", ports: [{{containerPort: 80}}]}}
        - {{name: idle, image: "busybox:1.36"}}
"""


def fetch(running: RunningLab, url: str, source: str = "default/client") -> str:
    return running.exec(source, "wget", "-qO-", url, check=True, timeout=10).stdout


def test_every_service_answers_through_its_cluster_ip_with_the_stand_ins_hostname(docs_lab: RunningLab) -> None:
    pods_by_ip = {p["ip"]: p["name"] for p in docs_lab.summary["pods"]}
    checked = 0
    for service in docs_lab.summary["services"]:
        if service["namespace"] == "kube-system" or service["cluster_ip"] == "None":
            continue
        backends = {pods_by_ip[e["ip"]] for e in service["endpoints"]}
        for port in service["ports"]:
            if port["protocol"] == "TCP":
                answer = fetch(docs_lab, f"http://{service['cluster_ip']}:{port['port']}/hostname")
            else:
                answer = docs_lab.exec("default/client", "sh", "-c", f"echo hostname | socat -t2 - "
                                       f"UDP:{service['cluster_ip']}:{port['port']}", check=True, timeout=10).stdout
            assert answer.strip() in backends, (service["name"], port, answer)
            checked += 1
    assert checked == 7  # my-nginx, my-service (2), nginx-metrics, mongo, netexec (TCP and UDP)


def test_a_headless_services_pods_answer_by_their_own_names(docs_lab: RunningLab) -> None:
    assert fetch(docs_lab, "http://web-0.nginx/hostname") == "web-0"
    assert fetch(docs_lab, "http://web-1.nginx.default.svc.cluster.local/hostname") == "web-1"


def test_verify_holds(docs_lab: RunningLab) -> None:
    report = lab.verify_lab(docs_lab.name)
    assert report.ok, [str(r) for r in report.mismatches]
    assert len(report.results) == 12


def test_the_containers_of_a_pod_share_localhost_and_each_names_itself(docs_lab: RunningLab) -> None:
    pod = "default/nginx-with-exporter"
    assert fetch(docs_lab, "http://localhost:80/", pod).startswith(
        "labkit stand-in for pod default/nginx-with-exporter, container nginx, port 80/TCP")
    assert fetch(docs_lab, "http://127.0.0.1:9113/", pod).startswith(
        "labkit stand-in for pod default/nginx-with-exporter, container exporter, port 9113/TCP")
    assert fetch(docs_lab, "http://localhost:9113/hostname", pod) == "nginx-with-exporter"


def test_agnhost_netexec_answers_on_its_own_ports(docs_lab: RunningLab) -> None:
    ip = docs_lab.pod_ip("default/netexec")
    assert fetch(docs_lab, f"http://{ip}:8080/echo?msg=from+the+client") == "from the client"
    assert fetch(docs_lab, f"http://{ip}:8080/clientip").startswith(docs_lab.pod_ip("default/client") + ":")
    said = docs_lab.exec("default/client", "sh", "-c", f"echo 'echo UDP' | socat -t2 - UDP:{ip}:8081",
                         check=True, timeout=10).stdout
    assert said == "udp"


def test_status_says_which_containers_stand_in_and_why(docs_lab: RunningLab, capsys) -> None:
    found = lab.status(docs_lab.name)[0]
    containers = {(p["name"], c["name"]): c["stand_in"] for p in found["pods"] for c in p["containers"]}
    assert containers[("client", "client")] is None  # a command, labkit's node image: runs as written
    why = containers[("web-0", "nginx")]
    assert "registry.k8s.io/nginx-slim:0.24" in why
    assert ("not in the Docker engine" if docs_lab.runtime == "docker" else "no command") in why
    mongo = next(why for (pod, _), why in containers.items() if pod.startswith("mongo-"))
    assert ("args without a command" if docs_lab.runtime == "netns" else "not in the Docker engine") in mongo
    job = next(p for p in found["pods"] if p["name"].startswith("pi-"))
    if docs_lab.runtime == "docker":  # no perl image: the stand-in keeps running, and the pod with it
        assert "perl:5.34.0 is not in the Docker engine" in job["containers"][0]["stand_in"]
        assert job["phase"] == "Running"
    else:  # the host's perl ran the Job's command as written
        assert job["containers"][0]["stand_in"] is None
    assert sum(why is not None for why in containers.values()) == (11 if docs_lab.runtime == "docker" else 10)
    print_status([found])
    assert "stand-ins" in capsys.readouterr().out


def test_each_stand_in_is_one_process_the_lab_knows(docs_lab: RunningLab) -> None:
    """Bare interpreter, no workers, NET_BIND_SERVICE alone (bound, effective; none ambient)."""
    files = paths.lab(docs_lab.name)
    stand_ins = set()
    for pod in docs_lab.summary["pods"]:
        for container in pod["containers"]:
            if container["stand_in"] is None:
                continue
            pid_file = Path(files.pod_dir(pod["namespace"], pod["name"])) / f"{container['name']}.pid"
            proc = processes.recorded(str(pid_file), marker=files.dir)
            assert proc is not None, pid_file
            stand_ins.add(proc.pid)
            assert processes.cmdline(proc.pid)[1] == "-IS"  # the host's interpreter, bare
            assert processes.children(proc.pid) == set()
            with open(f"/proc/{proc.pid}/status", encoding="ascii") as fh:
                caps = dict(line.split(":\t") for line in fh if line.startswith(("CapEff", "CapBnd", "CapAmb")))
            assert {k: int(v, 16) for k, v in caps.items()} == {"CapEff": 1 << 10, "CapBnd": 1 << 10, "CapAmb": 0}
    # forked from one launcher, which ended with the batch of pods it started; the stand-ins live on
    assert {pid for pid in processes.naming(files.dir) if "launch" in processes.cmdline(pid)} == stand_ins
    assert len(stand_ins) == (11 if docs_lab.runtime == "docker" else 10)  # docker: the Job's too


def test_docker_refuses_a_missing_image_unless_stand_ins_are_allowed(labkit_docker, tmp_path) -> None:
    name = "sidockr"
    topology = tmp_path / "one.yaml"
    topology.write_text(ONE_NGINX.format(name=name, cluster="{}"))
    try:
        with pytest.raises(LabkitError) as failed:
            lab.up(str(topology), runtime="docker")
        assert "nginx:1.14.2 not found" in str(failed.value)
        assert "cluster.stand-ins: true" in str(failed.value) and "--stand-in" in str(failed.value)
        assert lab.leftovers(name) == []
        labkit("up", str(topology), "--runtime", "docker", "--stand-in", "-q")
        found = lab.status(name)[0]
        assert [c["stand_in"] is not None for c in found["pods"][0]["containers"]] == [True, True]
        running = RunningLab(name, found)
        assert fetch(running, "http://localhost/hostname", "default/web") == "web"
    finally:
        lab.down(name)
    assert lab.leftovers(name) == []


def test_stand_ins_off_runs_nothing_in_their_place(labkit_lab_factory, tmp_path) -> None:
    topology = tmp_path / "off.yaml"
    topology.write_text(ONE_NGINX.format(name="sioff", cluster="{stand-ins: false}").replace(
        ", ports: [{containerPort: 80}]", ""))
    running = labkit_lab_factory(topology, runtime="netns")
    assert [c["stand_in"] for c in running.pods()["default/web"]["containers"]] == [None, None]
    files = paths.lab(running.name)
    assert not list(Path(files.pod_dir("default", "web")).glob("*.pid"))


ENTRYPOINT_POD = """\
name: sient
cluster: {}
topology:
  nodes:
    cp: {kind: k8s-node}
workloads:
  - apiVersion: v1
    kind: Pod
    metadata: {name: web}
    spec:
      containers:
        - name: server
          image: "IMAGE"
          command: ["socat"]
          args: ["TCP-LISTEN:8080,fork,reuseaddr", "SYSTEM:hostname"]
          ports: [{containerPort: 8080}]
"""


@pytest.fixture
def entrypoint_image(labkit_docker):
    """An image with an ENTRYPOINT of its own (/bin/false), made from labkit's node image; removed after the
    lab that uses it (request it before labkit_lab_factory)."""
    from labkit.runtime.image import DEFAULT_IMAGE

    base = labkit_docker.containers.create(DEFAULT_IMAGE, command=["true"])
    try:
        image = base.commit(repository="labkit-test/standin-entrypoint", tag="1",
                            changes=['ENTRYPOINT ["/bin/false"]', 'CMD ["never"]'])
    finally:
        base.remove(force=True)
    yield "labkit-test/standin-entrypoint:1"
    labkit_docker.images.remove(image.id, force=True)


def test_docker_gives_command_as_the_entrypoint_and_args_as_its_arguments(entrypoint_image, labkit_lab_factory,
                                                                          tmp_path) -> None:
    """`command` replaces the image's ENTRYPOINT, `args` its CMD (with both as the image's CMD, the image's
    /bin/false would run and nothing would listen)."""
    topology = tmp_path / "entry.yaml"
    topology.write_text(ENTRYPOINT_POD.replace("IMAGE", entrypoint_image))
    running = labkit_lab_factory(topology, runtime="docker")
    assert [c["stand_in"] for c in running.pods()["default/web"]["containers"]] == [None]
    said = running.exec("default/web", "socat", "-u", "TCP:localhost:8080", "-", check=True, timeout=10)
    assert said.stdout.strip() == "web"


def test_status_calls_a_lab_whose_stand_in_died_degraded(labkit_lab_factory, tmp_path) -> None:
    topology = tmp_path / "died.yaml"
    topology.write_text(ONE_NGINX.format(name="sidied", cluster="{}"))
    running = labkit_lab_factory(topology, runtime="netns")
    assert lab.status(running.name)[0]["health"]["ok"]
    files = paths.lab(running.name)
    stand_in = processes.recorded(str(Path(files.pod_dir("default", "web")) / "nginx.pid"), marker=files.dir)
    assert stand_in is not None
    processes.stop([stand_in])
    found = lab.status(running.name)[0]
    assert found["phase"] == "degraded"
    assert found["health"]["problems"] == ["pod default/web: the stand-in of container nginx is not running"]


SECOND_POD = """\
  - apiVersion: v1
    kind: Pod
    metadata: {name: api}
    spec:
      containers:
        - {name: api, image: "python:3.12", ports: [{containerPort: 8000}]}
"""


def test_apply_starts_the_stand_ins_of_new_pods(labkit_lab_factory, tmp_path) -> None:
    topology = tmp_path / "grow.yaml"
    topology.write_text(ONE_NGINX.format(name="sigrow", cluster="{}"))
    running = labkit_lab_factory(topology, runtime="netns")
    topology.write_text(ONE_NGINX.format(name="sigrow", cluster="{}") + SECOND_POD)
    lab.apply(str(topology), name=running.name)
    found = lab.status(running.name)[0]
    assert found["health"]["ok"], found["health"]
    reasons = {(p["name"], c["name"]): c["stand_in"] for p in found["pods"] for c in p["containers"]}
    assert reasons[("web", "nginx")] and "python:3.12" in reasons[("api", "api")]  # the first pod's kept
    updated = RunningLab(running.name, found)
    assert fetch(updated, f"http://{updated.pod_ip('default/api')}:8000/hostname", "default/web") == "api"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_stand_in_answers_on_both_families_of_a_dual_stack_pod(labkit_lab_factory, tmp_path, runtime) -> None:
    """A dual-stack pod's stand-in listens on `::` with IPv4 mapped in, as a server on `::` in a container
    does: reached at the pod's IPv6 and IPv4 address, it names the client as agnhost's clientip does."""
    topology = tmp_path / "dual.yaml"
    cluster = "{pod-cidr: '10.244.0.0/16,fd00:10:244::/56', service-cidr: '10.96.0.0/16,fd00:10:96::/112', " \
              "stand-ins: true}"
    topology.write_text(ONE_NGINX.format(name="sidual", cluster=cluster))
    running = labkit_lab_factory(topology, runtime=runtime)
    web = running.pods()["default/web"]
    v4, v6 = web["ips"]
    for address in (v4, f"[{v6}]"):
        answer = running.exec("default/web", "wget", "-qO-", f"http://{address}:80/clientip", check=True,
                              timeout=10).stdout
        assert answer.rsplit(":", 1)[0] == address, answer  # the pod reached itself: its own address, unmapped
