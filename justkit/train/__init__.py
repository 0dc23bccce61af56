"""justkit.train"""
