"""Pods per second brought up in-process on a three-node cluster (the `pods` phase of `up`)."""

from __future__ import annotations

import os
import tempfile

from labkit import lab
from labkit.progress import Progress

TOPOLOGY = """name: {name}
cluster: {{pod-cidr: 10.244.0.0/16, service-cidr: 10.96.0.0/16, cni: {{backend: {backend}}}}}
topology:
  nodes:
    n1: {{kind: k8s-node}}
    n2: {{kind: k8s-node}}
    n3: {{kind: k8s-node}}
workloads:
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {{name: load, namespace: default}}
    spec:
      replicas: {pods}
      selector: {{matchLabels: {{app: load}}}}
      template:
        metadata: {{labels: {{app: load}}}}
        spec:
          containers: [{{name: c, image: labkit/node, command: [sleep, infinity]}}]
"""


def bench_pods(pods: int = 300, backend: str = "host-gw") -> dict:
    name = f"bpod{os.getpid() % 10000}"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        fh.write(TOPOLOGY.format(name=name, pods=pods, backend=backend))
    try:
        summary = lab.up(fh.name, progress=Progress(quiet=True))
        seconds = summary["timings"]["pods"]
        return {"pods": len(summary["pods"]), "seconds": seconds, "pods_per_second": len(summary["pods"]) / seconds,
                "up_total": sum(summary["timings"].values())}
    finally:
        lab.down(name)
        os.unlink(fh.name)


def print_pods_bench(pods: int = 300) -> dict:
    from rich.console import Console
    from rich.table import Table

    result = bench_pods(pods)
    table = Table(title=f"pods brought up in-process on 3 k8s-nodes ({pods} pods)")
    for column in ("pods", "pods phase", "pods/s", "whole up"):
        table.add_column(column, justify="right")
    table.add_row(str(result["pods"]), f"{result['seconds'] * 1000:.0f} ms", f"{result['pods_per_second']:.0f}",
                  f"{result['up_total'] * 1000:.0f} ms")
    Console().print(table)
    return result
