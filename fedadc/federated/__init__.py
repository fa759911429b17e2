"""Federated split learning, transport-free: client state, server, and the round loop.

No Flower import here: the Flower apps (``client_app``, ``server_app``, ``strategies``)
only move the messages of :mod:`fedadc.wire` between processes.
"""

from fedadc.federated.client import ClientSettings, FederatedClient
from fedadc.federated.inprocess import InProcessTransport
from fedadc.federated.rounds import RoundsResult, SflRounds, SlRounds, rounds_for
from fedadc.federated.server import FederatedServer
from fedadc.wire.messages import FromClient, ToClient
from fedadc.wire.transport import Transport

__all__ = [
    "ClientSettings",
    "FederatedClient",
    "FederatedServer",
    "FromClient",
    "InProcessTransport",
    "RoundsResult",
    "SflRounds",
    "SlRounds",
    "ToClient",
    "Transport",
    "rounds_for",
]
