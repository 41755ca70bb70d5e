"""The ingress controller's routing table and its HAProxy config, from manifests (pure), and the
`http:` checks of expect."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from labkit.ingress import configure
from labkit.ingress.routes import Route, condition, proxy_config, route_hosts, weighted_servers
from labkit.k8s import edge, parse_manifests
from labkit.topology.expect import expect_problems

SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: a}
spec: {selector: {app: a}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec: {selector: {app: b}, ports: [{name: http, port: 80, targetPort: 8080}]}
"""


def view(name: str, ips: list[str]) -> SimpleNamespace:
    endpoints = tuple(SimpleNamespace(ip=ip, port=8080, pod=f"default/{name}-{i}") for i, ip in enumerate(ips))
    port = SimpleNamespace(name="http", port=80, protocol="TCP", endpoints=endpoints)
    return SimpleNamespace(namespace="default", name=name, ports=(port,))


VIEWS = [view("a", ["10.244.0.2", "10.244.1.2"]), view("b", ["10.244.2.2"])]


def ingress(spec: str, name: str = "shop", annotations: str = "") -> str:
    return (f"---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}{annotations}}}\n"
            f"spec:\n{spec}")


RULES = """  rules:
    - host: shop.example
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}
          - {path: /b/, pathType: Prefix, backend: {service: {name: b, port: {name: http}}}}
          - {path: /x, pathType: Exact, backend: {service: {name: b, port: {number: 80}}}}
    - host: "*.wild.example"
      http:
        paths:
          - {path: /, pathType: ImplementationSpecific, backend: {service: {name: b, port: {number: 80}}}}
"""


def test_routes_are_ordered_by_the_apis_precedence() -> None:
    table = proxy_config(parse_manifests(SERVICES + ingress(RULES)), VIEWS)
    http = table.frontends[0]
    assert (http.port, http.protocol) == (80, "HTTP")
    assert [(r.host, r.path_type, r.path) for r in http.routes] == [
        ("shop.example", "Exact", "/x"), ("shop.example", "Prefix", "/b/"), ("shop.example", "Prefix", "/"),
        ("*.wild.example", "Prefix", "/")]
    assert http.hosts == ("shop.example", "*.wild.example")


def test_prefix_is_element_wise_and_a_wildcard_is_one_label() -> None:
    prefix = condition(Route("shop.example", "Prefix", "/b/", backend="be-1"))
    assert prefix == ('{ var(txn.host) -m str "shop.example" } { path -m str "/b" } || '
                      '{ var(txn.host) -m str "shop.example" } { path -m beg "/b/" }')
    assert condition(Route(None, "Prefix", "/")) == "TRUE"
    assert condition(Route(None, "Exact", "/x")) == '{ path -m str "/x" }'
    wild = condition(Route("*.wild.example", "Prefix", "/"))
    assert wild == '{ var(txn.host) -m reg "^[^.]+\\\\.wild\\\\.example\\$" }'
    header = condition(Route(None, "Prefix", "/", headers=(("Exact", "x-canary", 'y"$'),)))
    assert header == '{ req.hdr(x-canary) -m str "y\\"\\$" }'


def test_weights_split_each_ref_over_its_endpoints() -> None:
    half = weighted_servers([("default", "a", 80, 50), ("default", "b", 80, 50)], VIEWS)
    assert [(s.ip, s.weight) for s in half] == [("10.244.0.2", 128), ("10.244.1.2", 128), ("10.244.2.2", 256)]
    none_to_b = weighted_servers([("default", "a", 80, 100), ("default", "b", "http", 0)], VIEWS)
    assert [s.weight for s in none_to_b] == [256, 256, 0]
    assert [s.weight for s in weighted_servers([("default", "a", 80, 1), ("default", "b", 80, 1000)], VIEWS)] \
        == [1, 1, 256]  # a share never rounds down to nothing
    assert weighted_servers([("default", "a", 80, 0)], VIEWS)[0].weight == 0
    assert weighted_servers([("default", "nobody", 80, 1)], VIEWS) == ()


@pytest.mark.parametrize(("listener", "routes", "hosts"), [
    (None, [], [None]),
    ("*.gw.test", [], ["*.gw.test"]),
    ("*.gw.test", ["a.gw.test", "a.other.test"], ["a.gw.test"]),
    ("a.gw.test", ["*.gw.test"], ["a.gw.test"]),
    ("a.gw.test", ["b.gw.test"], []),
])
def test_route_hostnames_intersect_the_listeners(listener, routes, hosts) -> None:
    assert route_hosts(listener, routes) == hosts


GATEWAY = """---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec: {gatewayClassName: haproxy, listeners: [{name: web, port: 8080, protocol: HTTP, hostname: "*.gw.test"}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: canary}
spec:
  parentRefs: [{name: edge, sectionName: web}]
  hostnames: [canary.gw.test, elsewhere.test]
  rules:
    - matches: [{headers: [{name: X-Canary, value: "yes"}], method: GET}]
      backendRefs: [{name: b, port: 80}]
    - backendRefs: [{name: a, port: 80, weight: 90}, {name: b, port: 80, weight: 10}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: stray}
spec:
  parentRefs: [{name: edge, sectionName: nope}]
  rules: [{backendRefs: [{name: a, port: 80}]}]
"""


def test_http_routes_attach_to_listeners_with_matches_and_weights() -> None:
    table = proxy_config(parse_manifests(SERVICES + GATEWAY), VIEWS)
    gw = next(f for f in table.frontends if f.port == 8080)
    first, second = gw.routes
    assert (first.host, first.headers, first.method) == ("canary.gw.test", (("Exact", "x-canary", "yes"),), "GET")
    assert second.headers == () and second.host == "canary.gw.test"
    weights = next(b for b in table.backends if b.name == second.backend).servers
    assert [s.weight for s in weights] == [256, 256, 57]  # 45% per a endpoint, 10% to b's one
    assert table.status["skipped"] == {"default/stray": "attaches to no listener of a Gateway labkit serves "
                                       "(parentRefs, sectionName, port, allowedRoutes, hostnames)"}


def test_ingress_classes_choose_what_is_served() -> None:
    classes = """---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: mine, annotations: {ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {controller: labkit.io/ingress-haproxy}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
"""
    backend = "  defaultBackend: {service: {name: a, port: {number: 80}}}\n"
    workloads = parse_manifests(SERVICES + classes + ingress(backend, "plain")
                                + ingress("  ingressClassName: nginx\n" + backend, "theirs")
                                + ingress(backend, "legacy", ", annotations: {kubernetes.io/ingress.class: mine}"))
    ingresses, _, skipped = edge.served(workloads)
    assert [i.name for i in ingresses] == ["plain", "legacy"]
    assert skipped == {"default/theirs": "class nginx is controller k8s.io/ingress-nginx's, not "
                                         "labkit.io/ingress-haproxy"}


REGEX_ROUTE = """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: regex}
spec:
  parentRefs: [{name: edge}]
  rules:
    - matches: [{path: {type: RegularExpression, value: '/v[0-9]+/\\d+$'},
                 headers: [{type: RegularExpression, name: x-id, value: '^\\w+"$'}]}]
      backendRefs: [{name: a, port: 80}]
"""


def test_the_rendered_config_is_one_haproxy_accepts(tmp_path) -> None:
    workloads = parse_manifests(SERVICES + ingress(RULES) + GATEWAY + REGEX_ROUTE)
    path, table = configure("lab", workloads, VIEWS, str(tmp_path))
    text = open(path).read()
    assert "backend no-route" in text and "bind :8080" in text and "default_backend no-route" in text
    assert '{ path -m reg "/v[0-9]+/\\\\d+\\$" }' in text
    proc = subprocess.run(["haproxy", "-c", "-q", "-f", path], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_controller_manifests_follow_the_frontends() -> None:
    workloads = parse_manifests(SERVICES + GATEWAY)
    deployment, service = edge.controller_manifests(workloads, 2)[1:]
    assert deployment["spec"]["replicas"] == 2
    assert [p["port"] for p in service["spec"]["ports"]] == [80, 8080]
    assert service["spec"]["ports"][0]["nodePort"] == 32080


@pytest.mark.parametrize(("entry", "problem"), [
    ({"from": "ext", "resolve": "web", "http": {"host": "a.test"}, "result": "200"},
     "expect[0].http: an http check needs 'to' (a TCP port)"),
    ({"from": "ext", "to": "w1:32080", "http": {"path": "nope"}, "result": "200"},
     "expect[0].http: path 'nope' is not a request path"),
    ({"from": "ext", "to": "w1:32080", "http": {}, "result": "open"},
     "expect[0].result: 'open' is not valid for an http check"),
])
def test_bad_http_checks_say_what_is_valid(entry, problem) -> None:
    _, found = expect_problems([entry])
    assert str(found[0]).startswith(problem), str(found[0])


def test_an_http_check_names_the_url_it_asks() -> None:
    checks, found = expect_problems([{"from": "ext", "to": "w1:32080", "result": "200 app-b",
                                      "http": {"host": "shop.example.test", "path": "/b"}}])
    assert found == []
    assert checks[0].destination == "http://shop.example.test/b @w1:32080"


def test_a_nodes_hosts_entries_are_planned_and_reach_status() -> None:
    from labkit.lab import summarize
    from labkit.topology import load_plan

    plan = load_plan("topologies/kube-edge.yaml")
    ext = next(n for n in plan.nodes if n.name == "ext")
    assert ext.hosts == (("shop.example.test", "198.51.100.10"), ("canary.gw.test", "198.51.100.10"))
    nodes = {n["name"]: n for n in summarize(plan)["nodes"]}
    assert nodes["ext"]["hosts"] == {"shop.example.test": "198.51.100.10", "canary.gw.test": "198.51.100.10"}
    assert "hosts" not in nodes["w1"]


def test_validate_notes_what_another_controller_would_serve(tmp_path) -> None:
    from labkit.topology import load_plan
    from labkit.topology.workloads import plan_notes

    topo = tmp_path / "lab.yaml"
    topo.write_text("name: notes\ncluster: {}\ntopology:\n  nodes:\n    cp: {kind: k8s-node}\nworkloads:\n"
                    "  - apiVersion: networking.k8s.io/v1\n    kind: Ingress\n    metadata: {name: other}\n"
                    "    spec:\n      ingressClassName: nginx\n"
                    "      defaultBackend: {service: {name: nope, port: {number: 80}}}\n")
    plan = load_plan(str(topo))  # its missing Service is no error: labkit's controller does not serve it
    assert f"not served by labkit's ingress controller: Ingress default/other ({topo}:9): no IngressClass " \
           "'nginx'" in plan_notes(plan)
    assert not any(p.namespace == edge.NAMESPACE for p in plan.workloads.pods)  # nothing to serve: no controller


@pytest.mark.parametrize(("match", "problem"), [
    ("{headers: [{name: 'x$y', value: a}]}", "'x$y': labkit's proxy matches header names of letters"),
    ("{headers: [{type: RegularExpression, name: x, value: 'a('}]}", "'a(' is not a regular expression"),
    ("{path: {type: Exact, value: 'a b'}}", "'a b' must be an absolute path"),
    ("{path: {type: PathPrefix, value: '/a#b'}}", "'/a#b' holds a space, a quote, a backslash, '#' or braces"),
])
def test_matches_the_proxy_cannot_hold_are_refused(match, problem) -> None:
    from labkit.errors import InputError

    text = SERVICES + GATEWAY.replace("- matches: [{headers: [{name: X-Canary, value: \"yes\"}], method: GET}]",
                                      f"- matches: [{match}]")
    with pytest.raises(InputError) as exc:
        parse_manifests(text)
    assert problem in str(exc.value)


def test_a_regular_expression_keeps_its_backslashes() -> None:
    route = Route(None, "RegularExpression", "/v[0-9]+/\\d+", headers=(("RegularExpression", "x-id", "^\\w+$"),))
    assert condition(route) == '{ req.hdr(x-id) -m reg "^\\\\w+\\$" } { path -m reg "/v[0-9]+/\\\\d+" }'


@pytest.mark.parametrize("answer", [b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\napp-a pod\n",
                                    b"HTTP/1.0 200 OK\n\napp-a pod\n"])
def test_the_agents_http_request_reads_the_status_and_body(answer) -> None:
    import socket
    import threading

    from labkit.agent import http_get

    server = socket.create_server(("127.0.0.1", 0))
    seen = []

    def serve() -> None:
        conn, _ = server.accept()
        seen.append(conn.recv(4096))
        conn.sendall(answer)
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    found = http_get("127.0.0.1", server.getsockname()[1], {"host": "shop.example.test", "path": "/b"}, timeout=5)
    thread.join()
    server.close()
    assert (found["http_status"], found["body"]) == (200, "app-a pod\n")
    assert seen[0].startswith(b"GET /b HTTP/1.1\r\nHost: shop.example.test\r\n")


def test_a_default_backend_takes_what_no_rule_matches() -> None:
    text = SERVICES + ingress("  defaultBackend: {service: {name: b, port: {number: 80}}}\n" + RULES)
    table = proxy_config(parse_manifests(text), VIEWS)
    default = next(b for b in table.backends if b.name == table.default_backend)
    assert [s.ip for s in default.servers] == ["10.244.2.2"] and default.source == "Ingress default/shop default"


def test_an_https_listener_serves_its_certificate_refs(tmp_path) -> None:
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    docs = yaml.safe_load_all((root / "topologies" / "workloads" / "kube-edge.yaml").read_text())
    secret = "---\n" + yaml.safe_dump(next(d for d in docs if d and d["kind"] == "Secret"))
    gateway = """---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tls}
spec:
  gatewayClassName: haproxy
  listeners:
    - {name: https, port: 8443, protocol: HTTPS, hostname: shop.example.test,
       tls: {certificateRefs: [{name: shop-tls}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: tls}]
  rules: [{backendRefs: [{name: a, port: 80}]}]
"""
    workloads = parse_manifests(SERVICES + secret + gateway)
    path, table = configure("lab", workloads, VIEWS, str(tmp_path))
    https = next(f for f in table.frontends if f.port == 8443)
    assert (https.protocol, https.certs) == ("HTTPS", (("default/shop-tls", ("shop.example.test",)),))
    assert (tmp_path / "certs" / "default_shop-tls.pem").stat().st_mode & 0o777 == 0o600
    crt_list = (tmp_path / "https-8443.crt-list").read_text()
    assert crt_list == f"{tmp_path}/certs/default_shop-tls.pem shop.example.test\n"
    proc = subprocess.run(["haproxy", "-c", "-q", "-f", path], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
