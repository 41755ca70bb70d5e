"""Reading birdc's answers: `show protocols` and `show route`, as BIRD 2.0 prints them (real samples)."""

from __future__ import annotations

import pytest

from labkit.bgp import birdc

PROTOCOLS = """\
BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     16:52:02.240  {trail}
own        Static     master4    up     16:52:02.240  {trail}
kernel1    Kernel     master4    up     16:52:02.240  {trail}
rr_w1      BGP        ---        up     16:52:03.113  Established   {trail}
client_w2  BGP        ---        start  16:46:51.439  Active        Received: Administrative shutdown
peer_172_31_0_9 BGP        ---        start  2026-11-29    Connect       Socket: Connection refused
""".replace("{trail}", "")  # birdc pads its columns with trailing spaces; the samples keep them before {trail}

# A route reflector's client: each prefix from both reflectors, the second an alternative.
ROUTES = """\
BIRD 2.0.12 ready.
Table master4:
10.244.0.0/24        unicast [rr_cp 16:52:03.188] * (100) [i]
\tvia 172.31.0.2 on eth0
                     unicast [rr_w1 16:52:03.131 from 172.31.0.3] (100) [i]
\tvia 172.31.0.2 on eth0
10.244.2.0/24        blackhole [own 16:52:02.265] * (200)
192.168.50.0/24      unicast [peer_tor 16:48:07.044] * (100) [AS65000i]
\tvia 172.31.0.5 on eth0
"""


def test_protocols_rows_skip_the_banner_and_the_header() -> None:
    rows = birdc.parse_protocols(PROTOCOLS)
    assert [r["name"] for r in rows] == ["device1", "own", "kernel1", "rr_w1", "client_w2", "peer_172_31_0_9"]
    assert rows[1] == {"name": "own", "proto": "Static", "table": "master4", "state": "up",
                       "since": "16:52:02.240", "info": ""}


def test_sessions_are_the_bgp_rows_with_their_bgp_state_and_last_error() -> None:
    assert birdc.sessions(PROTOCOLS) == [
        {"name": "rr_w1", "state": "Established", "protocol_state": "up", "since": "16:52:03.113", "info": ""},
        {"name": "client_w2", "state": "Active", "protocol_state": "start", "since": "16:46:51.439",
         "info": "Received: Administrative shutdown"},
        {"name": "peer_172_31_0_9", "state": "Connect", "protocol_state": "start", "since": "2026-11-29",
         "info": "Socket: Connection refused"},
    ]


def test_routes_with_alternatives_next_hops_and_origins() -> None:
    routes = birdc.parse_routes(ROUTES)
    assert [(r["prefix"], r["protocol"], r["primary"]) for r in routes] == [
        ("10.244.0.0/24", "rr_cp", True), ("10.244.0.0/24", "rr_w1", False), ("10.244.2.0/24", "own", True),
        ("192.168.50.0/24", "peer_tor", True)]
    assert routes[0] == {"prefix": "10.244.0.0/24", "family": 4, "table": "master4", "type": "unicast",
                         "protocol": "rr_cp", "primary": True, "preference": 100, "origin": "i",
                         "via": ["172.31.0.2"], "dev": "eth0"}
    assert routes[2]["type"] == "blackhole" and routes[2]["via"] == [] and routes[2]["preference"] == 200
    assert routes[3]["origin"] == "AS65000i"


# A dual-stack node (a session per family, Calico's way): both tables, `show route` answers from each.
DUAL_STACK = """\
BIRD 2.0.12 ready.
Table master4:
10.244.1.0/24        blackhole [own 19:37:03.678] * (200)
10.244.2.0/24        unicast [node_w2 19:37:04.538] * (100) [i]
\tvia 172.31.0.4 on eth0

Table master6:
fd00:10:244:2::/64   unicast [node_w2_v6 19:37:04.613] * (100) [i]
\tvia fd00:172:31::4 on eth0
fd00:10:244:1::/64   blackhole [own6 19:37:03.678] * (200)
fd00:198:51:100::2/128 unicast [node_w2_v6 19:37:05.001] * (100) [AS64512i]
\tvia fd00:172:31::4 on eth0
                     unicast [node_cp_v6 19:37:05.120] (100) [AS64512i]
\tvia fd00:172:31::2 on eth0
"""


def test_ipv6_routes_from_the_master6_table() -> None:
    routes = birdc.parse_routes(DUAL_STACK)
    assert [(r["prefix"], r["family"], r["table"], r["protocol"], r["primary"]) for r in routes] == [
        ("10.244.1.0/24", 4, "master4", "own", True), ("10.244.2.0/24", 4, "master4", "node_w2", True),
        ("fd00:10:244:2::/64", 6, "master6", "node_w2_v6", True),
        ("fd00:10:244:1::/64", 6, "master6", "own6", True),
        ("fd00:198:51:100::2/128", 6, "master6", "node_w2_v6", True),
        ("fd00:198:51:100::2/128", 6, "master6", "node_cp_v6", False)]
    assert routes[2]["via"] == ["fd00:172:31::4"] and routes[2]["dev"] == "eth0"
    assert routes[3]["type"] == "blackhole" and routes[3]["via"] == []
    assert routes[5]["via"] == ["fd00:172:31::2"]  # the alternative keeps its own prefix and next hop


def test_a_route_line_after_a_table_heading_never_inherits_the_last_tables_prefix() -> None:
    text = "Table master4:\n10.244.2.0/24 unicast [a 1:2:3] * (100)\nTable master6:\n" \
           "                     unicast [b 1:2:3] (100)\n"
    assert [r["prefix"] for r in birdc.parse_routes(text)] == ["10.244.2.0/24"]


def test_show_route_all_attribute_lines_are_skipped() -> None:
    text = ROUTES.replace("\tvia 172.31.0.5 on eth0\n", "\tvia 172.31.0.5 on eth0\n\tType: BGP univ\n"
                          "\tBGP.origin: IGP\n\tBGP.as_path: 65000\n\tBGP.next_hop: 172.31.0.5\n")
    assert birdc.parse_routes(text) == birdc.parse_routes(ROUTES)


def test_empty_answers() -> None:
    assert birdc.parse_routes("BIRD 2.0.12 ready.\nTable master4:\n") == []
    assert birdc.sessions("BIRD 2.0.12 ready.\nName       Proto      Table      State  Since         Info\n") == []


def test_a_missing_socket_is_an_error_not_a_traceback(tmp_path) -> None:
    socket = str(tmp_path / "bird.ctl")
    with pytest.raises(birdc.BirdcError) as info:
        birdc.ask(socket, "show", "status")
    assert socket in str(info.value)
    assert birdc.live(socket) == {"error": str(info.value)}
    assert birdc.established(socket, ["node_w1"]) is False
