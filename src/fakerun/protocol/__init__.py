"""The wire between ranks, agents and the coordinator: messages, codec, transport."""
