"""The lab of eni-guest: a simulated cloud to try the agent on and to prove it works.

Not part of the agent. The agent (``eni_guest``) never imports this package: it runs on real
VMs, where none of this exists. The lab is what ``eni-guest demo``, the tests and the
benchmarks build the agent's world from:

* ``sim/`` is the offline instance metadata service (``eni-guest-sim``): every cloud's format
  served from one JSON scenario, with fault injection.
* ``scenarios/`` holds scenario files (the three-ENI instance shared by the demo, the tests and
  the benchmarks, and an AWS example for ``eni-guest-sim --scenario aws-example``).
"""
