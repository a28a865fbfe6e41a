"""stfmamba.models"""
