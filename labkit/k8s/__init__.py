"""labkit.k8s"""
