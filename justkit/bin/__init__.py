"""justkit.bin"""
