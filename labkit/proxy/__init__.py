"""labkit.proxy"""
