"""Stand-in workloads: which containers get one and why (labkit.k8s.standin, pure), and what the
stand-in itself answers (labkit.standin, on loopback in this process)."""

from __future__ import annotations

import _socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from labkit import cli, standin
from labkit.k8s.models import Container, Pod
from labkit.k8s.standin import decide, image_name, netexec_ports, pod_stand_ins, program

ROOT = Path(__file__).resolve().parents[2]


def container(**fields) -> Container:
    return Container.model_validate({"name": "c", **fields})


NGINX = {"image": "nginx:1.14.2", "ports": [{"containerPort": 80}]}
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"


# ---------------------------------------------------------------- who gets a stand-in


def test_an_image_without_a_command_stands_in_on_netns_with_its_declared_ports() -> None:
    stand_in = decide(container(image="nginx:1.14.2", ports=[{"containerPort": 80},
                                                             {"containerPort": 53, "protocol": "UDP"}]), "netns", None)
    assert stand_in is not None
    assert (stand_in.tcp, stand_in.udp) == ((80,), (53,))
    assert "nginx:1.14.2" in stand_in.reason and "no command" in stand_in.reason


def test_a_command_runs_as_written() -> None:
    assert decide(container(**NGINX, command=["sleep", "infinity"]), "netns", None) is None
    assert program(container(**NGINX, command=["sleep"], args=["infinity"])) == ("sleep", "infinity")


def test_args_alone_are_never_the_program() -> None:
    mongo = container(image="mongo:4.2", args=["--bind_ip", "0.0.0.0"], ports=[{"containerPort": 27017}])
    assert program(mongo) == ()
    stand_in = decide(mongo, "netns", None)
    assert stand_in is not None and "args without a command" in stand_in.reason and "mongo:4.2" in stand_in.reason


def test_stand_ins_off_means_none_anywhere() -> None:
    assert decide(container(**NGINX), "netns", False) is None
    assert decide(container(**NGINX), "docker", False, lambda image: False) is None


def test_docker_stands_in_only_for_a_missing_image_and_only_when_allowed() -> None:
    missing, present = (lambda image: False), (lambda image: True)
    assert decide(container(**NGINX), "docker", None, missing) is None  # auto: `up` says the image is missing
    assert decide(container(**NGINX), "docker", True, present) is None
    stand_in = decide(container(**NGINX), "docker", True, missing)
    assert stand_in is not None and "not in the Docker engine" in stand_in.reason and stand_in.tcp == (80,)
    assert decide(container(command=["sleep", "1"]), "docker", True, missing) is None  # labkit's node image
    conditional = decide(container(**NGINX), "docker", True)  # validate: no engine asked
    assert conditional is not None and conditional.if_image_missing


@pytest.mark.parametrize(("words", "ports"), [
    ({"args": ["netexec"]}, (8080, 8081)),
    ({"args": ["netexec", "--http-port=80", "--udp-port=90"]}, (80, 90)),
    ({"args": ["netexec", "--http-port", "8000", "--udp-port", "-1"]}, (8000, None)),
    ({"command": ["/agnhost", "netexec", "--http-port=81"]}, (81, 8081)),
    ({"args": ["serve-hostname"]}, None),
    ({"command": ["sh"], "args": ["netexec"]}, None),
])
def test_agnhost_netexec_flags(words: dict, ports) -> None:
    assert netexec_ports(container(image=AGNHOST, **words)) == ports


def test_agnhost_netexec_stands_in_even_with_a_command_and_serves_its_flags_ports() -> None:
    netexec = container(image=AGNHOST, command=["/agnhost", "netexec", "--http-port=8080", "--udp-port=8081"],
                        ports=[{"containerPort": 8080}])
    stand_in = decide(netexec, "netns", None)
    assert stand_in is not None and "netexec" in stand_in.reason
    assert (stand_in.tcp, stand_in.udp) == ((8080,), (8081,))


def test_image_name() -> None:
    assert image_name(AGNHOST) == "agnhost"
    assert image_name("agnhost@sha256:abc") == "agnhost"
    assert image_name("localhost:5000/team/agnhost:1") == "agnhost"


def test_the_cluster_dns_pods_never_stand_in() -> None:
    dns = Pod.model_validate({"metadata": {"name": "dns", "namespace": "kube-system",
                                           "labels": {"k8s-app": "kube-dns"}},
                              "spec": {"containers": [{"name": "dns", "image": "labkit/node"}]}})
    assert pod_stand_ins(dns, "netns", None) == {}


def test_validate_says_which_containers_stand_in(capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "topologies" / "kube-docs.yaml"
    assert cli.main(["validate", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{path}: ok")
    said = {line.split(":")[1].strip() for line in lines[1:]}
    assert "default/web-0 container nginx" in said and "default/netexec container agnhost" in said
    assert not [line for line in lines if "client" in line]  # it has a command


# ---------------------------------------------------------------- what the stand-in answers


@pytest.fixture
def server(request):
    """A stand-in on loopback, free ports, in a thread of this process: (tcp port, udp port). Indirect
    parameter None: bound as `main` binds it (both families where there is IPv6)."""
    listeners = standin.bind([0], [0], address=getattr(request, "param", "127.0.0.1"))
    ports = {protocol: port for _, protocol, port in listeners}
    done = threading.Event()
    thread = threading.Thread(target=standin.serve, args=(listeners, standin.Identity("shop/web-0", "nginx")),
                              kwargs={"stop": done.is_set}, daemon=True)
    thread.start()
    yield ports["TCP"], ports["UDP"]
    done.set()
    thread.join(timeout=5)
    for sock, _, _ in listeners:
        sock.close()


def http(port: int, request: bytes) -> bytes:
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    sock.close()
    return data


def get(port: int, path: str) -> tuple[str, str]:
    head, _, body = http(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()).partition(b"\r\n\r\n")
    return head.decode().split("\r\n")[0], body.decode()


def test_http_answers_like_agnhost_netexec(server) -> None:
    tcp, _ = server
    assert get(tcp, "/hostname") == ("HTTP/1.1 200 OK", _socket.gethostname())
    assert get(tcp, "/hostName")[1] == _socket.gethostname()
    assert get(tcp, "/echo?msg=hello+there%21") == ("HTTP/1.1 200 OK", "hello there!")
    assert get(tcp, "/echo?msg=gone&code=503") == ("HTTP/1.1 503 Service Unavailable", "gone")
    status, body = get(tcp, "/clientip")
    assert status == "HTTP/1.1 200 OK" and body.startswith("127.0.0.1:") and int(body.split(":")[1]) > 0
    assert get(tcp, "/healthz") == ("HTTP/1.1 200 OK", "")


def test_the_page_names_pod_namespace_container_and_port(server) -> None:
    tcp, _ = server
    status, body = get(tcp, "/")
    assert status == "HTTP/1.1 200 OK"
    assert body.splitlines()[0] == f"labkit stand-in for pod shop/web-0, container nginx, port {tcp}/TCP"
    assert "pod: web-0\nnamespace: shop\ncontainer: nginx\n" in body


def test_a_post_form_and_a_head(server) -> None:
    tcp, _ = server
    reply = http(tcp, b"POST /echo HTTP/1.1\r\nContent-Length: 8\r\n"
                      b"Content-Type: application/x-www-form-urlencoded\r\n\r\nmsg=sent")
    assert reply.endswith(b"\r\n\r\nsent")
    head = http(tcp, b"HEAD /hostname HTTP/1.0\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")


def test_a_command_line_over_tcp(server) -> None:
    tcp, _ = server
    assert http(tcp, b"hostname\n") == (_socket.gethostname() + "\n").encode()
    assert http(tcp, b"echo Hi\n") == b"hi\n"  # agnhost reads its commands lowercased


def test_udp_commands_and_anything_else(server) -> None:
    _, udp = server
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    sock.settimeout(5)

    def ask(text: bytes) -> bytes:
        sock.sendto(text, ("127.0.0.1", udp))
        return sock.recvfrom(4096)[0]

    assert ask(b"hostname") == _socket.gethostname().encode()
    assert ask(b"echo Hello UDP\n") == b"hello udp"
    assert ask(b"clientip") == f"127.0.0.1:{sock.getsockname()[1]}".encode()
    assert ask(b"\x00\x01binary").decode().startswith("labkit stand-in for pod shop/web-0")
    sock.close()


def test_a_request_too_large_is_refused(server) -> None:
    tcp, _ = server
    assert http(tcp, b"GET /" + b"a" * standin.MAX_REQUEST + b" HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 431 ")


def test_unquote() -> None:
    assert standin.unquote("a%20b+c%zz%4") == "a b c%zz%4"
    assert standin.unquote("%C3%A9") == "é"
    assert standin.form("msg=a&msg=b&code=") == {"msg": "a", "code": ""}


def test_it_starts_bare_and_light() -> None:
    """No site, and none of the modules that make an interpreter heavier (socket's enum, selectors, labkit's
    other modules): a stand-in costs about what a bare interpreter does."""
    from labkit.lean import module_argv

    code = "import sys; sys.path[:0] = [%r]; import labkit.standin; print(' '.join(sys.modules))" % str(ROOT)
    argv = module_argv("labkit.standin")
    assert argv[1] == "-IS"
    modules = set(subprocess.run([sys.executable, "-IS", "-c", code], capture_output=True, text=True,
                                 check=True).stdout.split())
    assert "labkit.standin" in modules
    assert not modules & {"site", "socket", "selectors", "enum", "pyroute2", "labkit.runtime", "labkit.k8s"}


def test_bad_arguments_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert standin.main(["--tcp", "0x50"]) == 2
    assert standin.main(["--bogus", "1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "usage:" in err


def test_the_launcher_answers_a_malformed_request_and_ends_with_its_input() -> None:
    from labkit.lean import module_argv

    proc = subprocess.run(module_argv("labkit.standin", "launch", "--state", "/nonexistent"), input="a\tb\n",
                          capture_output=True, text=True, timeout=30, check=False)
    assert (proc.returncode, proc.stdout) == (0, "ERR a request has 8 tab-separated fields, got 2\n")


@pytest.mark.parametrize("server", [None], indirect=True)
def test_both_families_on_one_socket_and_the_client_as_agnhost_writes_it(server) -> None:
    """Where the namespace has IPv6 a stand-in answers on `::` too (a dual-stack pod's IPv6 address);
    an IPv4 client is still `a.b.c.d:port`, an IPv6 one `[v6]:port` (Go's RemoteAddr, agnhost's clientip)."""
    tcp, udp = server
    sock = _socket.socket(_socket.AF_INET6, _socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(("::1", tcp))
    sock.sendall(b"GET /clientip HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    port = sock.getsockname()[1]
    sock.close()
    assert data.endswith(f"[::1]:{port}".encode()), data
    assert get(tcp, "/clientip")[1].startswith("127.0.0.1:")
