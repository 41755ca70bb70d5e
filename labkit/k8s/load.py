"""Read Kubernetes manifests (files or inline) into one `Workloads` value.

The phases: read every document, check its kind and apiVersion, validate it into
a model (collecting every problem with its file, line and field path), reject
duplicates, then expand Deployments and StatefulSets into the pods their
controllers would create, with names as reproducible as the lab itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from labkit.errors import InputError, Problem
from labkit.k8s import models, multus
from labkit.k8s.models import (
    KINDS,
    Deployment,
    Namespace,
    NetworkPolicy,
    ObjectMeta,
    Pod,
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
    **multus.API_VERSIONS,
}
KINDS = {**KINDS, **multus.KINDS}  # NetworkAttachmentDefinition: labkit.k8s.multus

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
class Workloads:
    """Everything the manifests declare, with controllers expanded into their pods."""

    namespaces: tuple[Namespace, ...] = ()
    pods: tuple[Pod, ...] = ()
    deployments: tuple[Deployment, ...] = ()
    stateful_sets: tuple[StatefulSet, ...] = ()
    services: tuple[Service, ...] = ()
    network_policies: tuple[NetworkPolicy, ...] = ()
    network_attachments: tuple[multus.NetworkAttachmentDefinition, ...] = ()
    # "ns/pod" -> "Deployment/web": which controller made a pod (absent for bare pods).
    owners: Mapping[str, str] = field(default_factory=dict)
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
    for doc, prefix in _flatten_lists(documents, problems):
        obj = _parse_object(doc, prefix, problems)
        if obj is not None:
            objects.append((obj, Origin(doc, prefix)))
    if problems:
        raise InputError(problems)
    return _assemble(objects)


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


def _parse_object(doc: Document, prefix: Loc, problems: list[Problem]) -> models._Object | None:
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
    if kind not in KINDS:
        report(("kind",), f"{kind!r} is not supported; valid: {valid_kinds}")
        return None
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
    for controller in (*by_kind["Deployment"], *by_kind["StatefulSet"]):
        origin = origins[(controller.kind, controller.namespace, controller.name)]
        expand = _deployment_pods if controller.kind == "Deployment" else _stateful_set_pods
        for pod in expand(controller):
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
        deployments=tuple(by_kind["Deployment"]),
        stateful_sets=tuple(by_kind["StatefulSet"]),
        services=tuple(by_kind["Service"]),
        network_policies=tuple(by_kind["NetworkPolicy"]),
        network_attachments=tuple(by_kind[multus.KIND]),
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
    replica_set = f"{deploy.name}-{pod_hash}"
    base = f"{replica_set}-"[:58]  # as the API server truncates generateName
    labels = {**deploy.spec.template.metadata.labels, "pod-template-hash": pod_hash}
    pods, seen = [], set()
    for index in range(deploy.spec.replicas):
        salt = 0
        while True:
            seed = f"{deploy.namespace}/{replica_set}/{index}/{salt}".encode()
            name = base + _safe_encode(hashlib.sha256(seed).digest(), 5)
            if name not in seen:
                break
            salt += 1
        seen.add(name)
        pods.append(_pod(deploy.namespace, name, labels, deploy.spec.template.spec,
                         deploy.spec.template.metadata.annotations))
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
