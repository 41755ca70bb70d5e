"""labkit.dns"""
