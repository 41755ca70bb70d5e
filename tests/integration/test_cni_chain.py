"""labkit-cni chained with the reference plugins (portmap, tuning) through the
pure-Python conflist executor, exactly as libcni would run the list."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from labkit.cni import conflist as cl
from labkit.cni import plugin
from labkit.cni.errors import CNIError

from .test_cni_helpers import REF_CNI, CNIServer, needs_root, scratch_fixture

pytestmark = [pytest.mark.integration, needs_root]


@pytest.fixture(scope="module", autouse=True)
def _reference_plugins() -> None:
    """The chain needs Debian's reference plugins: a missing install fails, it is never skipped."""
    if not os.path.exists(f"{REF_CNI}/portmap"):
        pytest.fail(f"{REF_CNI}/portmap missing: apt-get install containernetworking-plugins iptables")

scratch = pytest.fixture(scratch_fixture)

PORTMAP = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
TUNING = {"type": "tuning", "sysctl": {"net.core.somaxconn": "777"}}


def build(s):
    """node + pod + client namespace; the client reaches the node on 192.168.77.1."""
    node = s.netns("node")
    pod = s.netns("pod")
    client = s.netns("cli")
    a, b = f"{s.prefix}-a", f"{s.prefix}-b"
    s.veth(node, a, client, b)
    s.sh(node, "ip", "addr", "add", "192.168.77.1/24", "dev", a)
    s.sh(node, "ip", "link", "set", a, "up")
    s.sh(client, "ip", "addr", "add", "192.168.77.2/24", "dev", b)
    s.sh(client, "ip", "link", "set", b, "up")
    return node, pod, client


def http_get(s, ns, url):
    code = ("import urllib.request,sys;"
            "print(urllib.request.urlopen(sys.argv[1], timeout=5).status)")
    return s.sh(ns, sys.executable, "-c", code, url, check=False)


@pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "exec"])
def test_portmap_and_tuning_chain(scratch, in_process):
    s = scratch
    node, pod, client = build(s)
    confdir = s.tmpdir()
    path = cl.write_conflist(confdir, f"{s.prefix}-net", "10.244.5.0/24",
                             data_dir=f"{s.tmpdir()}/ipam", plugins=[PORTMAP, TUNING], mtu=1450)
    assert path.name == f"10-{s.prefix}-net.conflist" and path.exists()
    assert not [p for p in os.listdir(confdir) if p.endswith(".tmp")]
    listconf = json.loads(path.read_text())
    assert [p["type"] for p in listconf["plugins"]] == ["labkit-cni", "portmap", "tuning"]
    assert listconf["cniVersion"] == "1.0.0"
    caps = {"portMappings": [{"hostPort": 18080, "containerPort": 8000, "protocol": "tcp"}]}
    cache = s.tmpdir()
    kw = dict(container_id="chain1", netns=pod, ifname="eth0", capability_args=caps,
              cni_path=[REF_CNI], node_netns=node, cache_dir=cache, in_process=in_process)

    res = cl.execute_conflist("ADD", path, **kw)
    assert res["cniVersion"] == "1.0.0"
    assert [i["name"] for i in res["interfaces"]][1] == "eth0"
    pod_ip = res["ips"][0]["address"].split("/")[0]
    assert res["interfaces"][res["ips"][0]["interface"]]["sandbox"] == pod
    # tuning ran in the pod with our prevResult
    assert s.sh(pod, "cat", "/proc/sys/net/core/somaxconn").stdout.strip() == "777"
    # portmap's DNAT lives in the node namespace
    nat = s.sh(node, "iptables-save", "-t", "nat").stdout
    assert "18080" in nat and f"{pod_ip}:8000" in nat
    assert os.listdir(cache)

    # a web server in the pod, reached from the client through the node's host port
    srv = s.spawn(pod, sys.executable, "-m", "http.server", "8000", "--bind", "0.0.0.0")
    for _ in range(50):
        r = http_get(s, client, "http://192.168.77.1:18080/")
        if r.returncode == 0:
            break
        time.sleep(0.1)
    assert r.stdout.strip() == "200", r.stderr
    srv.kill()

    # DEL runs in reverse with the cached result; twice is fine
    cl.execute_conflist("DEL", path, **kw)
    cl.execute_conflist("DEL", path, **kw)
    assert "18080" not in s.sh(node, "iptables-save", "-t", "nat").stdout
    assert not [n for n in os.listdir(f"{listconf['plugins'][0]['ipam']['dataDir']}")
                if n[0].isdigit()]
    assert s.sh(pod, "ip", "link", "show", "eth0", check=False).returncode != 0
    assert not os.listdir(cache)


def test_check_gc_status_on_lists(scratch):
    s = scratch
    node = s.netns("node")
    pods = [s.netns("p0"), s.netns("p1")]
    data = f"{s.tmpdir()}/ipam"
    # labkit-cni + tuning at 1.0.0: CHECK goes through both plugins
    text = cl.render_conflist(f"{s.prefix}-t", "10.244.6.0/24", data_dir=data, plugins=[TUNING])
    res = cl.execute_conflist("ADD", text, container_id="ck0", netns=pods[0], node_netns=node,
                              cni_path=[REF_CNI])
    cl.execute_conflist("CHECK", text, container_id="ck0", netns=pods[0], node_netns=node,
                        cni_path=[REF_CNI], prev_result=res)
    s.sh(pods[0], "ip", "link", "set", "eth0", "down")
    with pytest.raises(CNIError) as ei:
        cl.execute_conflist("CHECK", text, container_id="ck0", netns=pods[0], node_netns=node,
                            cni_path=[REF_CNI], prev_result=res)
    assert ei.value.code == 104
    cl.execute_conflist("DEL", text, container_id="ck0", netns=pods[0], node_netns=node,
                        cni_path=[REF_CNI], prev_result=res)

    # labkit-cni alone at 1.1.0: GC and STATUS reach the plugin
    text = cl.render_conflist(f"{s.prefix}-g", "10.244.6.0/24", data_dir=data)
    assert json.loads(text)["cniVersion"] == "1.1.0"
    for i, pod in enumerate(pods):
        cl.execute_conflist("ADD", text, container_id=f"g{i}", netns=pod, node_netns=node)
    cl.execute_conflist("STATUS", text, node_netns=node)
    cl.execute_conflist("GC", text, node_netns=node,
                        valid_attachments=[{"containerID": "g1", "ifname": "eth0"}])
    assert s.sh(pods[0], "ip", "link", "show", "eth0", check=False).returncode != 0
    assert s.sh(pods[1], "ip", "link", "show", "eth0", check=False).returncode == 0
    cl.execute_conflist("GC", text, node_netns=node, valid_attachments=[])
    assert not [n for n in os.listdir(data) if n[0].isdigit()]


def test_gc_dels_stale_cached_attachments(scratch):
    """With a result cache, GC first DELs cached attachments that are no longer valid
    (as libcni does, so every plugin of the list cleans up), then GCs every plugin."""
    s = scratch
    node = s.netns("node")
    pods = [s.netns("p0"), s.netns("p1")]
    cache = s.tmpdir()
    text = cl.render_conflist(f"{s.prefix}-c", "10.244.4.0/24", data_dir=f"{s.tmpdir()}/ipam")
    for cid, pod in zip(("old", "live"), pods, strict=True):
        cl.execute_conflist("ADD", text, container_id=cid, netns=pod, node_netns=node,
                            cache_dir=cache)
    assert sorted(os.listdir(cache)) == [f"{s.prefix}-c-live-eth0", f"{s.prefix}-c-old-eth0"]
    cached = json.loads((Path(cache) / f"{s.prefix}-c-old-eth0").read_text())
    assert cached["kind"] == "cniCacheV1" and cached["netns"] == pods[0]
    cl.execute_conflist("GC", text, node_netns=node, cache_dir=cache,
                        valid_attachments=[{"containerID": "live", "ifname": "eth0"}])
    assert os.listdir(cache) == [f"{s.prefix}-c-live-eth0"]
    assert s.sh(pods[0], "ip", "link", "show", "eth0", check=False).returncode != 0
    assert s.sh(pods[1], "ip", "link", "show", "eth0", check=False).returncode == 0
    cl.execute_conflist("DEL", text, container_id="live", netns=pods[1], node_netns=node,
                        cache_dir=cache)
    assert os.listdir(cache) == []


@pytest.mark.parametrize("served", [False, True], ids=["in-place", "server"])
def test_launcher_in_a_cni_bin_dir(scratch, served):
    """A conflist chaining labkit-cni (through the launcher, with or without the CNI server) and
    the reference tuning plugin, exec'd as libcni would."""
    from labkit.cni.install import install_launcher

    s = scratch
    node, pod, client = build(s)
    server = CNIServer() if served else None
    bindir = server.dir + "/bin" if server else s.tmpdir()
    if server:
        s.dirs.append(server.dir)
        s.procs.append(server.proc)
    launcher = install_launcher(bindir, socket=server.socket if server else None)
    assert os.access(launcher, os.X_OK)
    text = cl.render_conflist(f"{s.prefix}-l", "10.244.3.0/24", data_dir=f"{s.tmpdir()}/ipam",
                              plugins=[TUNING])
    res = cl.execute_conflist("ADD", text, container_id="lean1", netns=pod, node_netns=node,
                              cni_path=[bindir, REF_CNI], in_process=False)
    ip = res["ips"][0]["address"].split("/")[0]
    assert s.ping(pod, "10.244.3.1")
    s.sh(client, "ip", "route", "add", "10.244.3.0/24", "via", "192.168.77.1")
    assert s.ping(client, ip)
    cl.execute_conflist("DEL", text, container_id="lean1", netns=pod, node_netns=node,
                        cni_path=[bindir, REF_CNI], in_process=False, prev_result=res)
    assert s.sh(pod, "ip", "link", "show", "eth0", check=False).returncode != 0
    if server:
        assert server.served() == 2, server.log_text()  # the ADD and the DEL, nothing in place
        server.stop()


def test_add_failure_rolls_back(scratch):
    s = scratch
    node = s.netns("node")
    pod = s.netns("pod")
    data = f"{s.tmpdir()}/ipam"
    text = cl.render_conflist(f"{s.prefix}-f", "10.244.6.0/24", data_dir=data,
                              plugins=[{"type": "no-such-plugin"}])
    with pytest.raises(CNIError) as ei:
        cl.execute_conflist("ADD", text, container_id="f1", netns=pod, node_netns=node,
                            cni_path=[REF_CNI])
    assert "no-such-plugin" in ei.value.msg
    assert not [n for n in os.listdir(data) if n[0].isdigit()]
    assert s.sh(pod, "ip", "link", "show", "eth0", check=False).returncode != 0
    # an erroring reference plugin: its error JSON becomes a CNIError with its code
    text = cl.render_conflist(f"{s.prefix}-f", "10.244.6.0/24", data_dir=data,
                              plugins=[{"type": "tuning", "sysctl": {"net.nope.nope": "1"}}])
    with pytest.raises(CNIError) as ei:
        cl.execute_conflist("ADD", text, container_id="f2", netns=pod, node_netns=node,
                            cni_path=[REF_CNI])
    assert ei.value.msg.startswith("tuning:")
    assert not [n for n in os.listdir(data) if n[0].isdigit()]


def test_plugins_see_libcni_style_configs(scratch):
    """Every plugin gets the list's name and cniVersion, runtimeConfig only for its
    capabilities, prevResult from the previous plugin."""
    listconf = cl.load_conflist(cl.render_conflist("n1", "10.244.1.0/24",
                                                   plugins=[PORTMAP, TUNING]))
    caps = {"portMappings": [{"hostPort": 1, "containerPort": 2}], "bandwidth": {}}
    pm = cl.plugin_config(listconf, listconf["plugins"][1], prev_result={"x": 1},
                          capability_args=caps)
    assert pm["name"] == "n1" and pm["cniVersion"] == "1.0.0"
    assert pm["runtimeConfig"] == {"portMappings": caps["portMappings"]}
    assert pm["prevResult"] == {"x": 1}
    tu = cl.plugin_config(listconf, listconf["plugins"][2], capability_args=caps)
    assert "runtimeConfig" not in tu and "prevResult" not in tu


def test_bandwidth_chain(scratch):
    """The reference `bandwidth` plugin finds our host-side veth in prevResult."""
    s = scratch
    node = s.netns("node")
    pod = s.netns("pod")
    text = cl.render_conflist(f"{s.prefix}-bw", "10.244.8.0/24", data_dir=f"{s.tmpdir()}/ipam",
                              plugins=[{"type": "bandwidth", "capabilities": {"bandwidth": True}}])
    caps = {"bandwidth": {"ingressRate": 1_000_000, "ingressBurst": 100_000,
                          "egressRate": 2_000_000, "egressBurst": 100_000}}
    kw = dict(container_id="bw1", netns=pod, node_netns=node, cni_path=[REF_CNI],
              capability_args=caps)
    res = cl.execute_conflist("ADD", text, **kw)
    host = res["interfaces"][0]["name"]
    qdiscs = s.sh(node, "tc", "qdisc", "show", "dev", host).stdout
    assert "tbf" in qdiscs and "rate 1Mbit" in qdiscs
    cl.execute_conflist("DEL", text, prev_result=res, **kw)
    assert s.sh(node, "ip", "-o", "link").stdout.count("\n") == 1  # only lo is left


def test_dual_stack_chain_portmap_both_families(scratch):
    """A dual-stack labkit-cni result passes down the list whole: tuning runs, and portmap publishes the
    host port on both families (an iptables DNAT to the pod's IPv4 address, an ip6tables one to its
    IPv6 address); a client reaches the pod through the node's IPv6 address; labkit-cni's CHECK of the
    list's final result and the list's DEL handle both. (Not the list's CHECK: Debian 12's portmap fails
    its own CHECK on a dual-stack result, looking for its IPv4 DNAT rules among the ip6tables ones.)"""
    s = scratch
    node, pod, client = build(s)
    a, b = f"{s.prefix}-a", f"{s.prefix}-b"
    s.sh(node, "ip", "addr", "add", "fd00:77::1/64", "dev", a, "nodad")
    s.sh(client, "ip", "addr", "add", "fd00:77::2/64", "dev", b, "nodad")
    listconf = {"cniVersion": "1.0.0", "name": f"{s.prefix}-ds", "plugins": [
        {"type": "labkit-cni", "ipam": {"ranges": [[{"subnet": "10.244.5.0/24"}], [{"subnet": "fd00:10:244:5::/64"}]],
                                        "dataDir": f"{s.tmpdir()}/ipam"}},
        PORTMAP, TUNING]}
    caps = {"portMappings": [{"hostPort": 18086, "containerPort": 8000, "protocol": "tcp"}]}
    kw = dict(container_id="dchain", netns=pod, ifname="eth0", capability_args=caps, cni_path=[REF_CNI],
              node_netns=node, cache_dir=s.tmpdir())
    res = cl.execute_conflist("ADD", listconf, **kw)
    ip4, ip6 = (i["address"].split("/")[0] for i in res["ips"])
    assert ":" not in ip4 and ip6.startswith("fd00:10:244:5::")
    assert s.sh(pod, "cat", "/proc/sys/net/core/somaxconn").stdout.strip() == "777"
    assert f"{ip4}:8000" in s.sh(node, "iptables-save", "-t", "nat").stdout
    assert f"[{ip6}]:8000" in s.sh(node, "ip6tables-save", "-t", "nat").stdout

    srv = s.spawn(pod, sys.executable, "-m", "http.server", "8000", "--bind", "::")
    for _ in range(50):
        r = http_get(s, client, "http://[fd00:77::1]:18086/")
        if r.returncode == 0:
            break
        time.sleep(0.1)
    assert r.stdout.strip() == "200", r.stderr
    srv.kill()

    ours = cl.plugin_config(listconf, listconf["plugins"][0], prev_result=res)
    assert plugin.execute("CHECK", ours, container_id="dchain", netns=pod, ifname="eth0", node_netns=node) == {}
    cl.execute_conflist("DEL", listconf, **kw)
    assert f"[{ip6}]:8000" not in s.sh(node, "ip6tables-save", "-t", "nat").stdout
    assert not [n for n in os.listdir(listconf["plugins"][0]["ipam"]["dataDir"]) if ":" in n or n[0].isdigit()]
