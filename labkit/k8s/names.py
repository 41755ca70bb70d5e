"""Kubernetes name rules (DNS-1123, DNS-1035, IANA service names, label keys) and label selectors.

Each check returns None when the value is valid, or the message to show the user,
so models and allocators word their errors the same way the API server would.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def dns1123_label(value: str) -> str | None:
    """Namespaces, container names, hostnames: at most 63 of [a-z0-9-], alphanumeric at both ends."""
    if len(value) > 63:
        return f"{value!r} is longer than 63 characters"
    if not _DNS1123_LABEL.match(value):
        return (
            f"{value!r} is not a valid DNS-1123 label; valid: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return None


def dns1035_label(value: str) -> str | None:
    """Service names: a DNS-1123 label that starts with a letter."""
    if len(value) > 63:
        return f"{value!r} is longer than 63 characters"
    if not _DNS1035_LABEL.match(value):
        return (
            f"{value!r} is not a valid DNS-1035 label; valid: lowercase letters, digits and '-', "
            "starting with a letter and ending with a letter or digit"
        )
    return None


def dns1123_subdomain(value: str) -> str | None:
    """Pods, Deployments, StatefulSets, NetworkPolicies: dot-separated DNS-1123 labels, <= 253."""
    if len(value) > 253:
        return f"{value!r} is longer than 253 characters"
    if not value or any(_DNS1123_LABEL.match(part) is None for part in value.split(".")):
        return (
            f"{value!r} is not a valid DNS-1123 subdomain; valid: lowercase letters, digits, '-' "
            "and '.', starting and ending with a letter or digit"
        )
    return None


def iana_svc_name(value: str) -> str | None:
    """Port names: at most 15 of [a-z0-9-], at least one letter, no '--'."""
    if len(value) > 15:
        return f"{value!r} is longer than 15 characters"
    if not _IANA_SVC_NAME.match(value) or "--" in value:
        return (
            f"{value!r} is not a valid port name; valid: lowercase letters, digits and '-' "
            "(no '--'), starting and ending with a letter or digit"
        )
    if not any(c.isalpha() for c in value):
        return f"{value!r} is not a valid port name; it must contain at least one letter"
    return None


def service_port_name(value: str) -> str | None:
    """A Service's port name: a DNS-1123 label (looser than a container's: `8001-8000` is one, as
    `kubectl create service clusterip web --tcp 8001:8000` writes it)."""
    if len(value) > 63:
        return f"{value!r} is longer than 63 characters"
    if not _DNS1123_LABEL.match(value):
        return (
            f"{value!r} is not a valid Service port name (a DNS-1123 label); valid: lowercase letters, "
            "digits and '-', starting and ending with a letter or digit"
        )
    return None


def job_name(value: str) -> str | None:
    """A Job's name: a DNS-1123 subdomain that fits a label value (its pods carry it as `job-name`)."""
    problem = dns1123_subdomain(value)
    if problem is None and len(value) > 63:
        return f"{value!r} is longer than 63 characters (its pods carry it as the label value job-name)"
    return problem


def path_segment_name(value: str) -> str | None:
    """RBAC objects' names: anything that can be one segment of a URL path."""
    if value in (".", ".."):
        return f"{value!r} is not a valid name; valid: any name but '.' and '..', without '/' or '%'"
    if "/" in value or "%" in value:
        return f"{value!r} is not a valid name; valid: any name but '.' and '..', without '/' or '%'"
    return None


def env_var_name(value: str) -> str | None:
    """As the API server has checked them since RelaxedEnvironmentVariableValidation (on by default from
    1.32, GA in 1.34): any printable ASCII but '=', not empty."""
    if not value or any(not 32 <= ord(c) <= 126 or c == "=" for c in value):
        return (f"{value!r} is not a valid environment variable name; valid: printable ASCII characters "
                "other than '=' (at least one)")
    return None


def label_key(key: str) -> str | None:
    """A qualified name `[prefix/]name`: prefix a DNS-1123 subdomain, name <= 63 of [A-Za-z0-9-_.]."""
    parts = key.split("/")
    if len(parts) > 2:
        return f"label key {key!r} is not valid; valid: 'name' or 'prefix/name', with one '/' at most"
    prefix, name = parts if len(parts) == 2 else ("", parts[0])
    if len(parts) == 2 and (not prefix or dns1123_subdomain(prefix)):
        return (f"label key {key!r} has an invalid prefix; valid: a DNS-1123 subdomain (lowercase letters, "
                "digits, '-' and '.') before the '/'")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return (
            f"label key {key!r} is not valid; valid: up to 63 letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit, optionally prefixed by 'domain/'"
        )
    return None


def label_value(value: str) -> str | None:
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        return (
            f"label value {value!r} is not valid; valid: empty, or up to 63 letters, digits, "
            "'-', '_' and '.', starting and ending with a letter or digit"
        )
    return None


def matches_labels(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """A Service-style equality selector: every selector pair is among the labels."""
    return all(labels.get(k) == v for k, v in selector.items())


def matches_expression(operator: str, key: str, values: Sequence[str], labels: Mapping[str, str]) -> bool:
    """One `matchExpressions` term, as metav1.LabelSelectorRequirement defines it."""
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    raise ValueError(f"unknown label selector operator {operator!r}")
