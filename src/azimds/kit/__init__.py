"""The developer kit: ways to put azimds where unmodified Azure clients find it.

``local``: a node in this process (``LocalIMDS``), behind the ``imds`` pytest fixture
(``pytest_plugin``, docs/testing.md). ``fleet``: the example fleet and the guest plane's
services without a server, for property tests and fuzzers.

``sandbox``: the namespace plumbing of ``azimds run``, which runs a command in a private
network namespace where 169.254.169.254 is azimds (docs/sandbox.md).
"""
