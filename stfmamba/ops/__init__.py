"""stfmamba.ops"""
