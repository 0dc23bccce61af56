"""justkit.data"""
