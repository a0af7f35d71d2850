"""Policies: what users write -> graphs of resources."""

from convergent.policy.loader import load_policy, load_policy_text

__all__ = ["load_policy", "load_policy_text"]
