"""The local endpoint: an HTTP server (``tuneform.serving.app``) run as a background service (``service``).

Only the light modules are re-exported here, since Pulumi providers import this package: the app (Starlette,
uvicorn, and through the inference module torch) loads in the server process only.
"""

from tuneform.serving.config import (
    ConfigError,
    ServerConfig,
    VersionConfig,
    generate_api_key,
    load_config,
    parse_config,
    write_config,
)
from tuneform.serving.service import (
    ServiceError,
    ServiceInfo,
    ServiceStatus,
    info_from_config,
    reload,
    start,
    status,
    stop,
)

__all__ = [
    "ConfigError",
    "ServerConfig",
    "ServiceError",
    "ServiceInfo",
    "ServiceStatus",
    "VersionConfig",
    "generate_api_key",
    "info_from_config",
    "load_config",
    "parse_config",
    "reload",
    "start",
    "status",
    "stop",
    "write_config",
]
