"""A docker-host's container network, Docker's default model, made of the reference CNI plugins.

Every docker-host gets the same bridge network Docker gives every host: `docker0` holding
172.17.0.1/16, containers addressed from 172.17.0.0/16 by `host-local`, what they send out
masqueraded to the host's address (`bridge` with `ipMasq`), and their `hostPort`s published on the
host's addresses by `portmap`. Two hosts' containers get the same addresses, so one host's
container cannot name another host's container by its address; only a published port on the
host's own address reaches it. That is the contrast to Kubernetes' flat pod network.

The conflist is rendered from templates/docker-host-conflist.json.j2 and executed by
`labkit.cni.conflist.execute_conflist` like any other: the plugins are exec'd from /usr/lib/cni
(containernetworking-plugins) in the host's network namespace.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

TEMPLATE = "docker-host-conflist.json.j2"


def render_docker_conflist(name: str, *, bridge: str, subnet: str, data_dir: str) -> str:
    from labkit import templating

    text = templating.render(TEMPLATE, name=name, bridge=bridge, subnet=subnet, data_dir=data_dir)
    json.loads(text)  # a template bug must not reach a plugin
    return text


def write_docker_conflist(conf_dir: str | os.PathLike, name: str, *, bridge: str, subnet: str,
                          data_dir: str) -> Path:
    """Render and write `<conf_dir>/10-<name>.conflist` atomically (where a k8s-node's conflist would be)."""
    from labkit.files import write_atomic

    text = render_docker_conflist(name, bridge=bridge, subnet=subnet, data_dir=data_dir)
    return write_atomic(Path(conf_dir) / f"10-{name}.conflist", text, sync=True)


def port_mappings(ports: Iterable) -> list[dict]:
    """The runtime's `portMappings` capability for a pod's containerPorts that have a hostPort."""
    return [{"hostPort": p.hostPort, "containerPort": p.containerPort, "protocol": p.protocol.lower()}
            for p in ports if p.hostPort is not None]
