"""The protocol-neutral core: events, interfaces, the chat service, names, errors."""
