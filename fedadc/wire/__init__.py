"""What crosses the wire: payload encoding and the byte ledger."""

from fedadc.wire.ledger import Ledger, MessageRecord
from fedadc.wire.payload import Kind, Payload, PayloadError, WireFormat

__all__ = ["Kind", "Ledger", "MessageRecord", "Payload", "PayloadError", "WireFormat"]
