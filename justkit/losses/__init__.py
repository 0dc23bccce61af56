"""justkit.losses"""
