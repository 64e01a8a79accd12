"""The control plane's HTTP API (``/api/v1``)."""

from kaon.platform.api.app import create_control_app, create_platform_router, install_error_handlers

__all__ = ["create_control_app", "create_platform_router", "install_error_handlers"]
