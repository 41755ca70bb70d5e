"""labkit.net.netlink's encoder: what the kernel is sent, byte for byte where it matters (no root)."""

from __future__ import annotations

import errno
import socket
import struct

from labkit.net import netlink as nl


def _decode(req: nl.Request, seq: int = 7):
    raw = req.encode(seq)
    length, mtype, flags, rseq, _ = struct.unpack_from("=LHHLL", raw)
    assert length == len(raw) and rseq == seq and flags & (nl.NLM_F_REQUEST | nl.NLM_F_ACK)
    return mtype, flags, raw[16:]


def test_route_add_replace_and_delete():
    mtype, flags, body = _decode(nl.route("10.244.2.0/24", gateway="172.31.0.3", oif=2, replace=True,
                                          proto=nl.RTPROT_STATIC))
    assert mtype == nl.RTM_NEWROUTE and flags & nl.NLM_F_REPLACE and flags & nl.NLM_F_CREATE
    fam, dlen, _, _, table, proto, scope, rtn, rflags = struct.unpack_from("=BBBBBBBBI", body)
    assert (fam, dlen, table, proto, scope, rtn, rflags) == (socket.AF_INET, 24, 254, 4, 0, 1, 0)
    attrs = nl.parse_attrs(body, 12)
    assert attrs[nl.RTA_DST] == socket.inet_aton("10.244.2.0") and attrs[nl.RTA_GATEWAY] == socket.inet_aton(
        "172.31.0.3") and attrs[nl.RTA_OIF] == struct.pack("=I", 2)
    _, _, body = _decode(nl.route("default", gateway="10.0.0.1"))
    assert body[1] == 0 and nl.RTA_DST not in nl.parse_attrs(body, 12)
    _, _, body = _decode(nl.route("10.0.0.1", oif=3, onlink=True))
    assert body[1] == 32 and body[6] == nl.RT_SCOPE_LINK and struct.unpack_from("=I", body, 8)[0] == nl.RTNH_F_ONLINK
    delete = nl.del_route("10.244.2.0/24", gateway="172.31.0.3")
    mtype, _, body = _decode(delete)
    assert mtype == nl.RTM_DELROUTE and body[6] == nl.RT_SCOPE_NOWHERE and body[7] == 0  # match any scope and type
    assert errno.ESRCH in delete.tolerate


def test_ipv6_addresses_routes_and_neighbours_are_of_family_inet6():
    mtype, _, body = _decode(nl.address(3, "fd00:1::1", 64, nodad=True))
    fam, plen, flags, scope, index = struct.unpack_from("=BBBBI", body)
    assert (mtype, fam, plen, flags, index) == (nl.RTM_NEWADDR, socket.AF_INET6, 64, nl.IFA_F_NODAD, 3)
    assert nl.parse_attrs(body, 8)[nl.IFA_LOCAL] == socket.inet_pton(socket.AF_INET6, "fd00:1::1")
    assert nl.address_info(body) == {"index": 3, "address": "fd00:1::1", "prefixlen": 64, "flags": nl.IFA_F_NODAD,
                                     "family": 6}
    _, _, body = _decode(nl.address(3, "10.0.0.1", 24, nodad=True))  # nodad is IPv6's: no flag on IPv4
    assert body[0] == socket.AF_INET and body[2] == 0
    _, _, body = _decode(nl.route("fd00:2::/64", gateway="fd00:1::2", proto=nl.RTPROT_STATIC))
    fam, dlen, _, _, table, proto, scope, rtn, _ = struct.unpack_from("=BBBBBBBBI", body)
    assert (fam, dlen, table, proto, scope, rtn) == (socket.AF_INET6, 64, 254, 4, nl.RT_SCOPE_UNIVERSE, 1)
    assert nl.route_info(body)["gateway"] == "fd00:1::2" and nl.route_info(body)["dst"] == "fd00:2::"
    _, _, body = _decode(nl.route("default", gateway="fd00:1::2"))  # IPv6's default: the gateway says so
    assert body[0] == socket.AF_INET6 and body[1] == 0 and nl.route_info(body)["dst"] == "::"
    _, _, body = _decode(nl.route("fd00:2::/64", oif=4))  # no link scope in IPv6
    assert body[6] == nl.RT_SCOPE_UNIVERSE
    _, _, body = _decode(nl.neighbour("fd00:1::9", "02:00:00:00:00:09", 4))
    assert body[0] == socket.AF_INET6


def test_veth_is_born_in_both_namespaces_and_vxlan_carries_its_parameters():
    _, flags, body = _decode(nl.veth("a", "b", netns_fd=5, peer_netns_fd=6, mtu=1450, up=True))
    assert flags & nl.NLM_F_EXCL and struct.unpack_from("=BxHiII", body)[3:] == (nl.IFF_UP, nl.IFF_UP)
    attrs = nl.parse_attrs(body, 16)
    assert attrs[nl.IFLA_IFNAME] == b"a\0" and attrs[nl.IFLA_NET_NS_FD] == struct.pack("=I", 5)
    info = nl.parse_attrs(attrs[nl.IFLA_LINKINFO])
    peer = nl.parse_attrs(nl.parse_attrs(info[nl.IFLA_INFO_DATA])[nl.VETH_INFO_PEER], 16)
    assert peer[nl.IFLA_IFNAME] == b"b\0" and peer[nl.IFLA_NET_NS_FD] == struct.pack("=I", 6)
    assert peer[nl.IFLA_MTU] == struct.pack("=I", 1450)
    _, _, body = _decode(nl.vxlan("flannel.1", vni=1, local="172.31.0.2", dev_index=2, port=8472,
                                  mac="0e:6c:ac:1f:00:02"))
    link = {"kind": "vxlan", "data": nl.parse_attrs(nl.parse_attrs(nl.parse_attrs(body, 16)[nl.IFLA_LINKINFO])[
        nl.IFLA_INFO_DATA])}
    assert nl.vxlan_info(link) == {"id": 1, "port": 8472, "local": "172.31.0.2"}
    assert nl.parse_attrs(body, 16)[nl.IFLA_ADDRESS] == bytes.fromhex("0e6cac1f0002")


def test_fdb_entries_are_bridge_family_self_permanent():
    mtype, flags, body = _decode(nl.fdb("0e:6c:ac:1f:00:03", 4, "172.31.0.3"))
    assert mtype == nl.RTM_NEWNEIGH and flags & nl.NLM_F_REPLACE
    family, index, state, ndflags, _ = struct.unpack_from("=BxxxiHBB", body)
    assert (family, index, state, ndflags) == (nl.AF_BRIDGE, 4, nl.NUD_PERMANENT, nl.NTF_SELF)


def test_the_lab_wiring_and_the_cni_backends_need_no_pyroute2():
    """One netlink layer: neither lab wiring nor node routing loads pyroute2 (~170 ms) any more."""
    import subprocess
    import sys

    code = ("import sys, labkit.net.wiring, labkit.cni.backends, labkit.cni.plugin;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyroute2'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
