"""LoadBalancer Services announced MetalLB's way: L2 speakers (labkit.lb.speaker, one process per
k8s-node: ARP for IPv4 addresses, NDP for IPv6 ones) and the /32s and /128s the nodes' BGP daemons
announce (labkit.lb.announce decides both).

Kept import-free: the speaker process imports this package and starts with the standard library alone.
"""
