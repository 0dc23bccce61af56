"""justkit.text"""
