"""The phases `up` and `apply` run (labkit.lab lists them, in order, as phase tables).

Each phase is a function of the `Build` (build.py): it does one part of the lab
and records what it made there. Side effects go through the components
(the runtime, labkit.cni, labkit.proxy, labkit.dns, labkit.policy), never hand-rolled here.

- nodes.py     nodes, links, addresses and routes, host access, `exec:`
- cni.py       per k8s-node pod networks (CNI conflists, backend routes), the lab's CNI server
- pods.py      pods: sandboxes, CNI ADD, containers; `apply`'s pod sync; readiness
- services.py  the service data plane and NetworkPolicies on every k8s-node
- dns.py       the cluster DNS servers in the kube-dns pods
- bgp.py       backend bgp: a BIRD per speaker (labkit.bgp), and waiting for the pod routes to converge
"""
