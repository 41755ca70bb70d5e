"""labkit.net"""
