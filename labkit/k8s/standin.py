"""Which containers run labkit's stand-in workload instead of what they name, and why: pure data.

A lab is about the network; the program inside a pod matters only for its ports, its answers and
its name. A container labkit cannot run as written runs the stand-in instead (labkit.standin: one
small process serving every declared containerPort, TCP and UDP, answering like the Kubernetes e2e
image agnhost's `netexec`):

- netns runtime (it runs commands from the host's filesystem, not images): a container with no
  `command` - an image alone, or `args` alone, whose image entrypoint is unknown here - and any
  container of agnhost's image running `netexec`;
- docker runtime: a container whose image the engine does not have, when the topology allows it
  (`cluster.stand-ins: true`, or `labkit up --stand-in`); labkit pulls nothing.

`cluster.stand-ins`: auto (None here: the netns runtime only), true, false (never: such a container
runs nothing). The decision is made here, from the plan alone, so `labkit validate` reports it
without touching the system; the one fact it may need from outside - which images the Docker
engine has - is passed in. The runtimes (labkit.runtime) start the process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from labkit.k8s.models import Container, Pod
from labkit.k8s.system import DNS_APP, DNS_NAMESPACE

NETEXEC_HTTP_PORT = 8080  # agnhost netexec's defaults (--http-port, --udp-port; -1 turns one off)
NETEXEC_UDP_PORT = 8081


@dataclass(frozen=True)
class StandIn:
    """A container's stand-in: why it runs, and the ports it serves."""

    reason: str
    tcp: tuple[int, ...] = ()  # HTTP on each
    udp: tuple[int, ...] = ()  # agnhost's UDP commands on each
    if_image_missing: bool = False  # docker, decided without the engine (validate): only if it lacks the image


def image_name(image: str) -> str:
    """The repository's last path component, without tag or digest: 'registry.k8s.io/e2e-test-images/agnhost:2.53'
    -> 'agnhost'."""
    name = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return name.split(":", 1)[0]


def netexec_ports(container: Container) -> tuple[int | None, int | None] | None:
    """(http port, udp port) of an agnhost container running `netexec` (None: turned off with -1);
    None when the container is not one."""
    if not container.image or image_name(container.image) != "agnhost":
        return None
    words = list(container.args)
    if container.command:
        if container.command[0].rsplit("/", 1)[-1] != "agnhost":
            return None
        words = [*container.command[1:], *words]
    if not words or words[0] != "netexec":
        return None
    ports: dict[str, int | None] = {"--http-port": NETEXEC_HTTP_PORT, "--udp-port": NETEXEC_UDP_PORT}
    rest = words[1:]
    while rest:
        word = rest.pop(0)
        flag, eq, value = word.partition("=")
        if flag not in ports:
            continue  # agnhost's other flags (TLS, --sctp-port, ...): nothing labkit's stand-in does
        if not eq:
            value = rest.pop(0) if rest else ""
        try:
            port = int(value)
        except ValueError:
            continue  # as agnhost's own default would apply, the default stays
        ports[flag] = port if 0 < port < 65536 else None
    return ports["--http-port"], ports["--udp-port"]


def _declared(container: Container, protocol: str) -> list[int]:
    return [p.containerPort for p in container.ports if p.protocol == protocol]


def _ports(container: Container) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Declared ports, plus netexec's own flags' ports: every port it would serve."""
    tcp, udp = _declared(container, "TCP"), _declared(container, "UDP")
    netexec = netexec_ports(container)
    if netexec is not None:
        http, dgram = netexec
        tcp += [http] if http else []
        udp += [dgram] if dgram else []
    return tuple(sorted(set(tcp))), tuple(sorted(set(udp)))


def decide(container: Container, runtime: str, policy: bool | None,
           image_present: Callable[[str], bool] | None = None) -> StandIn | None:
    """The container's stand-in, or None when it runs as written (or, with stand-ins off, runs nothing).

    `policy` is cluster.stand-ins (None: auto). `image_present` answers for the docker runtime whether the
    engine has an image; without it (validate) a docker container's stand-in is conditional."""
    if policy is False:
        return None
    tcp, udp = _ports(container)
    image = container.image
    if runtime == "docker":
        if not image or policy is not True:
            return None  # no image: labkit's node image runs the command; not allowed: `up` says the image is missing
        if image_present is None:
            return StandIn(f"if the Docker engine has no image {image} (labkit pulls nothing)", tcp, udp,
                           if_image_missing=True)
        if image_present(image):
            return None
        return StandIn(f"image {image} is not in the Docker engine (labkit pulls nothing)", tcp, udp)
    if netexec_ports(container) is not None:
        return StandIn("agnhost netexec: the stand-in answers as it does, on its own flags' ports", tcp, udp)
    if container.command:
        return None
    if container.args:
        return StandIn(f"args without a command: the entrypoint of image {image or '(none)'} is unknown to the "
                       "netns runtime", tcp, udp)
    if image:
        return StandIn(f"image {image}, no command: the netns runtime runs host commands, not images", tcp, udp)
    return StandIn("no command and no image", tcp, udp)


def is_system_pod(pod: Pod) -> bool:
    """The cluster DNS pods: labkit starts their server itself (labkit.k8s.system)."""
    return pod.namespace == DNS_NAMESPACE and pod.labels.get("k8s-app") == DNS_APP


def pod_stand_ins(pod: Pod, runtime: str, policy: bool | None,
                  image_present: Callable[[str], bool] | None = None) -> dict[str, StandIn]:
    """The pod's containers that run a stand-in, by container name."""
    if is_system_pod(pod):
        return {}
    found = {}
    for container in pod.spec.containers:
        stand_in = decide(container, runtime, policy, image_present)
        if stand_in is not None:
            found[container.name] = stand_in
    return found


def stand_ins(pods: Iterable[Pod], runtime: str, policy: bool | None,
              image_present: Callable[[str], bool] | None = None) -> list[tuple[Pod, str, StandIn]]:
    """(pod, container name, stand-in) for every container of `pods` that runs one, in manifest order."""
    return [(pod, name, stand_in) for pod in pods
            for name, stand_in in pod_stand_ins(pod, runtime, policy, image_present).items()]


def program(container: Container) -> tuple[str, ...]:
    """What the netns runtime runs for a container: `command` + `args` as Kubernetes combines them. `args`
    alone only replace the image's default arguments, so they are never the program: nothing is returned."""
    return (*container.command, *container.args) if container.command else ()
