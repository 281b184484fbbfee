"""
Twisted plugins: ``twist framedclient`` (the gateway) and ``twist
framedserver`` (the fc1 reference server).

This directory has no ``__init__.py`` on purpose: ``twisted.plugins`` is
Twisted's package, and Twisted finds plugin files in every ``twisted/plugins``
directory on ``sys.path``.  Only cheap imports here: ``twist --help`` imports
every plugin file to list them.
"""

from twisted.application.service import ServiceMaker

framedclient = ServiceMaker(
    "framedclient",
    "framedclient.runner.app",
    "Gateway to a framed-protocol server: connection pool, HTTP API, "
    "metrics, health, live status page, multiplexing proxy.",
    "framedclient",
)

framedserver = ServiceMaker(
    "framedserver",
    "framedclient.runner.framedserver",
    "The fc1 reference server (echo, delays, errors, drops on request).",
    "framedserver",
)
