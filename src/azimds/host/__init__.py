"""What a node does to the machine it runs on: state directory, link-local address, sandbox."""
