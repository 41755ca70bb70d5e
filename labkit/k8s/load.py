"""Read Kubernetes manifests (files or inline) into one `Workloads` value.

The phases: read every document (`kind: List` gives its items), check its kind and apiVersion,
validate it into a model (collecting every problem with its file, line and field path), reject
duplicates, then expand Deployments, ReplicaSets, StatefulSets and Jobs into the pods their
controllers would create, with names as reproducible as the lab itself. DaemonSets need the
nodes: `labkit.k8s.nodes.place_daemon_sets` expands them once the plan knows its nodes.

Kinds of the API that have no effect on a lab's network (ConfigMap, Secret, RBAC, ...) and
custom resources are accepted, their names checked, and listed in `Workloads.not_acted_on`;
fields labkit accepts without acting on them are listed in `Workloads.unused_fields`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from labkit.errors import InputError, Problem
from labkit.k8s import gateway, ingress, metallb, models, multus
from labkit.k8s import names
from labkit.k8s.fields import UnusedField, unused_fields
from labkit.k8s.models import (
    KINDS,
    DaemonSet,
    Deployment,
    Job,
    Namespace,
    NetworkPolicy,
    ObjectMeta,
    Pod,
    ReplicaSet,
    Service,
    StatefulSet,
)
from labkit.yamldoc import Document, UnreadableFile, parse_documents, read_documents

Loc = tuple[str | int, ...]

API_VERSIONS = {
    "Namespace": "v1",
    "Pod": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "DaemonSet": "apps/v1",
    "ReplicaSet": "apps/v1",
    "Job": "batch/v1",
    **multus.API_VERSIONS,
    **ingress.API_VERSIONS,
    **gateway.API_VERSIONS,
    **metallb.API_VERSIONS,
}
# NetworkAttachmentDefinition (labkit.k8s.multus); Ingress, IngressClass, kubernetes.io/tls Secrets
# (labkit.k8s.ingress); the Gateway API (labkit.k8s.gateway); MetalLB's IPAddressPool, L2Advertisement,
# BGPAdvertisement and BGPPeer (labkit.k8s.metallb)
KINDS = {**KINDS, **multus.KINDS, **ingress.KINDS, **gateway.KINDS, **metallb.KINDS}

# Workloads' field for the objects of each kind, as loaded (pods and namespaces are gathered apart)
WORKLOAD_FIELDS = {
    "deployments": "Deployment", "stateful_sets": "StatefulSet", "services": "Service",
    "network_policies": "NetworkPolicy", "daemon_sets": "DaemonSet", "replica_sets": "ReplicaSet", "jobs": "Job",
    "network_attachments": multus.KIND, "ingresses": "Ingress", "ingress_classes": "IngressClass",
    "tls_secrets": "Secret", "gateway_classes": "GatewayClass", "gateways": "Gateway", "http_routes": "HTTPRoute",
    "ip_address_pools": "IPAddressPool", "l2_advertisements": "L2Advertisement",
    "bgp_advertisements": "BGPAdvertisement", "bgp_peers": "BGPPeer",
}

# The built-in API's other kinds, by apiVersion: accepted, and listed as not acted on. Some would
# shape traffic in a real cluster (Ingress, EndpointSlice, ReplicationController, CronJob): their
# note says so. A group not listed here is a custom resource's, and accepted as one.
OTHER_KINDS: dict[str, tuple[str, ...]] = {
    "v1": ("ConfigMap", "Secret", "ServiceAccount", "Endpoints", "PersistentVolumeClaim", "PersistentVolume",
           "LimitRange", "ResourceQuota", "ReplicationController", "PodTemplate", "Event", "Node", "Binding"),
    "apps/v1": ("ControllerRevision",),
    "batch/v1": ("CronJob",),
    "policy/v1": ("PodDisruptionBudget",),
    "autoscaling/v1": ("HorizontalPodAutoscaler",),
    "autoscaling/v2": ("HorizontalPodAutoscaler",),
    "rbac.authorization.k8s.io/v1": ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"),
    "networking.k8s.io/v1": ("Ingress", "IngressClass", "IPAddress", "ServiceCIDR"),
    "discovery.k8s.io/v1": ("EndpointSlice",),
    "storage.k8s.io/v1": ("StorageClass", "CSIDriver", "CSINode", "VolumeAttachment", "CSIStorageCapacity"),
    "scheduling.k8s.io/v1": ("PriorityClass",),
    "coordination.k8s.io/v1": ("Lease",),
    "node.k8s.io/v1": ("RuntimeClass",),
    "apiextensions.k8s.io/v1": ("CustomResourceDefinition",),
    "admissionregistration.k8s.io/v1": ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
                                        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"),
    "certificates.k8s.io/v1": ("CertificateSigningRequest",),
    "events.k8s.io/v1": ("Event",),
    "flowcontrol.apiserver.k8s.io/v1": ("FlowSchema", "PriorityLevelConfiguration"),
}
CLUSTER_SCOPED = frozenset({
    "Namespace", "Node", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "StorageClass", "CSIDriver", "CSINode", "VolumeAttachment", "PriorityClass", "IngressClass", "RuntimeClass",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding", "CertificateSigningRequest", "FlowSchema", "PriorityLevelConfiguration",
    "IPAddress", "ServiceCIDR",
})
# What a real cluster would do with them that the lab does not.
NOT_BUILT = {
    "EndpointSlice": "endpoints come from Service selectors only",
    "Endpoints": "endpoints come from Service selectors only",
    "ReplicationController": "write a ReplicaSet or Deployment to get its pods",
    "CronJob": "no schedule runs in the lab; write a Job to run its pods once",
}
_NAME_RULES = {
    **dict.fromkeys(("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"), names.path_segment_name),
    "CronJob": names.job_name,
}

# The namespaces every cluster has, whether or not a manifest names them.
BUILTIN_NAMESPACES = ("default", "kube-system")

# Kubernetes' rand.SafeEncodeString alphabet: no vowels, no look-alike characters.
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


@dataclass(frozen=True)
class Origin:
    """Where an object was written, so later phases can point at its fields."""

    document: Document
    prefix: Loc = ()

    def problem(self, path: Loc, message: str) -> Problem:
        full = self.prefix + path
        return Problem(self.document.file, self.document.line_of(full), _dotted(full), message)


@dataclass(frozen=True)
class OtherObject:
    """An object of a kind that does not shape the lab's network: accepted, named in a note."""

    api_version: str
    kind: str
    namespace: str  # "" for cluster-scoped kinds
    name: str
    origin: Origin = field(compare=False, repr=False)

    @property
    def why(self) -> str:
        return NOT_BUILT.get(self.kind, "" if "/" not in self.api_version or self.api_version.split("/")[0]
                             in {v.split("/")[0] for v in OTHER_KINDS} else "a custom resource")

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


@dataclass(frozen=True)
class Workloads:
    """Everything the manifests declare, with controllers expanded into their pods."""

    namespaces: tuple[Namespace, ...] = ()
    pods: tuple[Pod, ...] = ()
    deployments: tuple[Deployment, ...] = ()
    stateful_sets: tuple[StatefulSet, ...] = ()
    services: tuple[Service, ...] = ()
    network_policies: tuple[NetworkPolicy, ...] = ()
    daemon_sets: tuple[DaemonSet, ...] = ()
    replica_sets: tuple[ReplicaSet, ...] = ()
    jobs: tuple[Job, ...] = ()
    network_attachments: tuple[multus.NetworkAttachmentDefinition, ...] = ()
    ingresses: tuple[ingress.Ingress, ...] = ()
    ingress_classes: tuple[ingress.IngressClass, ...] = ()
    tls_secrets: tuple[ingress.Secret, ...] = ()
    gateway_classes: tuple[gateway.GatewayClass, ...] = ()
    gateways: tuple[gateway.Gateway, ...] = ()
    http_routes: tuple[gateway.HTTPRoute, ...] = ()
    ip_address_pools: tuple[metallb.IPAddressPool, ...] = ()  # MetalLB's objects: labkit.k8s.metallb
    l2_advertisements: tuple[metallb.L2Advertisement, ...] = ()
    bgp_advertisements: tuple[metallb.BGPAdvertisement, ...] = ()
    bgp_peers: tuple[metallb.BGPPeer, ...] = ()
    # "ns/pod" -> "Deployment/web": which controller made a pod (absent for bare pods).
    owners: Mapping[str, str] = field(default_factory=dict)
    # Objects accepted but not built (ConfigMaps, RBAC, custom resources ...), and fields set but not acted on.
    not_acted_on: tuple[OtherObject, ...] = ()
    unused_fields: tuple[tuple[UnusedField, Origin], ...] = field(default=(), compare=False, repr=False)
    origins: Mapping[tuple[str, str, str], Origin] = field(default_factory=dict, compare=False, repr=False)

    def namespace(self, name: str) -> Namespace | None:
        return next((ns for ns in self.namespaces if ns.name == name), None)

    def pods_in(self, namespace: str) -> tuple[Pod, ...]:
        return tuple(p for p in self.pods if p.namespace == namespace)

    def problem(self, obj: models.K8sModel, path: Loc, message: str) -> Problem:
        """A Problem pointing at `path` inside the manifest `obj` came from."""
        namespace = "" if obj.kind == "Namespace" else obj.namespace  # type: ignore[attr-defined]
        key = (obj.kind, namespace, obj.name)  # type: ignore[attr-defined]
        origin = self.origins.get(key)
        if origin is None:
            return Problem("<workloads>", None, _dotted(path), f"{key[0]} {key[1]}/{key[2]}: {message}")
        return origin.problem(path, message)


def load_workloads(
    sources: Sequence[str | Mapping[str, Any]], base_dir: str | Path, *, origin: str = "workloads",
    line_of: Callable[[Loc], int | None] | None = None,
) -> Workloads:
    """Read manifests: file paths (relative to `base_dir`) or inline manifest mappings.

    `origin` names the file the sources were listed in (the topology file) and `line_of` finds
    the line of `("workloads", index)` in it, so a file that cannot be read is reported where it
    was named. Raises InputError listing every problem found.
    """
    documents: list[tuple[Document, Loc]] = []
    problems: list[Problem] = []
    for index, source in enumerate(sources):
        if isinstance(source, str):
            path = Path(source)
            if not path.is_absolute():
                path = Path(base_dir) / path
            try:
                documents.extend((doc, ()) for doc in read_documents(path))
            except UnreadableFile as exc:
                # named by the topology: point at where it is named (paths are relative to its folder)
                problems.append(Problem(origin, line_of(("workloads", index)) if line_of else None,
                                        f"workloads[{index}]", f"{source}: {exc.reason}"))
            except InputError as exc:
                problems.extend(exc.problems)
        elif isinstance(source, Mapping):
            # Inline manifests keep the topology file's lines when handed over as the loader made them.
            documents.append((Document(origin, source, getattr(source, "line", None)), ()))
        else:
            problems.append(Problem(origin, None, f"workloads[{index}]",
                                    "expected a manifest file path or an inline manifest mapping"))
    return _from_documents(documents, problems)


def parse_manifests(text: str, file: str = "<manifest>") -> Workloads:
    """Parse manifests held in a string (tests, tools)."""
    return _from_documents([(doc, ()) for doc in parse_documents(text, file)], [])


def _from_documents(documents: list[tuple[Document, Loc]], problems: list[Problem]) -> Workloads:
    objects: list[tuple[models._Object, Origin]] = []
    others: list[OtherObject] = []
    unused: list[tuple[UnusedField, Origin]] = []
    for doc, prefix in _flatten_lists(documents, problems):
        obj = _parse_object(doc, prefix, problems)
        if isinstance(obj, OtherObject):
            others.append(obj)
        elif obj is not None:
            objects.append((obj, Origin(doc, prefix)))
            unused.extend((f, Origin(doc, prefix)) for f in unused_fields(type(obj), _at(doc.data, prefix), obj.kind))
    if problems:
        raise InputError(problems)
    return dataclasses.replace(_assemble(objects), not_acted_on=tuple(others), unused_fields=tuple(unused))


# ---------------------------------------------------------------- one document


def _flatten_lists(documents: Iterable[tuple[Document, Loc]], problems: list[Problem]):
    """`kind: List` (what `kubectl get -o yaml` writes) holds its objects under `items`."""
    for doc, prefix in documents:
        data = doc.data
        if isinstance(data, Mapping) and data.get("kind") == "List" and data.get("apiVersion") == "v1":
            items = data.get("items") or []
            if not isinstance(items, list):
                problems.append(Problem(doc.file, doc.line_of(("items",)), "items", "expected a list"))
                continue
            for i in range(len(items)):
                yield doc, prefix + ("items", i)
        else:
            yield doc, prefix


def _at(data: Any, path: Loc) -> Any:
    for part in path:
        data = data[part]
    return data


def _parse_object(doc: Document, prefix: Loc, problems: list[Problem]) -> models._Object | OtherObject | None:
    data = _at(doc.data, prefix)

    def report(path: Loc, message: str) -> None:
        problems.append(Problem(doc.file, doc.line_of(prefix + path), _dotted(path), message))

    if not isinstance(data, Mapping):
        report((), "expected a Kubernetes object: a mapping with apiVersion, kind and metadata")
        return None
    kind = data.get("kind")
    valid_kinds = ", ".join(KINDS)
    if kind is None:
        report(("kind",), f"required field is missing; valid: {valid_kinds}")
        return None
    if kind not in KINDS or (kind == "Secret" and data.get("type") != ingress.TLS_TYPE):
        return _other_object(doc, prefix, data, report)  # only TLS Secrets are acted on (by the proxy)
    api_version = data.get("apiVersion")
    if api_version != API_VERSIONS[kind]:
        what = "required field is missing" if api_version is None else f"{api_version!r} is not valid for {kind}"
        report(("apiVersion",), f"{what}; valid: {API_VERSIONS[kind]}")
        return None
    try:
        obj = KINDS[kind].model_validate(data)
    except ValidationError as exc:
        for path, message in _explain(exc, data):
            report(path, message)
        return None
    problem = obj._name_rule(obj.metadata.name)
    if problem:
        report(("metadata", "name"), problem)
        return None
    return obj


def _other_object(doc: Document, prefix: Loc, data: Mapping[str, Any], report) -> OtherObject | None:
    """An object of a kind labkit does not build: its apiVersion, kind and names checked, its body not."""
    kind, api_version = data.get("kind"), data.get("apiVersion")
    if not isinstance(kind, str) or not kind[:1].isupper() or not kind.isalnum():
        report(("kind",), f"{kind!r} is not a kind; valid: a name like ConfigMap (built here: {', '.join(KINDS)})")
        return None
    if not isinstance(api_version, str) or not api_version:
        report(("apiVersion",), "required field is missing; valid: v1, apps/v1, GROUP/VERSION")
        return None
    group = api_version.rpartition("/")[0]
    versions_of_kind = sorted(v for v, kinds in OTHER_KINDS.items() if kind in kinds)
    if versions_of_kind and api_version not in versions_of_kind and "." not in group.removesuffix(".k8s.io"):
        report(("apiVersion",), f"{api_version!r} is not valid for {kind}; valid: {', '.join(versions_of_kind)}")
        return None
    builtin = api_version == "v1" or group in {v.rpartition("/")[0] for v in (*OTHER_KINDS, *API_VERSIONS.values())}
    if builtin and kind not in OTHER_KINDS.get(api_version, ()):
        known = sorted({k for k, v in API_VERSIONS.items() if v == api_version} | set(OTHER_KINDS.get(api_version, ())))
        if not known:
            versions = sorted(v for v in {*OTHER_KINDS, *API_VERSIONS.values()} if v.rpartition("/")[0] == group)
            report(("apiVersion",), f"{api_version!r} is not served; valid: {', '.join(versions)}")
        else:
            report(("kind",), f"{kind!r} is not a kind of {api_version}; valid: {', '.join(known)}")
        return None
    if not builtin and (group.count(".") < 1 or names.dns1123_subdomain(group)):
        report(("apiVersion",), f"{api_version!r} is not valid; valid: v1, or GROUP/VERSION with a DNS "
                                "subdomain as GROUP (e.g. monitoring.coreos.com/v1)")
        return None
    meta = data.get("metadata")
    if not isinstance(meta, Mapping):
        report(("metadata",), "required field is missing; valid: a mapping with at least name")
        return None
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        report(("metadata", "name"), "required field is missing")
        return None
    rule = _NAME_RULES.get(kind, names.dns1123_subdomain)
    if kind == "CustomResourceDefinition" and "." not in name:
        problem = f"{name!r} is not valid; valid: <plural>.<group>, as spec.names.plural and spec.group"
    else:
        problem = rule(name)
    namespace = "" if kind in CLUSTER_SCOPED else meta.get("namespace") or "default"
    if problem is None and namespace and (not isinstance(namespace, str) or names.dns1123_label(namespace)):
        report(("metadata", "namespace"), names.dns1123_label(namespace) if isinstance(namespace, str)
               else "expected a string")
        return None
    problem = problem or _labels_problem(meta.get("labels"), report)
    if problem:
        if problem is not True:
            report(("metadata", "name"), problem)
        return None
    return OtherObject(api_version, kind, namespace, name, Origin(doc, prefix))


def _labels_problem(labels: Any, report) -> str | bool | None:
    """Label keys and values by the API's rules; True when already reported."""
    if labels is None:
        return None
    if not isinstance(labels, Mapping):
        report(("metadata", "labels"), "expected a mapping")
        return True
    found = False
    for key, value in labels.items():
        problem = names.label_key(key) if isinstance(key, str) else "label keys are strings"
        if problem is None:
            problem = names.label_value(value) if isinstance(value, str) else \
                f"expected a string, got {models._describe(value)}"
        if problem:
            report(("metadata", "labels", key), problem)
            found = True
    return found or None


def _explain(exc: ValidationError, data: Any) -> list[tuple[Loc, str]]:
    """Pydantic's errors as (path in the YAML, message a user can act on)."""
    errors = exc.errors(include_url=False)
    locs = [tuple(e["loc"]) for e in errors]
    out: list[tuple[Loc, str]] = []
    for error, loc in zip(errors, locs, strict=True):
        # A list that came out short because an item in it failed: the item's error says it all.
        if any(other != loc and other[: len(loc)] == loc for other in locs):
            continue
        path = _yaml_path(data, loc)
        ctx = error.get("ctx") or {}
        if error["type"] == "k8s_unknown_field":
            path = path + (ctx["field"],)
        elif ctx.get("at"):
            path = path + tuple(ctx["at"])
        out.append((path, _message(error)))
    return out


def _yaml_path(data: Any, loc: Loc) -> Loc:
    """Keep the parts of pydantic's location that exist in the data (drop union tags)."""
    path: list[str | int] = []
    node = data
    for part in loc:
        in_mapping = isinstance(node, Mapping) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_mapping or in_list:
            node = node[part]
            path.append(part)
        elif isinstance(part, str) and isinstance(node, Mapping):
            path.append(part)  # a missing key: name it, the line is its parent's
            break
        else:
            break
    return tuple(path)


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = models._describe(error.get("input"))
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        expected = ctx.get("expected", "").replace(" or ", ", ")
        return f"{error.get('input')!r} is not valid; valid: {expected}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a number, got {got}"
    if kind in ("string_type",):
        return f"expected a string, got {got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {got}"
    if kind in ("tuple_type", "list_type"):
        return f"expected a list, got {got}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, got {got}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    return str(error["msg"])


def _dotted(path: Loc) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# ---------------------------------------------------------------- the whole set


def _assemble(objects: list[tuple[models._Object, Origin]]) -> Workloads:
    problems: list[Problem] = []
    origins: dict[tuple[str, str, str], Origin] = {}
    by_kind: dict[str, list] = {kind: [] for kind in KINDS}
    for obj, origin in objects:
        namespace = "" if obj.kind == "Namespace" else obj.namespace
        key = (obj.kind, namespace, obj.name)
        if key in origins:
            first = origins[key]
            first_at = f"{first.document.file}:{first.document.line_of(first.prefix + ('metadata', 'name'))}"
            what = obj.name if obj.kind == "Namespace" else obj.key
            problems.append(origin.problem(("metadata", "name"),
                                           f"duplicate {obj.kind} {what}; first defined at {first_at}"))
            continue
        origins[key] = origin
        by_kind[obj.kind].append(obj)

    pods: list[Pod] = list(by_kind["Pod"])
    owners: dict[str, str] = {}
    pod_origin = {(p.namespace, p.name): origins[("Pod", p.namespace, p.name)] for p in pods}
    expanders = {"Deployment": _deployment_pods, "StatefulSet": _stateful_set_pods,
                 "ReplicaSet": _replica_set_pods, "Job": _job_pods}
    for controller in (*by_kind["Deployment"], *by_kind["StatefulSet"], *by_kind["ReplicaSet"], *by_kind["Job"]):
        origin = origins[(controller.kind, controller.namespace, controller.name)]
        for pod in expanders[controller.kind](controller):
            clash = pod_origin.get((pod.namespace, pod.name))
            if clash is not None:
                clash_at = f"{clash.document.file}:{clash.document.line_of(clash.prefix + ('metadata', 'name'))}"
                problems.append(origin.problem(
                    ("metadata", "name"),
                    f"{controller.kind} {controller.key} would create pod {pod.name}, "
                    f"which already exists (defined at {clash_at})",
                ))
                continue
            pods.append(pod)
            pod_origin[(pod.namespace, pod.name)] = Origin(origin.document, origin.prefix + ("spec", "template"))
            owners[pod.key] = f"{controller.kind}/{controller.name}"
            origins[("Pod", pod.namespace, pod.name)] = pod_origin[(pod.namespace, pod.name)]
    if problems:
        raise InputError(problems)

    namespaces = {ns.name: ns for ns in by_kind["Namespace"]}
    used = {*BUILTIN_NAMESPACES}
    for kind, objs in by_kind.items():
        if kind != "Namespace":
            used.update(obj.namespace for obj in objs)
    for name in sorted(used - namespaces.keys()):
        namespaces[name] = Namespace(metadata=ObjectMeta(name=name))
    return Workloads(
        namespaces=tuple(sorted(namespaces.values(), key=lambda ns: ns.name)),
        pods=tuple(pods),
        **{field: tuple(by_kind[kind]) for field, kind in WORKLOAD_FIELDS.items()},
        owners=owners,
        origins=origins,
    )


def _safe_encode(digest: bytes, length: int) -> str:
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(length):
        number, rest = divmod(number, len(_SAFE_ALPHABET))
        chars.append(_SAFE_ALPHABET[rest])
    return "".join(chars)


def template_hash(template: models.PodTemplate) -> str:
    """The `pod-template-hash` a ReplicaSet would carry: 10 characters, stable for a template."""
    canonical = json.dumps(template.model_dump(mode="json", by_alias=True), sort_keys=True)
    return _safe_encode(hashlib.sha256(canonical.encode()).digest(), 10)


def _deployment_pods(deploy: Deployment) -> list[Pod]:
    pod_hash = template_hash(deploy.spec.template)
    labels = {**deploy.spec.template.metadata.labels, "pod-template-hash": pod_hash}
    return _generated_pods(deploy.namespace, f"{deploy.name}-{pod_hash}", deploy.spec.replicas, labels,
                           deploy.spec.template.spec, annotations=deploy.spec.template.metadata.annotations)


def _replica_set_pods(rs: ReplicaSet) -> list[Pod]:
    return _generated_pods(rs.namespace, rs.name, rs.spec.replicas, rs.spec.template.metadata.labels,
                           rs.spec.template.spec, annotations=rs.spec.template.metadata.annotations)


def _job_pods(job: Job) -> list[Pod]:
    """The pods a Job starts, labelled as the Job controller labels them (controller-uid from the name:
    a lab has no uids, and the same Job gets the same pods every time)."""
    uid = _job_uid(job)
    labels = {**job.spec.template.metadata.labels, "batch.kubernetes.io/controller-uid": uid,
              "batch.kubernetes.io/job-name": job.name, "controller-uid": uid, "job-name": job.name}
    salt = template_hash(job.spec.template)
    return _generated_pods(job.namespace, job.name, job.spec.pod_count, labels, job.spec.template.spec, salt=salt,
                           annotations=job.spec.template.metadata.annotations)


def _job_uid(job: Job) -> str:
    digest = hashlib.sha256(f"{job.namespace}/{job.name}".encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def _generated_pods(namespace: str, owner: str, count: int, labels: Mapping[str, str], spec: models.PodSpec,
                    *, salt: str = "", annotations: Mapping[str, str] | None = None) -> list[Pod]:
    """`count` pods named as a controller's generateName `<owner>-` gives them: 5 safe characters,
    derived from the owner (and `salt`) rather than random, so a lab's pod names are reproducible."""
    base = f"{owner}-"[:58]  # as the API server truncates generateName
    pods, seen = [], set()
    for index in range(count):
        attempt = 0
        while True:
            seed = f"{namespace}/{owner}/{salt + '/' if salt else ''}{index}/{attempt}".encode()
            name = base + _safe_encode(hashlib.sha256(seed).digest(), 5)
            if name not in seen:
                break
            attempt += 1
        seen.add(name)
        pods.append(_pod(namespace, name, labels, spec, annotations))
    return pods


def _stateful_set_pods(sts: StatefulSet) -> list[Pod]:
    pods = []
    template = sts.spec.template.spec
    for index in range(sts.spec.replicas):
        name = f"{sts.name}-{index}"
        labels = {
            **sts.spec.template.metadata.labels,
            "statefulset.kubernetes.io/pod-name": name,
            "apps.kubernetes.io/pod-index": str(index),
        }
        spec = template.model_copy(update={"hostname": name, "subdomain": sts.spec.serviceName})
        pods.append(_pod(sts.namespace, name, labels, spec, sts.spec.template.metadata.annotations))
    return pods


def _pod(namespace: str, name: str, labels: Mapping[str, str], spec: models.PodSpec,
         annotations: Mapping[str, str] | None = None) -> Pod:
    return Pod(metadata=ObjectMeta(name=name, namespace=namespace, labels=dict(labels),
                                   annotations=dict(annotations or {})), spec=spec)
