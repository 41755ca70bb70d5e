"""Result shapes, names, templates and the netlink encoder (no root)."""

from __future__ import annotations

import json
import os
import struct

import pytest

from labkit.cni import backends as bk
from labkit.cni import config as cfg
from labkit.cni import conflist as cl
from labkit.net import netlink as nl
from labkit.cni import plugin
from labkit.cni.errors import CNIError


def test_host_veth_name():
    a = plugin.host_veth_name("abc", "eth0")
    assert a == plugin.host_veth_name("abc", "eth0")
    assert len(a) <= 15 and a.startswith("veth") and int(a[4:], 16) >= 0 and len(a) == 12
    assert a != plugin.host_veth_name("abc", "eth1") != plugin.host_veth_name("abd", "eth0")


def test_error_json_shape():
    e = CNIError(7, "bad", "very bad")
    assert e.to_dict("1.0.0") == {"cniVersion": "1.0.0", "code": 7, "msg": "bad",
                                  "details": "very bad"}
    assert CNIError(3, "x").to_dict()["details"] == ""


def test_version_info():
    v = plugin.execute("VERSION", None)
    assert v["cniVersion"] == "1.1.0" and v["supportedVersions"][-1] == "1.1.0"
    assert plugin.execute("VERSION", {"cniVersion": "0.4.0"})["cniVersion"] == "0.4.0"


def test_merge_prev_result_offsets_interface_indices():
    c = cfg.parse({"cniVersion": "1.0.0", "name": "n", "ipam": {"subnet": "10.0.0.0/24"},
                   "prevResult": {"cniVersion": "1.0.0",
                                  "interfaces": [{"name": "a"}, {"name": "b", "sandbox": "/x"}],
                                  "ips": [{"address": "10.9.0.2/24", "interface": 1}],
                                  "dns": {"nameservers": ["1.1.1.1"]}}})
    ours = {"cniVersion": "1.0.0",
            "interfaces": [{"name": "veth1"}, {"name": "net1", "sandbox": "/x"}],
            "ips": [{"address": "10.0.0.2/32", "gateway": "10.0.0.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}], "dns": {}}
    out = plugin._merge_prev(c, ours)
    assert [i["name"] for i in out["interfaces"]] == ["a", "b", "veth1", "net1"]
    assert [i["interface"] for i in out["ips"]] == [1, 3]
    assert out["dns"] == {"nameservers": ["1.1.1.1"]}


def test_unknown_command_and_bad_json():
    with pytest.raises(CNIError) as ei:
        plugin.execute("FROB", {})
    assert ei.value.code == 4
    with pytest.raises(CNIError) as ei:
        plugin.execute("STATUS", b"{")
    assert ei.value.code == 6


def test_render_conflist_defaults_and_chain():
    text = cl.render_conflist("lab-1", "10.244.2.0/24")
    c = json.loads(text)
    assert c["cniVersion"] == "1.1.0" and c["name"] == "lab-1"
    (p,) = c["plugins"]
    assert p == {"type": "labkit-cni", "mode": "ptp",
                 "ipam": {"subnet": "10.244.2.0/24", "gateway": "10.244.2.1",
                          "dataDir": "/var/lib/cni/networks/lab-1"}}
    assert cfg.parse({**p, "name": "lab-1", "cniVersion": "1.1.0"}).pool.size() == 253
    c = json.loads(cl.render_conflist(
        "lab-1", "10.244.2.0/24", mtu=1450, data_dir="/d", gateway="10.244.2.254",
        plugins=[{"type": "portmap", "capabilities": {"portMappings": True}}],
        routes=[{"dst": "10.96.0.0/12"}], dns={"nameservers": ["10.96.0.10"]},
        range_start="10.244.2.10", range_end="10.244.2.200"))
    assert c["cniVersion"] == "1.0.0"
    assert [p["type"] for p in c["plugins"]] == ["labkit-cni", "portmap"]
    p = c["plugins"][0]
    assert p["mtu"] == 1450 and p["dns"] == {"nameservers": ["10.96.0.10"]}
    assert p["ipam"] == {"subnet": "10.244.2.0/24", "gateway": "10.244.2.254",
                         "rangeStart": "10.244.2.10", "rangeEnd": "10.244.2.200",
                         "routes": [{"dst": "10.96.0.0/12"}], "dataDir": "/d"}


@pytest.mark.parametrize("kw", [{"name": "bad name"}, {"pod_cidr": "x"},
                                {"gateway": "10.0.0.1"}, {"mtu": 10},
                                {"plugins": [{"name": "x"}]}])
def test_render_conflist_rejects(kw):
    args = {"name": "n", "pod_cidr": "10.244.2.0/24"} | kw
    with pytest.raises(ValueError):
        cl.render_conflist(args.pop("name"), args.pop("pod_cidr"), **args)


def test_write_conflist_is_atomic(tmp_path):
    p = cl.write_conflist(tmp_path, "n1", "10.244.1.0/24")
    assert p == tmp_path / "10-n1.conflist"
    first = p.stat().st_ino
    p2 = cl.write_conflist(tmp_path, "n1", "10.244.1.0/24", mtu=1400, filename="x.conflist")
    assert json.loads(p2.read_text())["plugins"][0]["mtu"] == 1400
    cl.write_conflist(tmp_path, "n1", "10.244.1.0/24", mtu=1300)
    assert p.stat().st_ino != first  # replaced by rename, never rewritten in place
    assert sorted(os.listdir(tmp_path)) == ["10-n1.conflist", "x.conflist"]
    assert cl.load_conflist(p)["plugins"][0]["mtu"] == 1300


@pytest.mark.parametrize("bad", ['{"name": "n"}', '{"name": "n", "cniVersion": "1.0.0"}',
                                 '{"name": "n", "cniVersion": "1.0.0", "plugins": [{}]}',
                                 '{"name": "n", "cniVersion": "1.0.0", '
                                 '"plugins": [{"type": "../x"}]}', "[1]", "{nope"])
def test_load_conflist_rejects(bad):
    with pytest.raises(CNIError) as ei:
        cl.load_conflist(bad)
    assert ei.value.code == 7


def test_masquerade_script():
    s = bk.render_masquerade("10.244.0.0/16", pod_cidr="10.244.1.0/24",
                             exclude=["10.96.0.0/12", "10.244.3.0/24"])
    assert s.startswith("table ip labkit-cni\ndelete table ip labkit-cni\n")
    assert "ip saddr 10.244.1.0/24 ip daddr != @no-masquerade" in s
    assert "elements = { 10.96.0.0/12, 10.244.0.0/16 }" in s
    assert "masquerade" in s
    with pytest.raises(ValueError):
        bk.render_masquerade("10.244.0.0/16", table="bad;table")
    with pytest.raises(ValueError):
        bk.render_masquerade("10.244.0.0/16; flush ruleset")


def test_backend_helpers():
    n = bk.ClusterNode("n1", "/run/netns/x", "172.31.0.2", "10.244.1.0/24")
    assert n.vtep_ip == "10.244.1.0" and n.mac == "0e:6c:ac:1f:00:02"
    assert bk.pod_mtu("vxlan", 1500) == 1450 and bk.pod_mtu("host-gw", 1500) == 1500
    with pytest.raises(ValueError):
        bk.pod_mtu("weave")
    with pytest.raises(ValueError):
        bk.apply_backend("host-gw", n, [bk.ClusterNode("n2", "rel/path", "1.2.3.4",
                                                       "10.244.2.0/24")])


def test_render_conflist_one_range_set_per_family():
    """A dual-stack node: host-local's `ranges`, the preferred family's first, each gateway the CIDR's
    first address; the plugin's config parser takes it as one pool per family. One CIDR in a list, or one
    IPv6 CIDR alone: today's `subnet` form."""
    c = json.loads(cl.render_conflist("n1", ["10.244.1.0/24", "fd00:10:244:1::/64"], mtu=1450, mode="bridge"))
    ipam = c["plugins"][0]["ipam"]
    assert ipam["ranges"] == [[{"subnet": "10.244.1.0/24", "gateway": "10.244.1.1"}],
                              [{"subnet": "fd00:10:244:1::/64", "gateway": "fd00:10:244:1::1"}]]
    assert "subnet" not in ipam and c["plugins"][0]["mode"] == "bridge"
    conf = cfg.parse({**c["plugins"][0], "name": "n1", "cniVersion": "1.1.0"})
    assert [str(p.subnet) for p in conf.pools] == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    v6_first = json.loads(cl.render_conflist("n1", ["fd00:10:244:1::/64", "10.244.1.0/24"]))
    assert [r[0]["subnet"] for r in v6_first["plugins"][0]["ipam"]["ranges"]] == ["fd00:10:244:1::/64",
                                                                                   "10.244.1.0/24"]
    assert cl.render_conflist("n1", ["10.244.1.0/24"]) == cl.render_conflist("n1", "10.244.1.0/24")
    only6 = json.loads(cl.render_conflist("n1", "fd00:10:244:1::/64"))["plugins"][0]["ipam"]
    assert (only6["subnet"], only6["gateway"]) == ("fd00:10:244:1::/64", "fd00:10:244:1::1")
    for bad in (["10.244.1.0/24", "10.244.2.0/24"], [], ["10.244.1.0/24", "nope"]):
        with pytest.raises(ValueError):
            cl.render_conflist("n1", bad)
    with pytest.raises(ValueError, match="one pod CIDR"):
        cl.render_conflist("n1", ["10.244.1.0/24", "fd00:10:244:1::/64"], gateway="10.244.1.254")


def test_masquerade_script_per_family():
    """One table per family of the same name; the IPv4 one exactly as in an IPv4-only cluster."""
    s = bk.render_masquerade(["10.244.0.0/16", "fd00:10:244::/56"],
                             pod_cidr=["10.244.1.0/24", "fd00:10:244:1::/64"], exclude=["10.96.0.0/12"])
    v4, v6 = s.split("table ip6 labkit-cni\n", 1)
    assert v4 == bk.render_masquerade("10.244.0.0/16", pod_cidr="10.244.1.0/24", exclude=["10.96.0.0/12"])
    assert v6.startswith("delete table ip6 labkit-cni\n")
    assert "type ipv6_addr" in v6 and "elements = { fd00:10:244::/56 }" in v6
    assert "ip6 saddr fd00:10:244:1::/64 ip6 daddr != @no-masquerade counter masquerade" in v6
    assert bk.render_masquerade("fd00:10:244::/56").startswith("table ip6 labkit-cni\n")
    with pytest.raises(ValueError, match="one CIDR per address family"):
        bk.render_masquerade(["10.244.0.0/16", "10.245.0.0/16"])


def test_cluster_node_per_family():
    n = bk.ClusterNode("n1", "/run/netns/x", "172.31.0.2", "10.244.1.0/24",
                       pod_cidrs=("10.244.1.0/24", "fd00:10:244:1::/64"), node_ip6="fd00:172:31::2")
    n.validate()
    assert [str(p) for p in n.pod_nets] == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    assert n.vtep_ip == "10.244.1.0" and n.vtep_ip_of(n.pod_net_of(6)) == "fd00:10:244:1::"
    assert (n.next_hop(4), n.next_hop(6)) == ("172.31.0.2", "fd00:172:31::2")
    from labkit.cni.backends.hostgw import peer_routes

    assert peer_routes([n]) == [("10.244.1.0/24", "172.31.0.2"), ("fd00:10:244:1::/64", "fd00:172:31::2")]
    without_v6 = bk.ClusterNode("n2", "/run/netns/y", "172.31.0.3", "10.244.2.0/24",
                                pod_cidrs=("10.244.2.0/24", "fd00:10:244:2::/64"))
    with pytest.raises(bk.BackendError, match="node n2 has no IPv6 address on the node network"):
        peer_routes([without_v6])
    for bad in ({"pod_cidrs": ("10.244.1.0/24", "10.244.9.0/24")}, {"pod_cidrs": ("fd00:10:244:1::/64",)},
                {"node_ip6": "172.31.0.9"}):
        with pytest.raises(ValueError):
            bk.ClusterNode("n1", "/run/netns/x", "172.31.0.2", "10.244.1.0/24", **bad).validate()


def test_netlink_attr_encoding():
    a = nl.attr_str(nl.IFLA_IFNAME, "eth0")
    assert len(a) == 12 and struct.unpack_from("=HH", a) == (9, nl.IFLA_IFNAME)
    blob = a + nl.attr_u32(nl.IFLA_MTU, 1450)
    parsed = nl.parse_attrs(blob)
    assert parsed[nl.IFLA_IFNAME] == b"eth0\0"
    assert struct.unpack("=I", parsed[nl.IFLA_MTU]) == (1450,)


def test_exec_path_imports_only_stdlib():
    import subprocess
    import sys

    code = ("import sys, labkit.cni.main, labkit.cni.plugin;"
            "bad=[m for m in sys.modules if m.split('.')[0] in "
            "('pyroute2','pydantic','jinja2','rich','yaml','dns','docker')];"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""


def test_lite_json_and_ip_match_stdlib():
    import ipaddress

    from labkit.cni import lite

    for text in ['{"a": [1, -2.5e3, null, true, false, "x\\u00e9\\n"], "b": {}}', " [] ", '"s"']:
        assert lite.loads(text) == json.loads(text)
        assert lite.loads(text.encode()) == json.loads(text)
    for bad in ["{", "", "[1] x", '{"a" 1}', b"\xff", "{'a': 1}"]:
        with pytest.raises(ValueError):
            lite.loads(bad)
    obj = {"a": [1, 2.5, None, True, "é\n"], "b": {"c": "d"}, "e": []}
    assert lite.dumps(obj) == json.dumps(obj)
    with pytest.raises(TypeError):
        lite.dumps({"a": object()})
    for cidr in ["10.1.2.3/24", "0.0.0.0/0", "255.255.255.255/32", "10.0.0.0/8"]:
        n, ref = lite.Net(cidr), ipaddress.ip_network(cidr, strict=False)
        assert str(n) == str(ref) and str(n.broadcast_address) == str(ref.broadcast_address)
    for bad in ["10.1.2/24", "10.1.2.3/33", "1.2.3.256", "01.2.3.4", "a.b.c.d", "1.2.3.4/", ""]:
        with pytest.raises(ValueError):
            lite.Net(bad)
    a = lite.Addr("10.1.2.3")
    assert str(a) == f"{a}" == "10.1.2.3" and a in lite.Net("10.1.0.0/16")
    assert a not in lite.Net("10.2.0.0/16")


def test_lean_launcher_imports(tmp_path):
    """Under the launcher's `python -IS`, the exec path loads no re/json/ipaddress/ctypes."""
    import subprocess
    import sys

    from labkit.cni.install import PACKAGE_PARENT, install_launcher, launcher_text

    text = launcher_text("/usr/bin/python3")
    assert text.startswith("#!/bin/sh\n") and "\nexec /usr/bin/python3 -IS -c " in text
    assert "sock=${LABKIT_CNI_SOCKET-}" in text  # no server configured: always in place
    assert "sock=${LABKIT_CNI_SOCKET-'/run/a b.sock'}" in launcher_text("/usr/bin/python3", "/run/a b.sock")
    path = install_launcher(tmp_path, compile_bytecode=False)
    assert oct(path.stat().st_mode & 0o777) == "0o755"
    version = subprocess.run([path], env={"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"},
                             input=b"", capture_output=True, check=True).stdout
    assert b'"supportedVersions"' in version
    code = (f"import sys; sys.path.insert(0, {str(PACKAGE_PARENT)!r});"
            "import labkit.cni.main, labkit.cni.plugin;"
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('re', 'json', 'ipaddress', 'ctypes', 'dataclasses', 'inspect', 'hashlib', "
            "'socket', 'enum', 'typing', 'pathlib'))))")
    out = subprocess.run([sys.executable, "-IS", "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""


def test_labkit_plugin_config_from_conflist():
    text = cl.render_conflist("n9", "10.244.9.0/24", mtu=1450,
                              plugins=[{"type": "portmap", "capabilities": {"portMappings": True}}])
    conf = cl.labkit_plugin_config(text)
    assert conf["name"] == "n9" and conf["cniVersion"] == "1.0.0" and conf["mtu"] == 1450
    assert cfg.parse(conf).pool.size() == 253
    with pytest.raises(CNIError):
        cl.labkit_plugin_config('{"name": "x", "cniVersion": "1.0.0", "plugins": [{"type": "a"}]}')


def test_deeply_nested_configs_are_a_decode_error_not_a_crash(tmp_path):
    """Past lite.MAX_DEPTH levels, and far past the recursion limit: code 6 on stdout, no traceback."""
    import subprocess

    from labkit.cni import lite, main
    from labkit.cni.conflist import load_conflist
    from labkit.cni.errors import CNIError
    from labkit.cni.install import install_launcher

    assert lite.loads("[" * lite.MAX_DEPTH + "]" * lite.MAX_DEPTH)
    deep = ["[" * (lite.MAX_DEPTH + 1) + "]" * (lite.MAX_DEPTH + 1), '{"a": ' * 100_000, "[" * 1_000_000]
    for text in deep:
        with pytest.raises(ValueError, match="nested deeper than"):
            lite.loads(text)
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/nonexistent", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/opt/cni/bin"}
    for text in deep:
        code, out = main.run(env, text.encode())
        assert code == 1 and out["code"] == 6 and "nested deeper than" in out["details"]
    with pytest.raises(CNIError) as info:
        load_conflist(deep[1])
    assert info.value.code == 7
    launcher = install_launcher(tmp_path, compile_bytecode=False)  # the exec path itself, in a `python -IS`
    for text in deep:
        r = subprocess.run([launcher], env={**env, "PATH": "/usr/bin:/bin"}, input=text.encode(),
                           capture_output=True, timeout=60)
        reply = json.loads(r.stdout)
        assert r.returncode == 1 and reply["code"] == 6 and r.stderr == b"", r


def _dual_result(version: str, *, v4_only: bool = False) -> dict:
    ranges = [[{"subnet": "10.244.1.0/24"}]] + ([] if v4_only else [[{"subnet": "fd00:10:244:1::/64"}]])
    c = cfg.parse({"cniVersion": version, "name": "n", "ipam": {
        "ranges": ranges, "routes": [{"dst": "10.96.0.0/16"}] + ([] if v4_only else [{"dst": "fd00:10:96::/112"}])}})
    addrs = [plugin.PodAddress(p, ip) for p, ip in zip(c.pools, ["10.244.1.5", "fd00:10:244:1::5"], strict=False)]
    h, p = {"name": "veth1", "mac": "aa:aa:aa:aa:aa:aa"}, {"name": "eth0", "mac": "bb:bb:bb:bb:bb:bb"}
    return plugin._result(c, "/run/netns/x", "eth0", addrs, h, p, None)


def test_dual_stack_result_shape():
    res = _dual_result("1.0.0")
    assert res["ips"] == [
        {"address": "10.244.1.5/32", "gateway": "10.244.1.1", "interface": 1},
        {"address": "fd00:10:244:1::5/128", "gateway": "fd00:10:244:1::1", "interface": 1},
    ]
    assert res["routes"] == [
        {"dst": "0.0.0.0/0", "gw": "10.244.1.1"}, {"dst": "::/0", "gw": "fd00:10:244:1::1"},
        {"dst": "10.96.0.0/16", "gw": "10.244.1.1"}, {"dst": "fd00:10:96::/112", "gw": "fd00:10:244:1::1"},
    ]
    # before 1.0.0 every IP config names its version
    assert [ip["version"] for ip in _dual_result("0.4.0")["ips"]] == ["4", "6"]


def test_ipv4_only_result_is_as_before():
    """An IPv4-only config's result, byte for byte what the single-family plugin printed."""
    from labkit.cni.lite import dumps

    assert dumps(_dual_result("1.1.0", v4_only=True)) == (
        '{"cniVersion": "1.1.0", "interfaces": [{"name": "veth1", "mac": "aa:aa:aa:aa:aa:aa"}, '
        '{"name": "eth0", "mac": "bb:bb:bb:bb:bb:bb", "sandbox": "/run/netns/x"}], '
        '"ips": [{"address": "10.244.1.5/32", "gateway": "10.244.1.1", "interface": 1}], '
        '"routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}, {"dst": "10.96.0.0/16", "gw": "10.244.1.1"}], '
        '"dns": {}}')


def test_lite_ipv6():
    from labkit.cni.lite import Addr, Addr6, Net, ip_address

    assert str(Addr6("FD00:0:0:0:0:0:0:1")) == "fd00::1" and Addr6("fd00::1").version == 6
    assert str(Addr6("fd00:1:0:1:0:0:0:1")) == "fd00:1:0:1::1"  # RFC 5952: the longest zero run goes
    assert isinstance(ip_address("10.0.0.1"), Addr) and isinstance(ip_address("fd00::1"), Addr6)
    for bad in ("fd00::1%eth0", "fd00:::1", "1:2:3:4:5:6:7:8:9", "fd00::g"):
        with pytest.raises(ValueError):
            Addr6(bad)
    n = Net("fd00:10:244:1::7/64")
    assert (str(n), n.version) == ("fd00:10:244:1::/64", 6)
    assert str(n.broadcast_address) == "fd00:10:244:1:ffff:ffff:ffff:ffff"  # the last address
    assert "fd00:10:244:1::9" in n and Addr6("fd00:10:244:2::9") not in n
    assert "10.0.0.1" not in n and Addr(1) not in n and Addr6(1) not in Net("0.0.0.0/0")
    assert Net("::/0") != Net("0.0.0.0/0") and Net("::/0") == "::/0"
    assert len({Net("::/0"), Net("0.0.0.0/0")}) == 2
