"""Typed, immutable Kubernetes objects: the subset of the API labkit realises.

Field names are the API's own (camelCase), so a manifest reads straight into a
model and an error path (`spec.ports[0].targetPort`) is the path in the YAML.
Every field of the API's schema for these kinds is accepted. Those labkit does not act on
(probes, resources, volumes ...) are listed per model in `_ignored` (dropped unread) or
`_unused` (validated, not acted on); `labkit.k8s.fields` reports the ones a manifest sets.
Any other field is an error, as `kubectl apply --validate=strict` makes it.
`null` is read as "not set", as the API server does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic_core import PydanticCustomError

from labkit.families import family_name, family_of
from labkit.k8s import names


def _fail(message: str, *at: str | int) -> PydanticCustomError:
    """A validation error; `at` is the path below the validated object it is about."""
    return PydanticCustomError("k8s_value", message, {"at": at} if at else None)


def _check(rule):
    def validate(value: str) -> str:
        problem = rule(value)
        if problem:
            raise PydanticCustomError("k8s_value", problem)
        return value

    return AfterValidator(validate)


def _in_range(low: int, high: int, what: str):
    def validate(value: int) -> int:
        if not low <= value <= high:
            raise PydanticCustomError("k8s_value", f"{value} is out of range; valid: {what} {low}-{high}")
        return value

    return AfterValidator(validate)


def _int_or_str(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise PydanticCustomError(
            "k8s_type", "expected a number or a port name, got {got}", {"got": _describe(value)}
        )
    return value


def _describe(value: Any) -> str:
    """How a wrong value reads in a message: "a string ('80')", "a list"."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    kinds = ((bool, "a boolean"), (int, "a number"), (float, "a number"), (str, "a string"))
    kind = next((text for base, text in kinds if isinstance(value, base)), None)
    if value is None:
        return "nothing (null)"
    return f"{kind or type(value).__name__} ({value!r})"


DNS1123Label = Annotated[StrictStr, _check(names.dns1123_label)]
DNS1123Subdomain = Annotated[StrictStr, _check(names.dns1123_subdomain)]
PortName = Annotated[StrictStr, _check(names.iana_svc_name)]  # a container's port: IANA_SVC_NAME
ServicePortName = Annotated[StrictStr, _check(names.service_port_name)]  # a Service's port: a DNS-1123 label
PortNumber = Annotated[StrictInt, _in_range(1, 65535, "port numbers")]
IntOrString = Annotated[int | str, BeforeValidator(_int_or_str)]
# keys and values checked one by one, so every bad label of a map is reported, not only the first
Labels = dict[Annotated[StrictStr, _check(names.label_key)], Annotated[StrictStr, _check(names.label_value)]]
Protocol = Literal["TCP", "UDP"]
# A NetworkPolicy may name SCTP even where nothing speaks it: its rule still selects (isolates) the
# pods, and allows no TCP or UDP (the upstream e2e cases on SCTP policies probe exactly that).
PolicyProtocol = Literal["TCP", "UDP", "SCTP"]


class K8sModel(BaseModel):
    """Frozen, strict about unknown fields, lenient about the ones listed in `_ignored`."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    _ignored: ClassVar[frozenset[str]] = frozenset()  # in the API, dropped unread: labkit does not act on them
    _unused: ClassVar[frozenset[str]] = frozenset()  # modelled and checked, but labkit does not act on them
    _bookkeeping: ClassVar[frozenset[str]] = frozenset()  # of `_ignored`: what the API server writes, never noted

    @model_validator(mode="before")
    @classmethod
    def _drop_ignored(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            if data is None:
                return {}
            raise PydanticCustomError("k8s_type", "expected a mapping, got {got}", {"got": _describe(data)})
        known = {f.alias or name for name, f in cls.model_fields.items()}
        kept = {}
        for key, value in data.items():
            if value is None or key in cls._ignored:
                continue
            if key not in known:
                raise PydanticCustomError(
                    "k8s_unknown_field",
                    "unknown field; valid: {valid}",
                    {"field": key, "valid": ", ".join(sorted(known | (cls._ignored - cls._bookkeeping)))},
                )
            kept[key] = value
        return kept


# ---------------------------------------------------------------- metadata, selectors


_META_BOOKKEEPING = frozenset({
    "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences", "finalizers",
    "managedFields", "selfLink", "generateName",
})
# metadata.annotations: read for the few labkit acts on (k8s.v1.cni.cncf.io/networks); kept out of a
# template's hash when empty, so pods of templates without annotations keep their names.
Annotations = Annotated[dict[StrictStr, StrictStr], Field(default_factory=dict, exclude_if=lambda v: not v)]


class ObjectMeta(K8sModel):
    _ignored = _META_BOOKKEEPING
    _bookkeeping = _META_BOOKKEEPING

    name: StrictStr
    namespace: DNS1123Label = "default"
    labels: Labels = Field(default_factory=dict)
    annotations: Annotations


class TemplateMeta(K8sModel):
    """A pod template's metadata: labels only matter; a name or namespace is ignored there."""

    _ignored = _META_BOOKKEEPING | {"name", "namespace"}
    _bookkeeping = _ignored

    labels: Labels = Field(default_factory=dict)
    annotations: Annotations


class LabelSelectorRequirement(K8sModel):
    key: Annotated[StrictStr, _check(names.label_key)]
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[Annotated[StrictStr, _check(names.label_value)], ...] = ()

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise _fail(f"operator {self.operator} needs at least one value", "values")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise _fail(f"operator {self.operator} takes no values", "values")
        return self


class LabelSelector(K8sModel):
    matchLabels: Labels = Field(default_factory=dict)
    matchExpressions: tuple[LabelSelectorRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """An empty selector matches everything (as in NetworkPolicy and Deployments)."""
        return names.matches_labels(self.matchLabels, labels) and all(
            names.matches_expression(e.operator, e.key, e.values, labels) for e in self.matchExpressions
        )


# ---------------------------------------------------------------- pods


class ContainerPort(K8sModel):
    _ignored = frozenset({"hostIP"})
    # labkit does not publish a pod's port on its node: a NodePort Service does (or hostNetwork: true)
    _unused = frozenset({"hostPort"})

    name: PortName | None = None
    containerPort: PortNumber
    protocol: Protocol = "TCP"
    hostPort: PortNumber | None = None  # published on docker-host nodes (portmap); elsewhere not acted on


class EnvVar(K8sModel):
    _ignored = frozenset({"valueFrom"})

    name: Annotated[StrictStr, _check(names.env_var_name)]
    value: StrictStr = ""


# Linux capabilities by their Kubernetes names (CAP_ dropped), as container runtimes accept them.
CAPABILITIES = (  # in capability.h order: index i is capability number i (the docker runtime reads bitmasks)
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)


def _capability(value: str) -> str | None:
    name = value.upper().removeprefix("CAP_")
    if name in CAPABILITIES or name == "ALL":
        return None
    return f"{value!r} is not a capability; valid: ALL or one of {', '.join(CAPABILITIES)}"


Capability = Annotated[StrictStr, _check(_capability)]


class Capabilities(K8sModel):
    add: tuple[Capability, ...] = ()
    drop: tuple[Capability, ...] = ()


class SecurityContext(K8sModel):
    """What labkit acts on of a container's securityContext: its capabilities (netns runtime)."""

    _ignored = frozenset({
        "runAsUser", "runAsGroup", "runAsNonRoot", "readOnlyRootFilesystem", "allowPrivilegeEscalation",
        "seLinuxOptions", "seccompProfile", "appArmorProfile", "procMount", "windowsOptions",
    })

    capabilities: Capabilities | None = None
    privileged: StrictBool | None = None


class Container(K8sModel):
    _ignored = frozenset({
        "resources", "livenessProbe", "readinessProbe", "startupProbe", "volumeMounts",
        "volumeDevices", "imagePullPolicy", "workingDir", "lifecycle",
        "terminationMessagePath", "terminationMessagePolicy", "stdin", "stdinOnce", "tty",
        "envFrom", "resizePolicy", "restartPolicy", "restartPolicyRules",
    })

    name: DNS1123Label
    image: StrictStr | None = None
    command: tuple[StrictStr, ...] = ()
    args: tuple[StrictStr, ...] = ()
    env: tuple[EnvVar, ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    securityContext: SecurityContext | None = None

    @model_validator(mode="after")
    def _program_named(self) -> Container:
        if self.command and not self.command[0].strip():
            raise _fail("the program to run (command[0]) is empty; valid: a program name or path, "
                        "e.g. command: [\"sleep\", \"infinity\"]", "command", 0)
        return self

    @model_validator(mode="after")
    def _unique_port_names(self) -> Container:
        seen: set[str] = set()
        for i, port in enumerate(self.ports):
            if port.name and port.name in seen:
                raise _fail(f"{port.name!r} is used by two ports", "ports", i, "name")
            if port.name:
                seen.add(port.name)
        return self


class Toleration(K8sModel):
    """What taints a pod tolerates (core/v1 Toleration, validated as the API server does)."""

    _unused = frozenset({"tolerationSeconds"})

    key: Annotated[StrictStr, _check(names.label_key)] | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: Annotated[StrictStr, _check(names.label_value)] = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute", ""] = ""
    tolerationSeconds: StrictInt | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if not self.key and self.operator != "Exists":
            raise _fail("operator must be Exists when key is empty (a toleration of every taint)", "operator")
        if self.operator == "Exists" and self.value:
            raise _fail("must be empty when operator is Exists", "value")
        if self.tolerationSeconds is not None and self.effect != "NoExecute":
            raise _fail("only valid with effect NoExecute", "tolerationSeconds")
        return self

    def tolerates(self, key: str, value: str, effect: str) -> bool:
        """As the scheduler's ToleratesTaint: an empty effect matches every effect, an empty key every key."""
        if self.effect and self.effect != effect:
            return False
        if self.key and self.key != key:
            return False
        return self.operator == "Exists" or self.value == value


class PodSpec(K8sModel):
    _ignored = frozenset({
        "volumes", "terminationGracePeriodSeconds", "activeDeadlineSeconds",
        "dnsConfig", "serviceAccountName", "serviceAccount",
        "automountServiceAccountToken", "securityContext", "affinity",
        "imagePullSecrets", "priorityClassName", "priority", "initContainers", "ephemeralContainers",
        "enableServiceLinks", "schedulerName", "topologySpreadConstraints", "runtimeClassName",
        "preemptionPolicy", "overhead", "readinessGates", "shareProcessNamespace",
        "setHostnameAsFQDN", "os", "hostAliases", "hostPID", "hostIPC", "hostUsers", "schedulingGates",
        "resourceClaims", "resources", "hostnameOverride",
    })

    containers: tuple[Container, ...] = Field(min_length=1)
    nodeName: StrictStr | None = None
    hostname: DNS1123Label | None = None
    subdomain: DNS1123Label | None = None
    # Acted on: a pod runs only on a node whose labels match (and, for DaemonSets, whose taints it tolerates).
    nodeSelector: Labels = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    # The node's network namespace instead of the pod's own: the node's IP, no CNI.
    hostNetwork: StrictBool = False
    # Always (controllers), OnFailure or Never (Jobs): labkit starts a container once and never restarts it.
    restartPolicy: Literal["Always", "OnFailure", "Never"] = "Always"
    # ClusterFirst: the cluster DNS; Default: the node's resolv.conf; a hostNetwork pod gets the cluster DNS
    # only with ClusterFirstWithHostNet, as the kubelet does. None (dnsConfig alone) is not acted on.
    dnsPolicy: Literal["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"] = "ClusterFirst"

    @property
    def cluster_dns(self) -> bool:
        """Whether the kubelet would give this pod the cluster DNS resolv.conf."""
        if self.hostNetwork:
            return self.dnsPolicy == "ClusterFirstWithHostNet"
        return self.dnsPolicy in ("ClusterFirst", "ClusterFirstWithHostNet", "None")

    @model_validator(mode="after")
    def _unique_container_names(self) -> PodSpec:
        seen: set[str] = set()
        for i, container in enumerate(self.containers):
            if container.name in seen:
                raise _fail(f"{container.name!r} is used by two containers", "containers", i, "name")
            seen.add(container.name)
        return self

    @model_validator(mode="after")
    def _host_ports(self) -> PodSpec:
        if not self.hostNetwork:
            return self
        for i, container in enumerate(self.containers):
            for j, port in enumerate(container.ports):
                if port.hostPort is not None and port.hostPort != port.containerPort:
                    raise _fail(f"{port.hostPort} must equal containerPort {port.containerPort} with hostNetwork: "
                                "true (or be left out)", "containers", i, "ports", j, "hostPort")
        return self

    def named_port(self, name: str, protocol: str) -> int | None:
        """The container port a Service's named targetPort refers to, if this pod has it."""
        for container in self.containers:
            for port in container.ports:
                if port.name == name and port.protocol == protocol:
                    return port.containerPort
        return None


class PodTemplate(K8sModel):
    metadata: TemplateMeta = Field(default_factory=TemplateMeta)
    spec: PodSpec


class _Object(K8sModel):
    """Every top-level object: apiVersion, kind, metadata; `status` is ignored."""

    _ignored = frozenset({"status"})
    _bookkeeping = frozenset({"status"})
    _name_rule: ClassVar = staticmethod(names.dns1123_subdomain)

    apiVersion: StrictStr
    kind: StrictStr
    metadata: ObjectMeta

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def key(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}"

    @property
    def labels(self) -> Mapping[str, str]:
        return self.metadata.labels


class Pod(_Object):
    """A pod; labkit assumes every pod is ready once its sandbox is up."""

    apiVersion: Literal["v1"] = "v1"
    kind: Literal["Pod"] = "Pod"
    spec: PodSpec

    @property
    def hostname(self) -> str:
        """The pod's own hostname, as the kubelet sets it."""
        return self.spec.hostname or self.metadata.name[:63].rstrip("-.")


class Namespace(_Object):
    _name_rule = staticmethod(names.dns1123_label)
    _ignored = frozenset({"status", "spec"})

    apiVersion: Literal["v1"] = "v1"
    kind: Literal["Namespace"] = "Namespace"

    @model_validator(mode="after")
    def _name_label(self) -> Namespace:
        # The API server always sets this label, and NetworkPolicies select on it.
        if self.metadata.labels.get("kubernetes.io/metadata.name") != self.metadata.name:
            labels = {**self.metadata.labels, "kubernetes.io/metadata.name": self.metadata.name}
            object.__setattr__(self, "metadata", self.metadata.model_copy(update={"labels": labels}))
        return self


# ---------------------------------------------------------------- controllers


def _restart_policy(spec: PodSpec, allowed: tuple[str, ...]) -> None:
    if spec.restartPolicy not in allowed:
        raise _fail(f"{spec.restartPolicy!r} is not valid here; valid: {', '.join(allowed)}",
                    "template", "spec", "restartPolicy")


class _ControllerSpec(K8sModel):
    """A controller's selector and pod template, with the apps/v1 rules for both."""

    selector: LabelSelector
    template: PodTemplate

    @model_validator(mode="after")
    def _selector_matches_template(self) -> _ControllerSpec:
        if not self.selector.matchLabels and not self.selector.matchExpressions:
            raise _fail("must not be empty", "selector")
        if not self.selector.matches(self.template.metadata.labels):
            raise _fail("does not match the template's labels (spec.template.metadata.labels)", "selector")
        _restart_policy(self.template.spec, ("Always",))
        return self


class _WorkloadSpec(_ControllerSpec):
    replicas: Annotated[StrictInt, _in_range(0, 1000, "replicas")] = 1


class DeploymentSpec(_WorkloadSpec):
    _ignored = frozenset({
        "strategy", "minReadySeconds", "revisionHistoryLimit", "progressDeadlineSeconds", "paused",
    })


class StatefulSetSpec(_WorkloadSpec):
    _ignored = frozenset({
        "volumeClaimTemplates", "podManagementPolicy", "updateStrategy", "revisionHistoryLimit",
        "minReadySeconds", "persistentVolumeClaimRetentionPolicy", "ordinals",
    })

    serviceName: DNS1123Label | None = None


class ReplicaSetSpec(_WorkloadSpec):
    _ignored = frozenset({"minReadySeconds"})


class DaemonSetSpec(_ControllerSpec):
    """One pod per node that matches nodeSelector and whose taints the template tolerates."""

    _ignored = frozenset({"updateStrategy", "minReadySeconds", "revisionHistoryLimit"})


class JobSpec(K8sModel):
    """A Job's pods: `parallelism` of them (at most `completions`), each run once to its end."""

    _ignored = frozenset({
        "activeDeadlineSeconds", "podFailurePolicy", "successPolicy", "backoffLimit", "backoffLimitPerIndex",
        "maxFailedIndexes", "ttlSecondsAfterFinished", "completionMode", "podReplacementPolicy", "managedBy",
    })
    _unused = frozenset({"selector", "manualSelector"})

    parallelism: Annotated[StrictInt, _in_range(0, 1000, "parallelism")] = 1
    completions: Annotated[StrictInt, _in_range(0, 1000, "completions")] | None = None
    suspend: StrictBool = False
    selector: LabelSelector | None = None
    manualSelector: StrictBool | None = None
    template: PodTemplate

    @model_validator(mode="after")
    def _job_rules(self) -> JobSpec:
        if self.template.spec.restartPolicy == "Always":
            raise _fail("required for a Job; valid: OnFailure, Never", "template", "spec", "restartPolicy")
        if self.selector is not None and not self.manualSelector:
            raise _fail("is generated by the API server; set manualSelector: true to give one", "selector")
        if self.selector is not None and not self.selector.matches(self.template.metadata.labels):
            raise _fail("does not match the template's labels (spec.template.metadata.labels)", "selector")
        return self

    @property
    def pod_count(self) -> int:
        """How many pods run at once at the start: parallelism, capped by completions; none when suspended."""
        if self.suspend:
            return 0
        return self.parallelism if self.completions is None else min(self.parallelism, self.completions)


class Deployment(_Object):
    apiVersion: Literal["apps/v1"] = "apps/v1"
    kind: Literal["Deployment"] = "Deployment"
    spec: DeploymentSpec


class StatefulSet(_Object):
    _name_rule = staticmethod(names.dns1123_label)  # it prefixes its pods' names (apps ValidateStatefulSetName)

    apiVersion: Literal["apps/v1"] = "apps/v1"
    kind: Literal["StatefulSet"] = "StatefulSet"
    spec: StatefulSetSpec


class ReplicaSet(_Object):
    apiVersion: Literal["apps/v1"] = "apps/v1"
    kind: Literal["ReplicaSet"] = "ReplicaSet"
    spec: ReplicaSetSpec


class DaemonSet(_Object):
    apiVersion: Literal["apps/v1"] = "apps/v1"
    kind: Literal["DaemonSet"] = "DaemonSet"
    spec: DaemonSetSpec


class Job(_Object):
    _name_rule = staticmethod(names.job_name)

    apiVersion: Literal["batch/v1"] = "batch/v1"
    kind: Literal["Job"] = "Job"
    spec: JobSpec


# ---------------------------------------------------------------- services


def _cluster_ip(value: str) -> str:
    if value in ("", "None"):
        return value
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise PydanticCustomError(
            "k8s_value", f"{value!r} is not valid; valid: an IPv4 or IPv6 address, 'None' (headless) or ''"
        ) from None
    return value


def _ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise PydanticCustomError("k8s_value", f"{value!r} is not valid; valid: an IPv4 or IPv6 address") from None
    return value


def _cidr_loose(value: str) -> str:
    """loadBalancerSourceRanges: a CIDR, host bits allowed (as the API server accepts 10.0.0.1/8)."""
    try:
        ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise PydanticCustomError("k8s_value", f"{value!r} is not valid; valid: an IPv4 or IPv6 CIDR") from None
    return value


# Kubernetes' names of the address families (core/v1 IPFamily) and the dual-stack policies (IPFamilyPolicy).
IPFamily = Literal["IPv4", "IPv6"]
IPFamilyPolicy = Literal["SingleStack", "PreferDualStack", "RequireDualStack"]


def ip_family(address: str) -> IPFamily:
    """The Kubernetes name of an address's family: "IPv4" or "IPv6"."""
    return family_name(family_of(address))  # type: ignore[return-value]


class ServicePort(K8sModel):
    _ignored = frozenset({"appProtocol"})

    name: ServicePortName | None = None
    protocol: Protocol = "TCP"
    port: PortNumber
    targetPort: IntOrString | None = None
    nodePort: Annotated[StrictInt, _in_range(30000, 32767, "node ports")] | None = None

    @model_validator(mode="after")
    def _target_port(self) -> ServicePort:
        target = self.targetPort
        if isinstance(target, int) and not 1 <= target <= 65535:
            raise _fail(f"{target} is out of range; valid: port numbers 1-65535", "targetPort")
        if isinstance(target, str) and (problem := names.iana_svc_name(target)):
            raise _fail(problem, "targetPort")
        return self

    @property
    def target(self) -> int | str:
        """targetPort, defaulting to port as the API server does."""
        return self.port if self.targetPort is None else self.targetPort


class ClientIPConfig(K8sModel):
    timeoutSeconds: Annotated[StrictInt, _in_range(1, 86400, "seconds")] = 10800


class SessionAffinityConfig(K8sModel):
    clientIP: ClientIPConfig = Field(default_factory=ClientIPConfig)


class ServiceSpec(K8sModel):
    _ignored = frozenset({
        "internalTrafficPolicy", "publishNotReadyAddresses",
        "healthCheckNodePort", "trafficDistribution",
    })

    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = "ClusterIP"
    clusterIP: Annotated[StrictStr, AfterValidator(_cluster_ip)] = ""
    # Dual-stack (core/v1): checked here as the API's validation does; defaulted against the cluster's
    # service CIDRs (SingleStack of the cluster's first family, ...) by labkit.k8s.allocate, as the API
    # server's allocator does.
    clusterIPs: tuple[Annotated[StrictStr, AfterValidator(_cluster_ip)], ...] = ()
    ipFamilies: tuple[IPFamily, ...] = ()
    ipFamilyPolicy: IPFamilyPolicy | None = None
    selector: Labels = Field(default_factory=dict)
    ports: tuple[ServicePort, ...] = ()
    sessionAffinity: Literal["None", "ClientIP"] = "None"
    sessionAffinityConfig: SessionAffinityConfig = Field(default_factory=SessionAffinityConfig)
    externalName: StrictStr | None = None
    # Local: NodePort traffic from outside goes only to endpoints on the node it arrived at, unNATed
    # (the client's address survives); a node without one drops it.
    externalTrafficPolicy: Literal["Cluster", "Local"] = "Cluster"
    # LoadBalancer (labkit.k8s.metallb assigns the address) and externalIPs: served as kube-proxy serves them.
    loadBalancerIP: StrictStr = ""
    loadBalancerClass: StrictStr | None = None
    loadBalancerSourceRanges: tuple[Annotated[StrictStr, AfterValidator(_cidr_loose)], ...] = ()
    allocateLoadBalancerNodePorts: StrictBool = True
    externalIPs: tuple[Annotated[StrictStr, AfterValidator(_ip)], ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSpec:
        if self.externalTrafficPolicy == "Local" and self.type not in ("NodePort", "LoadBalancer"):
            raise _fail("Local only applies to type NodePort or LoadBalancer", "externalTrafficPolicy")
        for what in ("loadBalancerIP", "loadBalancerClass", "loadBalancerSourceRanges"):
            if getattr(self, what) and self.type != "LoadBalancer":
                raise _fail("only valid with type LoadBalancer", what)
        if self.type == "ExternalName":
            for what in ("clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                if getattr(self, what):
                    raise _fail("may not be set for ExternalName services", what)
            if not self.externalName:
                raise _fail("required with type ExternalName", "externalName")
            if names.dns1123_subdomain(self.externalName.rstrip(".")):
                raise _fail(f"{self.externalName!r} is not a valid DNS name", "externalName")
            return self
        if self.externalName:
            raise _fail("only valid with type ExternalName", "externalName")
        self._check_families()
        if not self.ports and self.clusterIP != "None":
            raise _fail("at least one port is required", "ports")
        if self.type in ("NodePort", "LoadBalancer") and self.clusterIP == "None":
            raise _fail(f"a headless service (clusterIP: None) cannot be {self.type}", "type")
        if len(self.ports) > 1 and any(p.name is None for p in self.ports):
            raise _fail("every port needs a name when there are several", "ports")
        seen_names: set[str] = set()
        seen_ports: set[tuple[int, str]] = set()
        for i, port in enumerate(self.ports):
            if port.name in seen_names:
                raise _fail(f"{port.name!r} is used by two ports", "ports", i, "name")
            if (port.port, port.protocol) in seen_ports:
                raise _fail(f"{port.protocol}/{port.port} is used by two ports", "ports", i, "port")
            if port.nodePort is not None and not self.node_ports:
                raise _fail("only valid with type NodePort, or LoadBalancer allocating node ports",
                            "ports", i, "nodePort")
            if port.name:
                seen_names.add(port.name)
            seen_ports.add((port.port, port.protocol))
        return self

    def _check_families(self) -> None:
        """spec.clusterIPs, ipFamilies and ipFamilyPolicy on their own, as the API server validates them
        (ValidateServiceClusterIPsRelatedFields); what the cluster offers is labkit.k8s.allocate's to check."""
        ips = self.clusterIPs
        if self.clusterIP and ips and ips[0] != self.clusterIP:
            raise _fail(f"first value must match clusterIP {self.clusterIP!r}; valid: "
                        f"[{self.clusterIP}, ...] or leave clusterIPs out", "clusterIPs", 0)
        if not self.clusterIP and ips:
            raise _fail("must be empty when clusterIP is not specified; valid: set clusterIP to clusterIPs[0] "
                        "too, or leave both out to have them allocated", "clusterIPs")
        for i, family in enumerate(self.ipFamilies):
            if family in self.ipFamilies[:i]:
                raise _fail(f"{family} is listed twice; valid: IPv4, IPv6 or both once, primary first",
                            "ipFamilies", i)
        if len(ips) > 2:
            raise _fail("may only hold up to 2 values (one per family)", "clusterIPs")
        for i, ip in enumerate(ips):
            if ip == "None" and (i > 0 or len(ips) > 1):
                raise _fail("'None' must be the first and only value", "clusterIPs", i)
            if ip == "":
                raise _fail("'' is not valid; valid: an IPv4 or IPv6 address", "clusterIPs", i)
        if self.headless:
            return
        if len(ips) == 2 and ip_family(ips[0]) == ip_family(ips[1]):
            raise _fail("may specify no more than one IP for each IP family", "clusterIPs", 1)
        for i, (ip, family) in enumerate(zip(self.requested_cluster_ips, self.ipFamilies, strict=False)):
            if ip_family(ip) != family:
                where = ("clusterIPs", i) if ips else ("clusterIP",)
                raise _fail(f"{ip} is not valid: expected an {family} value as indicated by ipFamilies[{i}]",
                            *where)
        if self.ipFamilyPolicy == "SingleStack":
            for what, items in (("cluster IPs", ips), ("IP families", self.ipFamilies)):
                if len(items) == 2:
                    raise _fail(f"SingleStack is not valid when multiple {what} are specified; valid: "
                                "RequireDualStack or PreferDualStack", "ipFamilyPolicy")

    @property
    def headless(self) -> bool:
        return self.clusterIP == "None"

    @property
    def requested_cluster_ips(self) -> tuple[str, ...]:
        """spec.clusterIPs as the API server normalises it on create: [clusterIP] when only clusterIP is given."""
        return self.clusterIPs or ((self.clusterIP,) if self.clusterIP else ())

    @property
    def node_ports(self) -> bool:
        """Whether the Service's ports get NodePorts (LoadBalancer too, unless allocateLoadBalancerNodePorts: false)."""
        return self.type == "NodePort" or (self.type == "LoadBalancer" and self.allocateLoadBalancerNodePorts)


class Service(_Object):
    _name_rule = staticmethod(names.dns1035_label)

    apiVersion: Literal["v1"] = "v1"
    kind: Literal["Service"] = "Service"
    spec: ServiceSpec


# ---------------------------------------------------------------- network policies


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise PydanticCustomError("k8s_value", f"{value!r} is not a valid IPv4 or IPv6 CIDR ({exc})") from None
    return value


Cidr = Annotated[StrictStr, AfterValidator(_cidr)]


class IPBlock(K8sModel):
    cidr: Cidr
    except_: tuple[Cidr, ...] = Field(default=(), alias="except")

    @model_validator(mode="after")
    def _except_inside(self) -> IPBlock:
        outer = ipaddress.ip_network(self.cidr)
        for item in self.except_:
            inner = ipaddress.ip_network(item)
            if inner.version != outer.version:  # the API's "strict subset of cidr", said plainly
                raise _fail(f"{item} is IPv{inner.version} but cidr {self.cidr} is IPv{outer.version}: "
                            "an except must be of cidr's family and strictly inside it", "except")
            if not inner.subnet_of(outer) or inner == outer:
                raise _fail(f"{item} must be strictly inside cidr {self.cidr}", "except")
        return self


class NetworkPolicyPeer(K8sModel):
    podSelector: LabelSelector | None = None
    namespaceSelector: LabelSelector | None = None
    ipBlock: IPBlock | None = None

    @model_validator(mode="before")
    @classmethod
    def _keep_empty_selectors(cls, data: Any) -> Any:
        # `podSelector: {}` means "all pods", unlike an absent selector: keep it set.
        if isinstance(data, Mapping):
            return {k: ({} if v is None and k.endswith("Selector") else v) for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _one_kind(self) -> NetworkPolicyPeer:
        selectors = self.podSelector is not None or self.namespaceSelector is not None
        if self.ipBlock is not None and selectors:
            raise PydanticCustomError(
                "k8s_value", "ipBlock cannot be combined with podSelector or namespaceSelector"
            )
        if self.ipBlock is None and not selectors:
            raise PydanticCustomError(
                "k8s_value", "a peer needs one of podSelector, namespaceSelector or ipBlock"
            )
        return self


class NetworkPolicyPort(K8sModel):
    protocol: PolicyProtocol = "TCP"
    port: IntOrString | None = None
    endPort: PortNumber | None = None

    @model_validator(mode="after")
    def _range(self) -> NetworkPolicyPort:
        if isinstance(self.port, int) and not 1 <= self.port <= 65535:
            raise _fail(f"{self.port} is out of range; valid: port numbers 1-65535", "port")
        if isinstance(self.port, str) and (problem := names.iana_svc_name(self.port)):
            raise _fail(problem, "port")
        if self.endPort is not None:
            if not isinstance(self.port, int):
                raise _fail("needs a numeric port", "endPort")
            if self.endPort < self.port:
                raise _fail(f"{self.endPort} is below port {self.port}", "endPort")
        return self


class NetworkPolicyIngressRule(K8sModel):
    from_: tuple[NetworkPolicyPeer, ...] = Field(default=(), alias="from")
    ports: tuple[NetworkPolicyPort, ...] = ()


class NetworkPolicyEgressRule(K8sModel):
    to: tuple[NetworkPolicyPeer, ...] = ()
    ports: tuple[NetworkPolicyPort, ...] = ()


class NetworkPolicySpec(K8sModel):
    podSelector: LabelSelector
    policyTypes: tuple[Literal["Ingress", "Egress"], ...] = ()
    ingress: tuple[NetworkPolicyIngressRule, ...] = ()
    egress: tuple[NetworkPolicyEgressRule, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _empty_pod_selector(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "podSelector" in data and data["podSelector"] is None:
            return {**data, "podSelector": {}}
        return data

    @model_validator(mode="after")
    def _default_policy_types(self) -> NetworkPolicySpec:
        if len(set(self.policyTypes)) != len(self.policyTypes):
            raise _fail("a type is listed twice", "policyTypes")
        if not self.policyTypes:
            # As the API server defaults it: Ingress always, Egress when egress rules exist.
            types = ("Ingress", "Egress") if self.egress else ("Ingress",)
            object.__setattr__(self, "policyTypes", types)
        return self


class NetworkPolicy(_Object):
    apiVersion: Literal["networking.k8s.io/v1"] = "networking.k8s.io/v1"
    kind: Literal["NetworkPolicy"] = "NetworkPolicy"
    spec: NetworkPolicySpec


KINDS: dict[str, type[_Object]] = {
    "Namespace": Namespace,
    "Pod": Pod,
    "Deployment": Deployment,
    "StatefulSet": StatefulSet,
    "Service": Service,
    "NetworkPolicy": NetworkPolicy,
    "DaemonSet": DaemonSet,
    "ReplicaSet": ReplicaSet,
    "Job": Job,
}
