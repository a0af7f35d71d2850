"""The world: key/values every resource of a run (and, with etcd, every host) can see.

``base``: the :class:`~convergent.world.base.World` protocol a backend keeps; ``keys``:
the key layout (a host writes only under ``/convergent/hosts/HOST/``); ``local``: the
local world, over this host's state database (in memory when a run has none); ``etcd``
(with ``etcdlock``, ``etcdauth``): the world of a cluster, over etcd, through a wire
(``etcdwire``: etcd's JSON gateway, ``etcdhttp``, by default, or gRPC) imported only
when such a world starts; ``cluster`` (with ``gateway``, ``tls``): the world of a run.
Resources reach it as ``ctx.world``; this package imports only ``convergent.state``
(for types) and ``convergent.errors``.
"""

__all__: list[str] = []
