"""stfmamba.evaluation"""
