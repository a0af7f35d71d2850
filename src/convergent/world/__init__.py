"""The world: key/values every resource of a run (and, with etcd, every host) can see.

``base``: the :class:`~convergent.world.base.World` protocol a backend keeps; ``local``:
the local world, over this host's state database (in memory when a run has none).
Resources reach it as ``ctx.world``; this package imports only ``convergent.state``
(for types) and ``convergent.errors``.
"""

__all__: list[str] = []
