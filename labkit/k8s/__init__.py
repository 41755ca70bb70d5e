"""Kubernetes manifests, parsed into typed, immutable models (a subset of the API).

Entry point: `load_workloads(sources, base_dir)` -> `Workloads`.
"""

from labkit.k8s.load import Workloads, load_workloads, parse_manifests, template_hash
from labkit.k8s.models import (
    Container,
    ContainerPort,
    Deployment,
    LabelSelector,
    Namespace,
    NetworkPolicy,
    Pod,
    PodSpec,
    Service,
    ServicePort,
    ServiceSpec,
    StatefulSet,
)
from labkit.k8s.schedule import schedule_pods

__all__ = [
    "Container",
    "ContainerPort",
    "Deployment",
    "LabelSelector",
    "Namespace",
    "NetworkPolicy",
    "Pod",
    "PodSpec",
    "Service",
    "ServicePort",
    "ServiceSpec",
    "StatefulSet",
    "Workloads",
    "load_workloads",
    "parse_manifests",
    "schedule_pods",
    "template_hash",
]
