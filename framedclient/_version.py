"""
The version, in one place: ``setup.py`` reads this file without importing
the package, and :data:`framedclient.__version__`, the gateway's
``/v1/version`` and ``twist framedclient --version`` import it.
"""

__version__ = "0.1.0"
