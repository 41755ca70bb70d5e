"""The docker runtime against a real engine: node and pod sandboxes, exec, destroy."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from labkit.errors import LabkitError
from labkit.runtime import ContainerSpec, NodeSpec, PodSpec, Runtime, Sandbox
from labkit.runtime.docker import LABEL_LAB, DockerRuntime, node_privileges
from labkit.runtime.image import DEFAULT_IMAGE

pytestmark = pytest.mark.integration


@pytest.fixture
def runtime(labkit_docker, tmp_path) -> DockerRuntime:
    return DockerRuntime(labkit_docker, state_dir=str(tmp_path / "state"))


def _new_lab() -> str:
    return "t" + secrets.token_hex(4)


@pytest.fixture
def lab(runtime, labkit_docker):
    """A unique lab name; whatever the test leaves is destroyed, and must then be gone."""
    name = _new_lab()
    yield name
    runtime.destroy(name)
    assert labkit_docker.containers.list(all=True, filters={"label": f"{LABEL_LAB}={name}"}) == []
    assert not os.path.exists(os.path.join(runtime.state_dir, name))


@pytest.fixture
def other_lab(runtime, labkit_docker):
    name = _new_lab()
    yield name
    runtime.destroy(name)
    assert labkit_docker.containers.list(all=True, filters={"label": f"{LABEL_LAB}={name}"}) == []


def node(lab: str, name: str, **kwargs) -> NodeSpec:
    return NodeSpec(name=name, kind="linux", netns=f"lk-{lab}.{name}", **kwargs)


def pod(lab: str, node_name: str, name: str, containers=()) -> PodSpec:
    return PodSpec(
        namespace="default",
        name=name,
        node=node_name,
        netns=f"lk-{lab}.default.{name}",
        hostname=name,
        hosts=f"127.0.0.1 localhost\n10.244.1.5 {name}\n",
        resolv_conf="nameserver 10.96.0.10\nsearch default.svc.cluster.local\noptions ndots:5\n",
        containers=containers,
    )


def ok(runtime: DockerRuntime, sandbox: Sandbox, *argv: str) -> str:
    code, out = runtime.exec(sandbox, argv, capture=True)
    assert code == 0, f"{argv} in {sandbox.name}: exit {code}\n{out}"
    return out


def veth(a: Sandbox, a_ip: str, b: Sandbox, b_ip: str, runtime: DockerRuntime) -> None:
    """Wire eth1 between two sandboxes from the host, as labkit's link phase does."""
    subprocess.run(
        ["ip", "link", "add", "eth1", "netns", a.netns_path, "type", "veth",
         "peer", "name", "eth1", "netns", b.netns_path],
        check=True,
    )  # fmt: skip
    for sandbox, ip in ((a, a_ip), (b, b_ip)):
        subprocess.run(
            ["nsenter", f"--net={sandbox.netns_path}", "ip", "addr", "add", ip, "dev", "eth1"],
            check=True,
        )
        subprocess.run(
            ["nsenter", f"--net={sandbox.netns_path}", "ip", "link", "set", "eth1", "up"],
            check=True,
        )


def test_satisfies_the_runtime_protocol(runtime):
    protocol: Runtime = runtime
    assert protocol.name == "docker"


def test_nodes_wired_by_hand_ping_each_other(runtime, lab, labkit_docker):
    a = runtime.create_node(
        lab, node(lab, "a", hosts="127.0.0.1 localhost\n10.0.0.2 b\n", resolv_conf="nameserver 10.0.0.53\n")
    )  # fmt: skip
    b = runtime.create_node(lab, node(lab, "b", hostname="bee"))
    assert a.netns_path == f"/proc/{a.pid}/ns/net" and os.path.exists(a.netns_path)
    assert (
        os.readlink(a.netns_path) != os.readlink(b.netns_path) != os.readlink("/proc/self/ns/net")
    )

    veth(a, "10.0.0.1/24", b, "10.0.0.2/24", runtime)
    out = ok(runtime, a, "ping", "-c", "1", "-W", "2", "b")  # through the node's /etc/hosts
    assert "1 packets received" in out
    assert ok(runtime, a, "cat", "/etc/resolv.conf") == "nameserver 10.0.0.53\n"
    assert ok(runtime, a, "hostname").strip() == "a"
    assert ok(runtime, b, "hostname").strip() == "bee"

    # A node manages its own network: sysctls, nftables, routes.
    ok(runtime, a, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
    assert ok(runtime, a, "cat", "/proc/sys/net/ipv4/ip_forward").strip() == "1"
    ok(runtime, a, "nft", "add", "table", "inet", "lab")
    assert "table inet lab" in ok(runtime, a, "nft", "list", "tables")
    host = subprocess.run(["nft", "list", "tables"], check=True, capture_output=True, text=True)
    assert "table inet lab" not in host.stdout

    labels = labkit_docker.containers.get(f"lk-{lab}.a").labels
    assert labels["labkit.lab"] == lab and labels["labkit.node"] == "a"
    assert labels["labkit.kind"] == "linux"


def test_exec_passes_the_exit_code_through(runtime, lab, capfd):
    a = runtime.create_node(lab, node(lab, "a"))
    assert runtime.exec(a, ["sh", "-c", "echo out; echo err >&2; exit 7"], capture=True) == (
        7,
        "out\nerr\n",
    )
    code, text = runtime.exec(a, ["sh", "-c", "echo streamed; exit 3"])
    assert (code, text) == (3, "")
    assert "streamed" in capfd.readouterr().out
    code, _ = runtime.exec(a, ["no-such-command"], capture=True)
    assert code in (126, 127)


def test_uncaptured_exec_reads_our_stdin(runtime, lab, capfd):
    a = runtime.create_node(lab, node(lab, "a"))
    read, write = os.pipe()
    os.write(write, b"typed by a person\n")
    os.close(write)
    saved = os.dup(0)
    try:
        os.dup2(read, 0)
        code, _ = runtime.exec(a, ["sh", "-c", "cat; exit 4"])
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(read)
    assert code == 4
    assert "typed by a person" in capfd.readouterr().out


def test_uncaptured_exec_without_the_docker_cli_streams(runtime, lab, capfd, monkeypatch):
    a = runtime.create_node(lab, node(lab, "a"))
    monkeypatch.setattr("labkit.runtime.docker.shutil.which", lambda name: None)
    assert runtime.exec(a, ["sh", "-c", "echo out; echo err >&2; exit 5"]) == (5, "")
    captured = capfd.readouterr()
    assert captured.out == "out\n" and captured.err == "err\n"


def test_pod_is_a_pause_container_and_app_containers_in_its_netns(runtime, lab, labkit_docker):
    n = runtime.create_node(lab, node(lab, "w1"))
    spec = pod(
        lab,
        "w1",
        "web",
        containers=[
            ContainerSpec("app", None, ["sleep", "3600"], env={"GREETING": "hi"}),
            ContainerSpec("sidecar", None, []),  # the image's default command
        ],
    )
    sandbox = runtime.create_pod(lab, spec)
    assert sandbox.name == "default/web"
    pause = labkit_docker.containers.get(f"lk-{lab}.default.web")
    assert pause.labels["labkit.pod"] == "default/web" and pause.labels["labkit.node"] == "w1"
    assert pause.attrs["HostConfig"]["NetworkMode"] == "none"
    assert f"labkit/pause:{pause.image.labels['labkit.version']}" in pause.image.tags

    # The pod is wired before its containers start (as the CNI plugin would).
    veth(n, "10.244.1.1/24", sandbox, "10.244.1.5/24", runtime)
    runtime.start_containers(lab, spec, sandbox)

    app = labkit_docker.containers.get(f"lk-{lab}.default.web.app")
    sidecar = labkit_docker.containers.get(f"lk-{lab}.default.web.sidecar")
    for c in (app, sidecar):
        assert c.status == "running"
        assert c.attrs["HostConfig"]["NetworkMode"] == f"container:{pause.id}"
        assert c.labels["labkit.lab"] == lab and c.labels["labkit.pod"] == "default/web"
        assert os.readlink(f"/proc/{c.attrs['State']['Pid']}/ns/net") == os.readlink(
            sandbox.netns_path
        )

    # exec runs in the first app container, with the pod's hostname, hosts and resolv.conf.
    assert "sleep" in ok(runtime, sandbox, "cat", "/proc/1/cmdline")
    assert ok(runtime, sandbox, "sh", "-c", "echo $GREETING").strip() == "hi"
    assert ok(runtime, sandbox, "hostname").strip() == "web"
    assert "search default.svc.cluster.local" in ok(runtime, sandbox, "cat", "/etc/resolv.conf")
    assert "10.244.1.5 web" in ok(runtime, sandbox, "cat", "/etc/hosts")
    assert "10.244.1.5/24" in ok(runtime, sandbox, "ip", "-4", "addr", "show", "eth1")
    assert "1 packets received" in ok(runtime, n, "ping", "-c", "1", "-W", "2", "10.244.1.5")
    assert "1 packets received" in ok(runtime, sandbox, "ping", "-c", "1", "-W", "2", "10.244.1.1")


def test_pod_exec_falls_back_to_pause(runtime, lab):
    spec = pod(lab, "w1", "empty")
    sandbox = runtime.create_pod(lab, spec)
    runtime.start_containers(lab, spec, sandbox)
    assert ok(runtime, sandbox, "hostname").strip() == "empty"


def test_many_pods_at_once(runtime, lab, labkit_docker):
    specs = [
        pod(lab, "w1", f"p{i}", [ContainerSpec("app", None, ["sleep", "600"])]) for i in range(6)
    ]
    sandboxes = runtime.create_pods(lab, specs)
    assert [s.name for s in sandboxes] == [f"default/p{i}" for i in range(6)]
    assert len({os.readlink(s.netns_path) for s in sandboxes}) == 6
    for spec, sandbox in zip(specs, sandboxes, strict=True):
        runtime.start_containers(lab, spec, sandbox)
    assert len(labkit_docker.containers.list(filters={"label": f"{LABEL_LAB}={lab}"})) == 12


def test_failed_app_container_is_removed_and_reported(runtime, lab, labkit_docker):
    spec = pod(lab, "w1", "bad", containers=[ContainerSpec("app", None, ["/no/such/binary"])])
    sandbox = runtime.create_pod(lab, spec)
    with pytest.raises(LabkitError, match=f"cannot start container lk-{lab}.default.bad.app"):
        runtime.start_containers(lab, spec, sandbox)
    assert [c.name for c in labkit_docker.containers.list(all=True, filters={"name": "bad.app"})] == []


def test_missing_image_fails_before_creating_anything(runtime, lab, labkit_docker):
    with pytest.raises(LabkitError, match="labkit/node:0.0.0-never-built not found"):
        runtime.create_node(lab, node(lab, "a", image="labkit/node:0.0.0-never-built"))
    assert runtime.labs() & {lab} == set()


def test_name_taken_is_a_clear_error(runtime, lab):
    runtime.create_node(lab, node(lab, "a"))
    with pytest.raises(LabkitError, match="exists already"):
        runtime.create_node(lab, node(lab, "a"))


def test_destroy_after_containers_were_killed_behind_our_back(runtime, lab, labkit_docker):
    sandboxes = runtime.create_nodes(lab, [node(lab, n) for n in ("a", "b", "c", "d")])
    spec = pod(lab, "a", "web", containers=[ContainerSpec("app", None, ["sleep", "3600"])])
    runtime.start_containers(lab, spec, runtime.create_pod(lab, spec))
    assert [s.name for s in sandboxes] == ["a", "b", "c", "d"]
    assert lab in runtime.labs()

    labkit_docker.containers.get(f"lk-{lab}.a").kill()
    labkit_docker.containers.get(f"lk-{lab}.b").remove(force=True)
    labkit_docker.containers.get(f"lk-{lab}.default.web").kill()  # the pod's pause

    runtime.destroy(lab)
    assert labkit_docker.containers.list(all=True, filters={"label": f"{LABEL_LAB}={lab}"}) == []
    assert lab not in runtime.labs()
    runtime.destroy(lab)  # twice is fine


def test_destroy_spares_containers_without_the_label(runtime, lab, labkit_docker):
    runtime.create_node(lab, node(lab, "a"))
    bystander = labkit_docker.containers.run(
        DEFAULT_IMAGE,
        name=f"lk-{lab}.bystander",  # even with the lab's prefix: the label decides
        network_mode="none",
        detach=True,
    )
    try:
        runtime.destroy(lab)
        bystander.reload()
        assert bystander.status == "running"
    finally:
        bystander.remove(force=True)


def test_two_labs_side_by_side(runtime, lab, other_lab, labkit_docker):
    first = runtime.create_nodes(lab, [node(lab, "a"), node(lab, "b")])
    second = runtime.create_nodes(other_lab, [node(other_lab, "a"), node(other_lab, "b")])
    assert {lab, other_lab} <= runtime.labs()

    runtime.destroy(lab)
    assert lab not in runtime.labs() and other_lab in runtime.labs()
    assert ok(runtime, second[0], "hostname").strip() == "a"
    with pytest.raises(LabkitError, match="has no running container"):
        runtime.exec(first[0], ["true"])


def test_node_privileges_follow_the_hosts_bounding_set(tmp_path):
    full = (1 << (int(Path("/proc/sys/kernel/cap_last_cap").read_text()) + 1)) - 1
    status = tmp_path / "status"
    status.write_text(f"Name:\tx\nCapBnd:\t{full:016x}\n")
    assert node_privileges(str(status)) == {"privileged": True}
    status.write_text(f"Name:\tx\nCapBnd:\t{full & ~(1 << 24):016x}\n")  # no CAP_SYS_RESOURCE
    limited = node_privileges(str(status))
    assert "privileged" not in limited
    assert limited["cap_add"] == ["ALL"] and limited["cap_drop"] == ["SYS_RESOURCE"]
    assert limited["MaskedPaths"] == [] and limited["ReadonlyPaths"] == []
