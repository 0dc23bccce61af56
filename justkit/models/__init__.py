"""justkit.models"""
