"""justkit.score"""
