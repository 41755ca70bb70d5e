"""CNI spec 1.1.0 conformance of the `labkit-cni` executable, driven as a runtime would:
environment variables + config on stdin, results and errors parsed from stdout.

Every test runs twice: against the console script pip installs (the plugin runs in the exec'd
process) and against the launcher labkit puts in a CNI bin dir, which hands the call to a
running labkit CNI server; a runtime must not be able to tell the two apart. The tests of an
attachment run in both of the plugin's modes (ptp and bridge); the error cases, which fail
before any attachment, once."""

from __future__ import annotations

import concurrent.futures
import fcntl
import ipaddress
import json
import os
import re
import subprocess

import pytest

from labkit.cni import plugin
from labkit.cni.errors import CNIError
from labkit.topology.kinds import CNI_MODES

from .test_cni_helpers import LABKIT_CNI, CNIServer, Scratch, needs_root, node_with_pods, scratch_with

pytestmark = [pytest.mark.integration, needs_root]

MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
ERROR_KEYS = {"cniVersion", "code", "msg", "details"}



@pytest.fixture(scope="module", params=["script", "server"])
def executable(request):
    if request.param == "script":
        yield LABKIT_CNI
        return
    server = CNIServer()
    try:
        yield server.launcher
    finally:
        server.stop()


@pytest.fixture(scope="module", params=CNI_MODES)
def mode(request) -> str:
    return request.param


@pytest.fixture
def scratch(executable, mode):
    yield from scratch_with(executable, mode)


@pytest.fixture
def any_scratch(executable):
    """For what fails before the mode matters: the plugin's default mode."""
    yield from scratch_with(executable)


def host_side(res: dict) -> dict:
    """The node's veth in an ADD result: just before the pod's interface (the bridge, if any, comes first)."""
    return res["interfaces"][-2]


def assert_error(rc, out, raw, err, code):
    assert rc != 0, raw
    assert isinstance(out, dict), raw
    assert set(out) == ERROR_KEYS, out
    assert out["code"] == code, out
    assert isinstance(out["msg"], str) and out["msg"], out
    assert isinstance(out["details"], str)
    assert "Traceback" not in raw + err
    assert raw.count("\n") == 1  # exactly one JSON document


def link_json(s: Scratch, ns: str, name: str) -> dict | None:
    r = s.sh(ns, "ip", "-j", "-d", "addr", "show", "dev", name, check=False)
    return json.loads(r.stdout)[0] if r.returncode == 0 else None


def leases(conf) -> dict[str, str]:
    """The lease files of the config's dataDir (IPv4 and IPv6 addresses) and what each holds."""
    d = conf["ipam"]["dataDir"]
    if not os.path.isdir(d):
        return {}
    return {n: open(os.path.join(d, n), newline="").read() for n in os.listdir(d)
            if re.fullmatch(r"\d+\.\d+\.\d+\.\d+|[0-9a-f:]*:[0-9a-f:]*", n)}


# ---------------------------------------------------------------------------


def test_version(scratch):
    rc, out, raw, err = scratch.cni("VERSION", None, raw_stdin=b"", ifname=None, cni_path=None)
    assert rc == 0, raw + err
    assert out["cniVersion"] == "1.1.0"
    assert "1.1.0" in out["supportedVersions"] and "1.0.0" in out["supportedVersions"]
    assert set(out) == {"cniVersion", "supportedVersions"}
    rc, out, raw, _ = scratch.cni("VERSION", {"cniVersion": "1.0.0"})
    assert rc == 0 and out["cniVersion"] == "1.0.0"


def test_add_check_del_lifecycle(scratch):
    s = scratch
    node, (pod,), conf = node_with_pods(s, 1)
    conf["dns"] = {"nameservers": ["10.96.0.10"], "search": ["default.svc.cluster.local"]}
    conf["mtu"] = 1400
    if s.mode == "bridge":  # off, as on a node that never ran kubenet: ADD turns it on for NetworkPolicy
        s.sh(node, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0")
    rc, res, raw, err = s.cni("ADD", conf, node=node, container_id="ctr-a1", netns=pod)
    assert rc == 0, raw + err
    assert err == ""

    # the result, field by field
    assert set(res) == {"cniVersion", "interfaces", "ips", "routes", "dns"}
    assert res["cniVersion"] == "1.1.0"
    bridged = s.mode == "bridge"
    if bridged:  # as the reference bridge plugin reports it: bridge, node veth, pod interface
        br, host, ctr = res["interfaces"]
        assert br == {"name": "cni0", "mac": "0e:62:0a:f4:07:01"}  # the gateway's bytes: stable for the pods' ARP
    else:
        host, ctr = res["interfaces"]
    assert set(host) == {"name", "mac", "mtu"} and "sandbox" not in host
    assert re.fullmatch(r"veth[0-9a-f]{8}", host["name"])
    assert host["name"] == plugin.host_veth_name("ctr-a1", "eth0")
    assert MAC_RE.match(host["mac"]) and host["mtu"] == 1400
    assert set(ctr) == {"name", "mac", "sandbox", "mtu"}
    assert ctr["name"] == "eth0" and ctr["sandbox"] == pod and MAC_RE.match(ctr["mac"])
    (ip,) = res["ips"]
    assert set(ip) == {"address", "gateway", "interface"}
    assert ip["interface"] == len(res["interfaces"]) - 1 and ip["gateway"] == "10.244.7.1"
    addr = ipaddress.ip_interface(ip["address"])
    plen = 24 if bridged else 32  # bridged pods share the podCIDR's subnet; routed ones are alone
    assert addr.network.prefixlen == plen and addr.ip in ipaddress.ip_network("10.244.7.0/24")
    assert res["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.7.1"}]
    assert res["dns"] == conf["dns"]

    # ... and against the kernel
    pl = link_json(s, pod, "eth0")
    assert pl["address"] == ctr["mac"] and pl["mtu"] == 1400 and "UP" in pl["flags"]
    assert [(a["local"], a["prefixlen"]) for a in pl["addr_info"] if a["family"] == "inet"] == \
        [(str(addr.ip), plen)]
    routes = json.loads(s.sh(pod, "ip", "-j", "route").stdout)
    assert {"dst": "default", "gateway": "10.244.7.1", "dev": "eth0"}.items() <= routes[0].items()
    if bridged:
        assert any(r["dst"] == "10.244.7.0/24" and r.get("scope") == "link" for r in routes)
    else:
        assert any(r["dst"] == "10.244.7.1" and r.get("scope") == "link" for r in routes)
    hl = link_json(s, node, host["name"])
    assert hl["address"] == host["mac"] and "UP" in hl["flags"]
    assert hl["ifalias"].startswith("labkit-cni ")
    nroutes = json.loads(s.sh(node, "ip", "-j", "route").stdout)
    if bridged:  # a port of cni0 with hairpin on; cni0 holds the gateway; the pods are on-link through it
        assert hl["master"] == "cni0" and hl["linkinfo"]["info_slave_data"]["hairpin"] is True
        bl = link_json(s, node, "cni0")
        assert bl["linkinfo"]["info_kind"] == "bridge" and bl["address"] == br["mac"] and "UP" in bl["flags"]
        assert ("10.244.7.1", 24) in [(a["local"], a["prefixlen"]) for a in bl["addr_info"]]
        assert any(r["dst"] == "10.244.7.0/24" and r["dev"] == "cni0" for r in nroutes)
        assert s.sh(node, "cat", "/proc/sys/net/bridge/bridge-nf-call-iptables").stdout.strip() == "1"
    else:
        assert any(r["dst"] == str(addr.ip) and r["dev"] == host["name"] for r in nroutes)
        lo = link_json(s, node, "lo")
        assert ("10.244.7.1", 32) in [(a["local"], a["prefixlen"]) for a in lo["addr_info"]]
    assert s.sh(node, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    assert leases(conf) == {str(addr.ip): "ctr-a1\r\neth0"}
    assert s.ping(pod, "10.244.7.1")

    # CHECK with the ADD result as prevResult
    rc, out, raw, err = s.cni("CHECK", {**conf, "prevResult": res}, node=node,
                              container_id="ctr-a1", netns=pod)
    assert (rc, out) == (0, None), raw + err
    # CHECK without prevResult is a config error
    rc, out, raw, err = s.cni("CHECK", conf, node=node, container_id="ctr-a1", netns=pod)
    assert_error(rc, out, raw, err, 7)

    # ADD on an existing attachment is an error and changes nothing
    rc, out, raw, err = s.cni("ADD", conf, node=node, container_id="ctr-a1", netns=pod)
    assert_error(rc, out, raw, err, 101)
    assert len(leases(conf)) == 1 and s.ping(pod, "10.244.7.1")

    # CHECK notices a broken attachment
    s.sh(pod, "ip", "addr", "flush", "dev", "eth0")
    rc, out, raw, err = s.cni("CHECK", {**conf, "prevResult": res}, node=node,
                              container_id="ctr-a1", netns=pod)
    assert_error(rc, out, raw, err, 104)

    # DEL, DEL again, DEL without netns
    for netns in (pod, pod, None):
        rc, out, raw, err = s.cni("DEL", {**conf, "prevResult": res}, node=node,
                                  container_id="ctr-a1", netns=netns)
        assert (rc, out, err) == (0, None, ""), raw + err
    assert leases(conf) == {}
    assert link_json(s, node, host["name"]) is None
    assert link_json(s, pod, "eth0") is None
    # 10.244.7.1 stays on lo (cni0): other pods of the node still use it (idempotent ADD)
    rc, res2, raw, err = s.cni("ADD", conf, node=node, container_id="ctr-a2", netns=pod)
    assert rc == 0, raw + err
    assert res2["ips"][0]["address"] != res["ips"][0]["address"]  # round robin, not reuse
    rc, *_ = s.cni("DEL", conf, node=node, container_id="ctr-a2", netns=pod)
    assert rc == 0


def test_del_when_netns_is_gone(scratch):
    s = scratch
    node, (pod,), conf = node_with_pods(s, 1)
    rc, res, raw, err = s.cni("ADD", conf, node=node, container_id="gone1", netns=pod)
    assert rc == 0, raw + err
    name = pod.rsplit("/", 1)[1]
    subprocess.run(["ip", "netns", "del", name], check=True)
    s.namespaces.remove(name)
    for _ in range(2):
        rc, out, raw, err = s.cni("DEL", conf, node=node, container_id="gone1", netns=pod)
        assert (rc, out) == (0, None), raw + err
    assert leases(conf) == {}
    assert link_json(s, node, host_side(res)["name"]) is None


def test_pods_ping_each_other_through_node(scratch):
    s = scratch
    node, pods, conf = node_with_pods(s, 2)
    ips = []
    for i, pod in enumerate(pods):
        rc, res, raw, err = s.cni("ADD", conf, node=node, container_id=f"pp{i}", netns=pod)
        assert rc == 0, raw + err
        ips.append(res["ips"][0]["address"].split("/")[0])
    assert ips[0] != ips[1]
    assert s.ping(pods[0], ips[1]) and s.ping(pods[1], ips[0])
    srv = s.tcp_server(pods[1], 7000)
    assert s.tcp_client(pods[0], ips[1], 7000) == "hello"
    assert srv.stdout.readline().strip() == ips[0]  # no NAT: the peer sees the pod's own IP
    for i, pod in enumerate(pods):
        assert s.cni("DEL", conf, node=node, container_id=f"pp{i}", netns=pod)[0] == 0
    assert leases(conf) == {}


def test_status(scratch):
    s = scratch
    node, (pod,), conf = node_with_pods(s, 1, subnet="10.244.7.0/29",
                                        rangeStart="10.244.7.2", rangeEnd="10.244.7.2")
    rc, out, raw, err = s.cni("STATUS", conf, container_id=None, ifname=None, cni_path=None)
    assert (rc, out) == (0, None), raw + err
    assert s.cni("ADD", conf, node=node, container_id="st1", netns=pod)[0] == 0
    rc, out, raw, err = s.cni("STATUS", conf, container_id=None, ifname=None, cni_path=None)
    assert_error(rc, out, raw, err, 50)
    # the pool is full: the next ADD fails with our own code and leaves nothing behind
    pod2 = s.netns("extra")
    rc, out, raw, err = s.cni("ADD", conf, node=node, container_id="st2", netns=pod2)
    assert_error(rc, out, raw, err, 102)
    assert link_json(s, pod2, "eth0") is None
    assert link_json(s, node, plugin.host_veth_name("st2", "eth0")) is None
    assert s.cni("DEL", conf, node=node, container_id="st1", netns=pod)[0] == 0
    assert s.cni("STATUS", conf, container_id=None, ifname=None, cni_path=None)[0] == 0


def test_gc_removes_what_is_not_valid(scratch):
    s = scratch
    node, pods, conf = node_with_pods(s, 3)
    results = []
    for i, pod in enumerate(pods):
        rc, res, raw, err = s.cni("ADD", conf, node=node, container_id=f"gc{i}", netns=pod)
        assert rc == 0, raw + err
        results.append(res)
    gc_conf = {**conf, "cni.dev/valid-attachments": [{"containerID": "gc0", "ifname": "eth0"}]}
    rc, out, raw, err = s.cni("GC", gc_conf, node=node, container_id=None, ifname=None)
    assert (rc, out) == (0, None), raw + err
    assert list(leases(conf).values()) == ["gc0\r\neth0"]
    assert link_json(s, node, host_side(results[0])["name"]) is not None
    for res in results[1:]:
        assert link_json(s, node, host_side(res)["name"]) is None
    assert s.ping(pods[0], "10.244.7.1")
    # GC with nothing valid clears the network
    rc, *_ = s.cni("GC", {**conf, "cni.dev/valid-attachments": []}, node=node,
                   container_id=None, ifname=None)
    assert rc == 0 and leases(conf) == {}
    assert link_json(s, node, host_side(results[0])["name"]) is None


def test_concurrent_adds_get_distinct_ips(scratch):
    s = scratch
    n = 20
    node, pods, conf = node_with_pods(s, n)

    def add(i):
        return s.cni("ADD", conf, node=node, container_id=f"par{i}", netns=pods[i])

    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        outs = list(ex.map(add, range(n)))
    assert all(o[0] == 0 for o in outs), [o[2] + o[3] for o in outs if o[0]]
    ips = {o[1]["ips"][0]["address"] for o in outs}
    assert len(ips) == n
    assert len(leases(conf)) == n

    def delete(i):
        return s.cni("DEL", conf, node=node, container_id=f"par{i}", netns=pods[i])

    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        assert all(o[0] == 0 for o in ex.map(delete, range(n)))
    assert leases(conf) == {}


def test_concurrent_in_process_adds(scratch):
    s = scratch
    n = 20
    node, pods, conf = node_with_pods(s, n)

    def add(i):
        return plugin.execute("ADD", conf, container_id=f"ip{i}", netns=pods[i], ifname="eth0",
                              node_netns=node)

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(add, range(n)))
    assert len({r["ips"][0]["address"] for r in results}) == n
    assert s.ping(pods[0], results[-1]["ips"][0]["address"].split("/")[0])

    def delete(i):
        return plugin.execute("DEL", conf, container_id=f"ip{i}", netns=pods[i], ifname="eth0",
                              node_netns=node)

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        assert list(ex.map(delete, range(n))) == [{}] * n
    assert leases(conf) == {}
    links = s.sh(node, "ip", "-o", "link").stdout
    assert "labkit-cni" not in links and "veth" not in links


def test_lock_held_gives_try_again_later(scratch):
    s = scratch
    node, (pod,), conf = node_with_pods(s, 1, lockTimeout=0.3)
    os.makedirs(conf["ipam"]["dataDir"], exist_ok=True)
    with open(os.path.join(conf["ipam"]["dataDir"], "lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        rc, out, raw, err = s.cni("ADD", conf, node=node, container_id="lk1", netns=pod)
    assert_error(rc, out, raw, err, 11)
    assert link_json(s, pod, "eth0") is None


def test_node_netns_env_and_in_process_api(scratch):
    s = scratch
    node, pods, conf = node_with_pods(s, 2)
    # the executable entering the node namespace itself
    rc, res, raw, err = s.cni("ADD", conf, container_id="env1", netns=pods[0],
                              extra_env={"LABKIT_CNI_NODE_NETNS": node})
    assert rc == 0, raw + err
    host = host_side(res)["name"]
    assert link_json(s, node, host) is not None
    assert subprocess.run(["ip", "link", "show", host], capture_output=True).returncode != 0
    # the in-process API, from this (host namespace) process
    res2 = plugin.execute("ADD", conf, container_id="api1", netns=pods[1], ifname="eth0",
                          node_netns=node)
    host2 = host_side(res2)["name"]
    assert link_json(s, node, host2) is not None
    assert subprocess.run(["ip", "link", "show", host2], capture_output=True).returncode != 0
    assert s.ping(pods[1], res["ips"][0]["address"].split("/")[0])
    with pytest.raises(CNIError) as ei:
        plugin.execute("ADD", conf, container_id="api1", netns=pods[1], ifname="eth0",
                       node_netns=node)
    assert ei.value.code == 101
    assert plugin.execute("CHECK", {**conf, "prevResult": res2}, container_id="api1",
                          netns=pods[1], ifname="eth0", node_netns=node) == {}
    assert plugin.execute("DEL", conf, container_id="api1", netns=pods[1], ifname="eth0",
                          node_netns=node) == {}
    assert link_json(s, node, host2) is None
    rc, *_ = s.cni("DEL", conf, container_id="env1", netns=pods[0],
                   extra_env={"LABKIT_CNI_NODE_NETNS": node})
    assert rc == 0 and leases(conf) == {}


def test_older_cni_versions(scratch):
    s = scratch
    node, pods, conf = node_with_pods(s, 2)
    rc, res, raw, err = s.cni("ADD", {**conf, "cniVersion": "0.4.0"}, node=node,
                              container_id="old1", netns=pods[0])
    assert rc == 0, raw + err
    assert res["cniVersion"] == "0.4.0" and res["ips"][0]["version"] == "4"
    rc, res, raw, err = s.cni("ADD", {**conf, "cniVersion": "1.0.0"}, node=node,
                              container_id="old2", netns=pods[1])
    assert rc == 0 and "version" not in res["ips"][0]
    assert "mtu" not in host_side(res)
    for i, pod in enumerate(pods):
        assert s.cni("DEL", conf, node=node, container_id=f"old{i + 1}", netns=pod)[0] == 0


# ---------------------------------------------------------------------------
# every error path: right code, clear msg, never a traceback


GOOD = {"cniVersion": "1.1.0", "name": "errs", "type": "labkit-cni",
        "ipam": {"subnet": "10.244.9.0/24"}}


def _cfg(**over):
    conf = json.loads(json.dumps(GOOD))
    ipam = over.pop("ipam", None)
    conf.update(over)
    if ipam is not None:
        conf["ipam"].update(ipam)
    return conf


ENV_CASES = [
    ("no CNI_COMMAND", None, {}, 4),
    ("unknown command", "FROB", {}, 4),
    ("ADD without CNI_CONTAINERID", "ADD", {"container_id": None}, 4),
    ("ADD without CNI_NETNS", "ADD", {"netns": None}, 4),
    ("ADD without CNI_IFNAME", "ADD", {"ifname": None}, 4),
    ("ADD without CNI_PATH", "ADD", {"cni_path": None}, 4),
    ("DEL without CNI_CONTAINERID", "DEL", {"container_id": None}, 4),
    ("CHECK without CNI_NETNS", "CHECK", {"netns": None}, 4),
    ("GC without CNI_PATH", "GC", {"cni_path": None}, 4),
    ("bad container id", "ADD", {"container_id": "-bad id!"}, 4),
    ("ifname too long", "ADD", {"ifname": "a-very-long-ifname0"}, 4),
    ("ifname with slash", "ADD", {"ifname": "eth/0"}, 4),
    ("bad CNI_ARGS", "ADD", {"extra_env": {"CNI_ARGS": "IgnoreUnknown"}}, 4),
]


@pytest.mark.parametrize(("what", "command", "over", "code"), ENV_CASES,
                         ids=[c[0] for c in ENV_CASES])
def test_environment_errors(any_scratch, what, command, over, code):
    scratch = any_scratch
    kw = {"container_id": "e1", "netns": "/run/netns/does-not-matter", "ifname": "eth0",
          "cni_path": "/usr/lib/cni"}
    kw.update(over)
    conf = _cfg(ipam={"dataDir": f"{scratch.tmpdir()}/ipam"})
    rc, out, raw, err = scratch.cni(command, conf, **kw)
    assert_error(rc, out, raw, err, code)


CONFIG_CASES = [
    ("malformed JSON", b'{"cniVersion": "1.1.0", "name": ', 6),
    ("truncated object", b"{", 6),
    ("missing colon", b'{"cniVersion" "1.1.0"}', 6),
    ("empty stdin", b"", 6),
    ("not an object", b'["cniVersion"]', 6),
    ("binary garbage", b"\xff\xfe\x00garbage", 6),
    ("unsupported version", _cfg(cniVersion="9.9.9"), 1),
    ("missing version", {k: v for k, v in GOOD.items() if k != "cniVersion"}, 7),
    ("bad name", _cfg(name="bad name!"), 7),
    ("unsupported ipam type", _cfg(ipam={"type": "dhcp"}), 2),
    ("unsupported mode", _cfg(mode="macvlan"), 2),
    ("bad bridge name", _cfg(mode="bridge", bridge="a-very-long-bridge0"), 7),
    ("hairpinMode not a bool", _cfg(mode="bridge", hairpinMode="on"), 7),
    ("bad subnet", _cfg(ipam={"subnet": "10.244.300.0/24"}), 7),
    ("missing subnet", _cfg(ipam={"subnet": None}), 7),
    ("subnet too small", _cfg(ipam={"subnet": "10.244.9.0/31"}), 7),
    ("gateway outside subnet", _cfg(ipam={"gateway": "10.1.1.1"}), 7),
    ("bad mtu", _cfg(mtu="big"), 7),
    ("mtu out of range", _cfg(mtu=20), 7),
    ("ipam not an object", _cfg(ipam=None) | {"ipam": "host-local"}, 7),
    ("bad routes", _cfg(ipam={"routes": [{"gw": "10.244.9.1"}]}), 7),
    ("bad dataDir", _cfg(ipam={"dataDir": "relative/dir"}), 7),
    ("bad lockTimeout", _cfg(ipam={"lockTimeout": "soon"}), 7),
    ("prevResult not an object", _cfg(prevResult=[1]), 7),
]


@pytest.mark.parametrize(("what", "conf", "code"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_errors(any_scratch, what, conf, code):
    s = any_scratch
    node, (pod,), _ = node_with_pods(s, 1)
    if isinstance(conf, dict):
        rc, out, raw, err = s.cni("ADD", conf, node=node, container_id="c1", netns=pod)
    else:
        rc, out, raw, err = s.cni("ADD", None, raw_stdin=conf, node=node, container_id="c1",
                                  netns=pod)
    assert_error(rc, out, raw, err, code)
    assert link_json(s, pod, "eth0") is None


def test_runtime_errors(scratch):
    s = scratch
    node, (pod,), conf = node_with_pods(s, 1)
    # the container's namespace does not exist
    rc, out, raw, err = s.cni("ADD", conf, node=node, container_id="r1",
                              netns=f"/run/netns/{s.prefix}-nope")
    assert_error(rc, out, raw, err, 3)
    # CHECK of a namespace that is gone
    rc, out, raw, err = s.cni("CHECK", {**conf, "prevResult": {
        "cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
        "ips": [{"address": "10.244.7.9/32", "interface": 0}]}}, node=node,
        container_id="r1", netns=f"/run/netns/{s.prefix}-nope")
    assert_error(rc, out, raw, err, 3)
    # I/O failure: the IPAM dir cannot be created
    blocker = os.path.join(s.tmpdir(), "file")
    open(blocker, "w").close()
    bad = {**conf, "ipam": {**conf["ipam"], "dataDir": f"{blocker}/ipam"}}
    rc, out, raw, err = s.cni("ADD", bad, node=node, container_id="r1", netns=pod)
    assert_error(rc, out, raw, err, 5)
    assert link_json(s, pod, "eth0") is None
    # the error JSON carries the config's cniVersion
    rc, out, raw, err = s.cni("ADD", {**conf, "cniVersion": "1.0.0", "mtu": 1},
                              node=node, container_id="r1", netns=pod)
    assert_error(rc, out, raw, err, 7)
    assert out["cniVersion"] == "1.0.0"


# ---------------------------------------------------------------------------
# IPv6 and dual-stack: host-local's range sets, one address of each family per pod

V4_SUBNET, V6_SUBNET = "10.244.7.0/24", "fd00:10:244:7::/64"
V4_GW, V6_GW = "10.244.7.1", "fd00:10:244:7::1"


@pytest.fixture
def ptp_scratch(executable):
    yield from scratch_with(executable, "ptp")


def with_ranges(s: Scratch, n_pods: int, *subnets: str, **ipam):
    """node_with_pods with `ranges`: a range set per subnet, in order."""
    node, pods, conf = node_with_pods(s, n_pods)
    conf["ipam"] = {"ranges": [[{"subnet": sub}] for sub in subnets], "dataDir": conf["ipam"]["dataDir"], **ipam}
    return node, pods, conf


def addrs_of(s: Scratch, ns: str, dev: str, family: str) -> list[dict]:
    return [a for a in link_json(s, ns, dev)["addr_info"] if a["family"] == family]


def routes6(s: Scratch, ns: str) -> list[dict]:
    return json.loads(s.sh(ns, "ip", "-6", "-j", "route").stdout)


def test_dual_stack_lifecycle(ptp_scratch):
    s = ptp_scratch
    node, (pod,), conf = with_ranges(s, 1, V4_SUBNET, V6_SUBNET, routes=[{"dst": "fd00:10:96::/112"}])
    rc, res, raw, err = s.cni("ADD", conf, node=node, container_id="ds1", netns=pod)
    assert rc == 0, raw + err
    host, ctr = res["interfaces"]

    # the result: both addresses (the config's order), a gateway and a default route each
    ip4, ip6 = res["ips"]
    assert ip4["gateway"] == V4_GW and ip6["gateway"] == V6_GW
    assert ip4["interface"] == ip6["interface"] == 1 and set(ip6) == {"address", "gateway", "interface"}
    a4, a6 = ipaddress.ip_interface(ip4["address"]), ipaddress.ip_interface(ip6["address"])
    assert a4.ip in ipaddress.ip_network(V4_SUBNET) and a4.network.prefixlen == 32
    assert a6.ip in ipaddress.ip_network(V6_SUBNET) and a6.network.prefixlen == 128  # routed, like IPv4's /32
    assert res["routes"] == [{"dst": "0.0.0.0/0", "gw": V4_GW}, {"dst": "::/0", "gw": V6_GW},
                             {"dst": "fd00:10:96::/112", "gw": V6_GW}]

    # ... against the kernel: the pod
    assert [(a["local"], a["prefixlen"]) for a in addrs_of(s, pod, "eth0", "inet")] == [(str(a4.ip), 32)]
    six = [a for a in addrs_of(s, pod, "eth0", "inet6") if a["scope"] == "global"]
    assert [(a["local"], a["prefixlen"]) for a in six] == [(str(a6.ip), 128)]
    assert not any(a.get("tentative") for a in addrs_of(s, pod, "eth0", "inet6"))  # usable now: no DAD
    r6 = routes6(s, pod)
    default6 = next(r for r in r6 if r["dst"] == "default")
    assert (default6["gateway"], default6["dev"]) == (V6_GW, "eth0")
    assert any(r["dst"] == V6_GW and r["dev"] == "eth0" for r in r6)
    assert any(r["dst"] == "fd00:10:96::/112" and r.get("gateway") == V6_GW for r in r6)
    assert s.sh(pod, "cat", "/proc/sys/net/ipv6/conf/eth0/accept_ra").stdout.strip() == "0"
    # ... the node: the gateway's /128 on the pod's veth (NDP answers for it there), a /128 to the pod
    assert (V6_GW, 128) in [(a["local"], a["prefixlen"]) for a in addrs_of(s, node, host["name"], "inet6")]
    assert any(r["dst"] == str(a6.ip) and r["dev"] == host["name"] for r in routes6(s, node))
    assert s.sh(node, "cat", "/proc/sys/net/ipv6/conf/all/forwarding").stdout.strip() == "1"
    assert s.sh(node, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    assert leases(conf) == {str(a4.ip): "ds1\r\neth0", str(a6.ip): "ds1\r\neth0"}
    assert s.ping(pod, V6_GW) and s.ping(pod, V4_GW)

    # CHECK passes, and notices a missing IPv6 address or IPv6 default route
    check = {**conf, "prevResult": res}
    assert s.cni("CHECK", check, node=node, container_id="ds1", netns=pod)[:2] == (0, None)
    s.sh(pod, "ip", "-6", "route", "del", "default")
    rc, out, raw, err = s.cni("CHECK", check, node=node, container_id="ds1", netns=pod)
    assert_error(rc, out, raw, err, 104)
    assert "IPv6 default route" in out["msg"]
    s.sh(pod, "ip", "-6", "route", "add", "default", "via", V6_GW, "dev", "eth0")
    assert s.cni("CHECK", check, node=node, container_id="ds1", netns=pod)[0] == 0
    s.sh(node, "ip", "-6", "addr", "del", f"{V6_GW}/128", "dev", host["name"])
    rc, out, raw, err = s.cni("CHECK", check, node=node, container_id="ds1", netns=pod)
    assert_error(rc, out, raw, err, 104)
    assert f"lacks the gateway address {V6_GW}" in out["msg"]
    s.sh(node, "ip", "-6", "addr", "add", f"{V6_GW}/128", "dev", host["name"], "nodad")
    assert s.cni("CHECK", check, node=node, container_id="ds1", netns=pod)[0] == 0
    s.sh(pod, "ip", "-6", "addr", "del", f"{a6.ip}/128", "dev", "eth0")
    rc, out, raw, err = s.cni("CHECK", check, node=node, container_id="ds1", netns=pod)
    assert_error(rc, out, raw, err, 104)
    assert str(a6.ip) in out["msg"]

    # DEL: both leases, the veth and with it the node's routes and the gateway's /128 on it
    for netns in (pod, pod, None):
        rc, out, raw, err = s.cni("DEL", check, node=node, container_id="ds1", netns=netns)
        assert (rc, out, err) == (0, None, ""), raw + err
    assert leases(conf) == {}
    assert link_json(s, node, host["name"]) is None and link_json(s, pod, "eth0") is None
    assert not any(r["dst"] == str(a6.ip) for r in routes6(s, node))
    assert os.listdir(os.path.join(conf["ipam"]["dataDir"], "attachments")) == []  # the index entry too


def test_dual_stack_pods_reach_each_other_over_ipv6(ptp_scratch):
    s = ptp_scratch
    node, pods, conf = with_ranges(s, 2, V4_SUBNET, V6_SUBNET)
    six = []
    for i, pod in enumerate(pods):
        rc, res, raw, err = s.cni("ADD", conf, node=node, container_id=f"d6p{i}", netns=pod)
        assert rc == 0, raw + err
        six.append(res["ips"][1]["address"].split("/")[0])
    assert six[0] != six[1]
    # at once, every packet: no address is tentative on either end, nor the node's veths' link-locals
    assert s.ping(pods[0], six[1]) and s.ping(pods[1], six[0])
    srv = s.tcp_server(pods[1], 7006, "::")
    assert s.tcp_client(pods[0], six[1], 7006) == "hello"
    assert srv.stdout.readline().strip() == six[0]  # no NAT: the peer sees the pod's own IPv6 address
    for i, pod in enumerate(pods):
        assert s.cni("DEL", conf, node=node, container_id=f"d6p{i}", netns=pod)[0] == 0
    assert leases(conf) == {}


def test_ipv6_only_and_v6_first(ptp_scratch):
    s = ptp_scratch
    node, pods, conf = with_ranges(s, 2, V6_SUBNET)
    rc, res, raw, err = s.cni("ADD", conf, node=node, container_id="v6o", netns=pods[0])
    assert rc == 0, raw + err
    (ip,) = res["ips"]
    assert ip["gateway"] == V6_GW and res["routes"] == [{"dst": "::/0", "gw": V6_GW}]
    assert addrs_of(s, pods[0], "eth0", "inet") == []
    assert s.ping(pods[0], V6_GW)
    assert s.cni("CHECK", {**conf, "prevResult": res}, node=node, container_id="v6o", netns=pods[0])[0] == 0
    # IPv6 first: the result lists it first (the preferred family of the cluster)
    conf2 = {**conf, "name": conf["name"] + "2", "ipam": {
        **conf["ipam"], "ranges": [[{"subnet": "fd00:10:244:8::/64"}], [{"subnet": "10.244.8.0/24"}]]}}
    rc, res2, raw, err = s.cni("ADD", conf2, node=node, container_id="v6f", netns=pods[1])
    assert rc == 0, raw + err
    assert [ipaddress.ip_interface(i["address"]).version for i in res2["ips"]] == [6, 4]
    assert res2["routes"] == [{"dst": "::/0", "gw": "fd00:10:244:8::1"}, {"dst": "0.0.0.0/0", "gw": "10.244.8.1"}]
    assert s.ping(pods[1], "fd00:10:244:8::1") and s.ping(pods[1], "10.244.8.1")
    assert s.cni("DEL", conf, node=node, container_id="v6o", netns=pods[0])[0] == 0
    assert s.cni("DEL", conf2, node=node, container_id="v6f", netns=pods[1])[0] == 0
    assert leases(conf) == {}


def test_dual_stack_exhaustion_gives_back_both(ptp_scratch):
    """A /126 holds two pods; the third ADD fails whole: its IPv4 lease goes back, nothing is wired."""
    s = ptp_scratch
    node, pods, conf = with_ranges(s, 3, V4_SUBNET, "fd00:10:244:7::/126")
    for i in range(2):
        assert s.cni("ADD", conf, node=node, container_id=f"ex{i}", netns=pods[i])[0] == 0
    rc, out, raw, err = s.cni("STATUS", conf, container_id=None, ifname=None, cni_path=None)
    assert_error(rc, out, raw, err, 50)
    rc, out, raw, err = s.cni("ADD", conf, node=node, container_id="ex2", netns=pods[2])
    assert_error(rc, out, raw, err, 102)
    assert "fd00:10:244:7::1-fd00:10:244:7::3" in out["msg"]
    assert sorted(leases(conf).values()) == ["ex0\r\neth0"] * 2 + ["ex1\r\neth0"] * 2
    assert link_json(s, pods[2], "eth0") is None
    assert link_json(s, node, plugin.host_veth_name("ex2", "eth0")) is None
    assert s.cni("DEL", conf, node=node, container_id="ex0", netns=pods[0])[0] == 0
    rc, res, raw, err = s.cni("ADD", conf, node=node, container_id="ex2", netns=pods[2])
    assert rc == 0, raw + err
    for i in (1, 2):
        assert s.cni("DEL", conf, node=node, container_id=f"ex{i}", netns=pods[i])[0] == 0
    assert leases(conf) == {}


def test_dual_stack_in_process_and_old_versions(ptp_scratch):
    s = ptp_scratch
    node, pods, conf = with_ranges(s, 2, V4_SUBNET, V6_SUBNET)
    res = plugin.execute("ADD", conf, container_id="dip", netns=pods[0], ifname="eth0", node_netns=node)
    assert [ipaddress.ip_interface(i["address"]).version for i in res["ips"]] == [4, 6]
    assert s.ping(pods[0], V6_GW)
    assert plugin.execute("CHECK", {**conf, "prevResult": res}, container_id="dip", netns=pods[0],
                          ifname="eth0", node_netns=node) == {}
    rc, old, raw, err = s.cni("ADD", {**conf, "cniVersion": "0.4.0"}, node=node, container_id="dold",
                              netns=pods[1])
    assert rc == 0, raw + err
    assert [i["version"] for i in old["ips"]] == ["4", "6"]
    assert plugin.execute("DEL", conf, container_id="dip", netns=pods[0], ifname="eth0", node_netns=node) == {}
    assert s.cni("DEL", conf, node=node, container_id="dold", netns=pods[1])[0] == 0
    assert leases(conf) == {}

