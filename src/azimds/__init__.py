"""azimds: the Azure Instance Metadata Service, implemented in Python."""

__version__ = "0.1.0"
