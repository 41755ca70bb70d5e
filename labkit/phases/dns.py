"""Phase `dns`: the cluster DNS servers, started from the host into each kube-dns pod's network namespace.

Both families: a Service's records are its `cluster_ips` (A and AAAA for a dual-stack one), an
endpoint's its pod's addresses of the Service's families; the zone's NS name has the DNS Service's
address of each cluster family (`ClusterPlan.dns_ips`), and a server listens on every address of its
pod (the proxy DNATs the kube-dns ClusterIP of each family to the pod's address of that family).
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

from labkit import paths, processes
from labkit.files import makedirs
from labkit.k8s.system import DNS_APP
from labkit.phases.build import workloads_of
from labkit.topology.plan import Plan

if TYPE_CHECKING:
    from labkit.k8s import Workloads
    from labkit.phases.build import Build, PodRecord


def dns_config(plan: Plan, services: list, workloads: Workloads):
    """What the DNS server serves, from the service views (the same ones the data plane uses)."""
    from labkit.dns import records

    cluster = plan.cluster
    assert cluster is not None
    entries = []
    for view in services:
        ports = []
        for port in view.ports:
            target = port.endpoints[0].port if port.endpoints else port.target_port
            ports.append(records.ServicePort(port=port.port, name=port.name, protocol=port.protocol,
                                             target_port=target if isinstance(target, int) else None))
        entries.append(records.Service(
            namespace=view.namespace, name=view.name,
            type="Headless" if view.headless else view.type,
            cluster_ips=[] if view.headless else list(view.cluster_ips), ports=ports,
            endpoints=[records.Endpoint(ips=list(a.ips), hostname=a.hostname, pod=a.pod, node=a.node)
                       for a in view.addresses],
            external_name=view.external_name))
    return records.DnsConfig(zone=cluster.domain, services=entries, upstreams=list(cluster.dns_upstreams),
                             nameservers=[str(ip) for ip in cluster.dns_ips or (cluster.dns_ip,)],
                             namespaces=[n.name for n in workloads.namespaces])


def listen_addresses(pod: PodRecord) -> list[str]:
    """Every address of a DNS pod (its preferred family's first): the server answers on each."""
    return list(pod.ips)


def start_dns(b: Build) -> None:
    """Write the DNS config, then start the server in each kube-dns pod's network namespace, from the host."""
    from labkit.dns.deploy import start_servers

    plan, workloads = b.plan, workloads_of(b.plan)
    if workloads is None or plan.cluster is None:
        return
    files = paths.lab(plan.lab)
    folder, config = files.dns_dir, files.dns_config
    makedirs(folder)
    dns_config(plan, b.services, workloads).dump(config)
    replicas = [p for p in b.pods if p.namespace == "kube-system" and p.labels.get("k8s-app") == DNS_APP]
    serving = []
    for pod in replicas:  # `apply`: running servers re-read the config (written atomically above)
        pidfile = files.dns_pid_file(pod.name)
        server = processes.recorded(pidfile, marker=files.dir)  # never a pid reused since
        if server is not None and processes.signal_process(server, signal.SIGHUP):
            serving.append(pod)
        elif b.previous_services is not None or os.path.exists(pidfile):  # `apply`: the server died, or its
            # pid file names another process now: a new one, after any server of this pod still running
            # under a pid file that was lost or overwritten
            processes.stop(processes.find_naming(pidfile))
            if os.path.exists(pidfile):
                os.unlink(pidfile)
    start_servers(config, [(p.name, p.netns_path, listen_addresses(p)) for p in replicas if p not in serving], folder,
                  workers=plan.cluster.dns_workers)
