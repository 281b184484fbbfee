"""
What ``twist framedclient`` and ``twist framedserver`` run.
"""
