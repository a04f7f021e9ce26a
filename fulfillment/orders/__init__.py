"""The order workflow: Temporal's order-fulfillment demo as a definition the engine runs.

What it is made of, each a module of its own:

* ``models``     the order (pydantic), validated at the door, card numbers masked
* ``workflow``   the definition: the approval gate, payment, inventory, delivery and
                 their undos, the result string, the order's words for statuses and events
* ``activities`` what each step and undo does, calling the simulated ``services``
* ``services``   payment, inventory and shipping kept in Redis, fenced by token
* ``client``     the order API (``place_order``, ``approve_order``, ...): domain verbs
                 over the engine's client
* ``state``, ``timeline``  what the API returns: an order's view, history and attempts
* ``settings``, ``errors``, ``keys``  its configuration, exceptions and Redis keys
* ``app``        the Celery app of a deployment, with the workflow registered

It imports the engine (:mod:`fulfillment.engine`) and nothing of the operations
(:mod:`fulfillment.ops`) above it.
"""
