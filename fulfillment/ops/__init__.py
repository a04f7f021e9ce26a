"""Operations: what runs the order workflow and shows it to people.

* ``cli``          the ``fulfillment`` command (``submit``, ``approve``, ``show``, ``up``...)
* ``render``       how the CLI prints orders, timelines and tables (rich)
* ``ui``           the Orders view inside Flower (pages, JSON API, metrics)
* ``demo``, ``generator``  the demo's scenarios, and random orders
* ``processes``    starting and stopping workers, Flower and the embedded server
* ``embedded``     the embedded valkey server used when no Redis URL is set
* ``cluster_setup``  making a Redis Cluster out of empty nodes

The Django integration (:mod:`fulfillment.contrib.django`) belongs to this layer too.
Nothing below (the order workflow, the engine) imports from here.
"""
