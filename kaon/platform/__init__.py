"""The control plane: workspaces, members, API keys, plans, metering, quotas, billing, audit,
and the job and deployment records the runtime acts on. Service functions take a Session;
the HTTP layer (:mod:`kaon.platform.api`) only translates.
"""
