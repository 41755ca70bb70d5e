"""labkit: a containerlab-style lab orchestrator for Kubernetes cluster networking.

Kept import-free on purpose: `labkit-cni` is exec'd per pod and must start fast.
"""

__version__ = "0.1.0"
