"""The topology of a simulated VM: which namespaces exist and what connects them.

* ``<prefix>-vpc`` is the cloud (vpc.py): every ENI a veth pair, the VPC's source check in
  nftables, the far host, another subnet, neighbours and the metadata service on its ``lo``.
* ``<prefix>-g`` is the VM, ``<prefix>-c`` a container behind its Docker-like bridge
  (guests.py).
* addresses.py names the addresses of that world; namespaces.py names, creates and deletes the
  namespaces, and cleans up after a killed run.
"""
