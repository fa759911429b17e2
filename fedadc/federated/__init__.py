"""Federated split learning, transport-free: messages, client, server and the round loop.

No Flower import here: the Flower apps (``client_app``, ``server_app``, ``strategies``)
only move these messages between processes.
"""

from fedadc.federated.client import FederatedClient
from fedadc.federated.inprocess import InProcessTransport
from fedadc.federated.messages import FromClient, ToClient
from fedadc.federated.rounds import (
    RoundsResult,
    SequentialRounds,
    SplitLearningRounds,
    Transport,
    rounds_for,
)
from fedadc.federated.server import FederatedServer

__all__ = [
    "FederatedClient",
    "FederatedServer",
    "FromClient",
    "InProcessTransport",
    "RoundsResult",
    "SequentialRounds",
    "SplitLearningRounds",
    "ToClient",
    "Transport",
    "rounds_for",
]
