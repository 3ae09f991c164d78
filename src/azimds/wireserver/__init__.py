"""The WireServer (168.63.129.16) and its host GA plugin: what provisioning agents (cloud-init,
WALinuxAgent, azure-init) talk to besides IMDS. ``documents.py`` the XML, ``app.py`` the apps
the guest plane's server serves."""
