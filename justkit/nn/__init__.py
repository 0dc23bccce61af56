"""justkit.nn"""
