"""Where a step crosses the wire: payload encoding (the encoder's wire format), the byte
ledger that observes what was sent, the messages of a round and the transport protocol."""

from fedadc.wire.ledger import Ledger, MessageRecord
from fedadc.wire.messages import FromClient, ToClient
from fedadc.wire.payload import Kind, Payload, PayloadError, WireFormat, bytes_by_kind
from fedadc.wire.transport import Transport

__all__ = [
    "FromClient",
    "Kind",
    "Ledger",
    "MessageRecord",
    "Payload",
    "PayloadError",
    "ToClient",
    "Transport",
    "WireFormat",
    "bytes_by_kind",
]
