"""Warm deployment runtime: a SuperNode whose ClientApp process outlives a message (flwr 1.41.0).

`cli` (the ``fedadc-supernode`` command) starts `supernode` (Flower's own SuperNode with the
waits of `strategies.flower_private` shortened, ``--isolation process``) and `worker` (a
long-lived ClientApp on that SuperNode's Runtime API), supervised by `launcher`.
"""
