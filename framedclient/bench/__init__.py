"""
``python -m framedclient.bench``: load generator and baselines.
"""
