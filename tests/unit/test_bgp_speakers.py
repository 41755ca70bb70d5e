"""Who speaks BGP with whom (mesh, route reflectors, peers), and the BIRD config each one gets."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from labkit import bgp
from labkit.errors import LabkitError
from labkit.topology import load_plan

ROOT = Path(__file__).resolve().parents[2]
KUBE_BGP = ROOT / "topologies" / "kube-bgp.yaml"
REFLECTORS = ROOT / "tests" / "topologies" / "good" / "bgp-route-reflectors.yaml"


def _by_node(path: Path) -> dict[str, bgp.Speaker]:
    return {s.node: s for s in bgp.speakers(load_plan(path))}


def _sessions(speaker: bgp.Speaker) -> list[tuple]:
    return [(s.name, s.address, s.asn, s.rr_client, s.export_learned) for s in speaker.sessions]


def test_full_mesh_and_a_router_node_peer() -> None:
    found = _by_node(KUBE_BGP)
    assert list(found) == ["cp", "w1", "w2", "tor"]
    w1 = found["w1"]
    assert (w1.role, w1.asn, w1.router_id) == ("node", 64512, "172.31.0.3")
    assert _sessions(w1) == [("node_cp", "172.31.0.2", 64512, False, False),
                             ("node_w2", "172.31.0.4", 64512, False, False),
                             ("peer_tor", "172.31.0.5", 65000, False, False)]
    assert [(p.prefix, p.comment) for p in w1.install] == [("10.244.1.0/24", "podCIDR of w1")]
    tor = found["tor"]
    assert (tor.role, tor.asn, tor.router_id, tor.connected, tor.install) == ("router", 65000, "172.31.0.5",
                                                                              ("eth1",), ())
    assert _sessions(tor) == [(f"node_{n}", ip, 64512, False, False)
                              for n, ip in (("cp", "172.31.0.2"), ("w1", "172.31.0.3"), ("w2", "172.31.0.4"))]


def test_route_reflectors_replace_the_mesh() -> None:
    found = _by_node(REFLECTORS)
    assert _sessions(found["cp"]) == [("rr_w1", "172.31.0.3", 4200000001, False, True),
                                      ("client_w2", "172.31.0.4", 4200000001, True, True),
                                      ("client_w3", "172.31.0.5", 4200000001, True, True)]
    assert _sessions(found["w2"]) == [("rr_cp", "172.31.0.2", 4200000001, False, False),
                                      ("rr_w1", "172.31.0.3", 4200000001, False, False)]


def test_an_address_peer_gets_a_session_from_every_node_and_no_speaker(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("name: t\ncluster:\n  cni:\n    backend: bgp\n"
                    "    bgp: {peers: [{address: 172.31.0.9, asn: 65001}]}\n"
                    "topology:\n  nodes: {cp: {kind: k8s-node}, w1: {kind: k8s-node}}\n")
    found = _by_node(path)
    assert list(found) == ["cp", "w1"]
    assert _sessions(found["cp"])[-1] == ("peer_172_31_0_9", "172.31.0.9", 65001, False, False)


def test_other_backends_have_no_speakers() -> None:
    assert bgp.speakers(load_plan(ROOT / "topologies" / "kube-3node.yaml")) == []


def test_defaults_are_a_mesh_in_as_64512_with_masquerade(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("name: t\ncluster: {cni: {backend: bgp}}\ntopology:\n  nodes: {cp: {kind: k8s-node}}\n")
    cluster = load_plan(path).cluster
    assert cluster is not None and cluster.bgp is not None
    assert (cluster.bgp.asn, cluster.bgp.mesh, cluster.bgp.peers, cluster.masquerade) == (64512, True, (), True)


@pytest.mark.parametrize("topology", [KUBE_BGP, REFLECTORS], ids=["mesh", "reflectors"])
def test_every_rendered_config_is_one_bird_accepts(topology: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_STATE_DIR", str(tmp_path))
    plan = load_plan(topology)
    for speaker in bgp.speakers(plan):
        files = bgp.write_config(plan.lab, speaker)
        assert files.config == str(tmp_path / plan.lab / "bgp" / speaker.node / "bird.conf")
        proc = subprocess.run(["bird", "-p", "-c", files.config], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        text = Path(files.config).read_text()
        assert f"router id {speaker.router_id};" in text and "graceful restart off;" in text
        assert f"hold time {bgp.TIMERS.hold};" in text and f'log "{files.log}"' in text
        assert text.count("rr client;") == sum(s.rr_client for s in speaker.sessions)
        for prefix in speaker.install:
            assert f"route {prefix.prefix} blackhole;" in text


def test_announced_prefixes_are_exported_but_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a later LoadBalancer announcement (MetalLB's BGP mode) adds: its own static protocol."""
    monkeypatch.setenv("LABKIT_STATE_DIR", str(tmp_path))
    lb = bgp.Prefix("192.0.2.10/32", "LoadBalancer default/web")
    speaker = {s.node: s for s in bgp.speakers(load_plan(KUBE_BGP), announce={"w1": [lb]})}["w1"]
    assert speaker.announce == (lb,)
    files = bgp.write_config("kubebgp", speaker)
    text = Path(files.config).read_text()
    assert "protocol static announce" in text and 'if proto = "announce" then accept;' in text
    kernel = text.split("protocol kernel", 1)[1].split("filter originated", 1)[0]
    assert "announce" not in kernel
    assert subprocess.run(["bird", "-p", "-c", files.config], capture_output=True, check=False).returncode == 0


def test_a_socket_path_too_long_for_unix_sockets_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_STATE_DIR", "/run/" + "x" * 100)
    with pytest.raises(LabkitError, match="longer than 107 bytes; use a shorter LABKIT_STATE_DIR"):
        bgp.files_of("kubebgp", "w1")
