"""The node: one process serving a fleet, following the store and running its background work."""
