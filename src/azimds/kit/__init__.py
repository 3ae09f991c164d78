"""The developer kit: ways to put azimds where unmodified Azure clients find it.

``sandbox``: the namespace plumbing of ``azimds run``, which runs a command in a private
network namespace where 169.254.169.254 is azimds (docs/sandbox.md).
"""
