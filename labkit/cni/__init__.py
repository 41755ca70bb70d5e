"""labkit.cni"""
