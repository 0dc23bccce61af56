"""justkit.decode"""
