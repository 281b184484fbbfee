"""
``python -m framedclient.bench``: the load generator and the side-by-side
comparison with hand-written Twisted, AMP and asyncio clients.

Modules: :mod:`~framedclient.bench.runner` (starts servers and one client
process per run), :mod:`~framedclient.bench.loadgen` (what runs in a client
process), :mod:`~framedclient.bench.baselines` (the clients we compare with,
and the AMP echo server), :mod:`~framedclient.bench.serverproc` (child
processes that always die), :mod:`~framedclient.bench.measure`,
:mod:`~framedclient.bench.report`, :mod:`~framedclient.bench.plot` and
:mod:`~framedclient.bench.machine`.  See ``docs/benchmarks.md``.

``python -m framedclient.bench soak`` runs the chaos soak instead
(:mod:`~framedclient.bench.soak`).
"""
