"""The engines: how a federated run's messages travel. Each runs the round of :mod:`simulation.federation`.

* :mod:`simulation.engines.inprocess` - every site is an object in this process, with simulated
  dropouts (``secagg simulate``, ``secagg experiment``, ``secagg demo``);
* :mod:`simulation.engines.flower` - the sites are Flower nodes: a ``ServerApp`` for the coordinator
  and a ``ClientApp`` for each hospital (optional ``flower`` extra).

This package only groups the two; import the engine you need (the Flower one needs ``flwr``).
"""

__all__: list[str] = []  # a namespace: import simulation.engines.inprocess or simulation.engines.flower
