"""LoadBalancer Services announced MetalLB's way: L2 speakers (labkit.lb.speaker, one process per
k8s-node) and the /32s the nodes' BGP daemons announce (labkit.lb.announce decides both).

Kept import-free: the speaker process imports this package and starts with the standard library alone.
"""
