"""stfmamba.data"""
