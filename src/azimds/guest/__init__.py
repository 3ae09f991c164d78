"""The guest plane: the IMDS wire protocol that VMs reach at 169.254.169.254."""
