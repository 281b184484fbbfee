"""
``python -m framedclient.bench``: the load generator and the side-by-side
comparison with hand-written Twisted, AMP and asyncio clients.

Modules: :mod:`~framedclient.bench.runner` (starts servers and one client
process per run), :mod:`~framedclient.bench.loadgen` (what runs in a client
process), :mod:`~framedclient.bench.baselines` (the clients we compare with,
as the load generator drives them, and the AMP echo server),
:mod:`~framedclient.bench.serverproc` (child processes that always die),
:mod:`~framedclient.bench.measure`, :mod:`~framedclient.bench.report`,
:mod:`~framedclient.bench.plot` and :mod:`~framedclient.bench.machine`.
See ``docs/benchmarks.md``.

Subcommands run other measurements instead: ``soak`` the chaos soak
(:mod:`~framedclient.bench.soak`), ``gateway`` HTTP requests per second
through ``twist framedclient --workers N``
(:mod:`~framedclient.bench.http_load`), ``hostile`` full-size hostile
clients (:mod:`~framedclient.bench.hostile`), ``redis`` and ``memcache``
real protocols against real servers (:mod:`~framedclient.bench.keyvalue`),
``fleet-sim`` pick policies on a simulated fleet
(:mod:`~framedclient.bench.fleetsim`).

Imports point one way: :mod:`~framedclient.bench.loadgen` uses
:mod:`~framedclient.bench.baselines`, and both use
:mod:`~framedclient.bench.measure`, which imports neither.
"""
