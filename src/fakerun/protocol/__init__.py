"""The wire between ranks, agents and the coordinator.

This package's face is the messages and their codec, light enough for every
rank to import (msgpack only); the zmq side is protocol.transport and
protocol.keys.
"""

from fakerun.protocol.codec import Encoded, decode, encode, encode_contribute, encode_release
from fakerun.protocol.messages import (
    MAX_ARRAY_LEN,
    MAX_MAP_LEN,
    MAX_MESSAGE_BYTES,
    MAX_STR_LEN,
    REGISTRY,
    TRANSPORT_MAX_BYTES,
    VERSION,
    Abort,
    Ack,
    AgentHello,
    AgentReport,
    Contribute,
    Events,
    Goodbye,
    Hello,
    Message,
    Output,
    ProtocolError,
    Refused,
    Release,
    Telemetry,
    Welcome,
    agent_routing_id,
    rank_routing_id,
)

__all__ = [
    "MAX_ARRAY_LEN", "MAX_MAP_LEN", "MAX_MESSAGE_BYTES", "MAX_STR_LEN", "REGISTRY", "TRANSPORT_MAX_BYTES",
    "VERSION", "Abort", "Ack", "AgentHello", "AgentReport", "Contribute", "Encoded", "Events", "Goodbye",
    "Hello", "Message", "Output", "ProtocolError", "Refused", "Release", "Telemetry", "Welcome", "decode",
    "encode", "encode_contribute", "encode_release", "agent_routing_id", "rank_routing_id",
]
