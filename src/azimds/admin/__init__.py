"""The control plane: an admin REST API on its own listener, never on the guest's."""
