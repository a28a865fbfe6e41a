"""stfmamba.training"""
