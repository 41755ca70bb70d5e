"""labkit's ingress controller: Ingress (networking.k8s.io/v1) and the Gateway API's HTTPRoutes on HAProxy.

Why HAProxy (Debian's `haproxy`) rather than nginx: weighted backends are a server weight
(an HTTPRoute's canary split needs no extra module), header and method matches are plain ACLs,
and a reload in master-worker mode hands the listening sockets to new workers while old ones
finish their connections. nginx can do the first two only with map/split_clients tricks.

`routes` turns the served objects and the Services' endpoints into a routing table (pure);
`configure` renders it (templates/haproxy.cfg.j2) with the TLS Secrets as PEM files beside it;
`haproxy` starts and reloads the proxy in each proxy pod's network namespace.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from labkit import templating
from labkit.files import makedirs, write_atomic
from labkit.ingress.routes import ProxyConfig, condition, host_condition, proxy_config
from labkit.k8s.load import Workloads

__all__ = ["ProxyConfig", "configure", "proxy_config", "render"]


def _pem_name(secret: str) -> str:
    return secret.replace("/", "_") + ".pem"


def render(lab: str, config: ProxyConfig, folder: str) -> str:
    crt_lists = {fe.name: os.path.join(folder, f"{fe.name}.crt-list") for fe in config.frontends
                 if fe.protocol == "HTTPS"}
    return templating.render("haproxy.cfg.j2", trim=True, lab=lab, frontends=config.frontends,
                             backends=config.backends, default_backend=config.default_backend,
                             crt_lists=crt_lists, condition=condition, host_condition=host_condition)


def configure(lab: str, workloads: Workloads, views: Sequence[Any], folder: str) -> tuple[str, ProxyConfig]:
    """Write the proxy's config (and its certificates, 0600) into `folder`; its path and the table."""
    config = proxy_config(workloads, views)
    makedirs(folder)
    certs = os.path.join(folder, "certs")
    makedirs(certs, 0o700)
    secrets = {s.key: s for s in workloads.tls_secrets}
    for name in config.secrets:
        write_atomic(os.path.join(certs, _pem_name(name)), secrets[name].pem(), mode=0o600)
    for fe in config.frontends:
        if fe.protocol != "HTTPS":
            continue
        lines = [f"{os.path.join(certs, _pem_name(secret))} {' '.join(hosts)}".rstrip() for secret, hosts in fe.certs]
        write_atomic(os.path.join(folder, f"{fe.name}.crt-list"), "\n".join(lines) + "\n", mode=0o600)
    path = os.path.join(folder, "haproxy.cfg")
    write_atomic(path, render(lab, config, folder), mode=0o644)
    return path, config
