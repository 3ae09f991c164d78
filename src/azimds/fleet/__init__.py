"""The fleet model: VMs and their documents, independent of any wire protocol."""
