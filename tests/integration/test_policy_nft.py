"""The node policy texts of tests/unit/test_policy_ruleset.py, checked by nft itself (`nft -c`:
nothing changes; it needs root, which the integration tests assert)."""

from __future__ import annotations

import pytest

from labkit.net import nft
from tests.unit.test_policy_ruleset import DUAL_POLICIES, POLICIES, render, render_dual


@pytest.mark.parametrize("variant", ["full", "long-names", "empty"])
def test_nft_accepts_the_text(variant):
    policies = {
        "full": POLICIES,
        "long-names": POLICIES.replace("name: backends", "name: " + "p" * 200 + ".x" * 20),
        "empty": POLICIES.replace("role: back}}\n  ingress", "role: none}}\n  ingress"),
    }[variant]
    nft.check_ruleset(None, render(pod_count=30, policies=policies, table="lkt-policy-check")[1])


@pytest.mark.parametrize("v4", [True, False], ids=["dual-stack", "ipv6-only"])
def test_nft_accepts_the_ipv6_text(v4):
    nft.check_ruleset(None, render_dual(pod_count=30, policies=DUAL_POLICIES, table="lkt-policy-check", v4=v4)[1])


def test_nft_rejects_a_broken_text():
    """The check above could not pass by accident: a text nft does not accept fails it."""
    text = render(pod_count=4, table="lkt-policy-check")[1].replace("chain ", "chian ", 1)
    with pytest.raises(nft.NftError, match="nft rejected the rule set"):
        nft.check_ruleset(None, text)
