"""labkit.policy"""
