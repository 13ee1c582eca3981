"""Publishing banks to the Hugging Face Hub and loading them back (`push_to_hub`,
`load_hub_bank`, `is_hub_id`) with typed errors."""

from compressdata.hub.errors import (
    HubCardError,
    HubChecksumError,
    HubConfigError,
    HubConnectionError,
    HubError,
    HubFileNotFoundError,
    HubPermissionError,
    HubRepoNotFoundError,
    HubRevisionError,
    HubRevisionNotFoundError,
)
from compressdata.hub.load import fetch_hub_bank, is_hub_id, load_hub_bank, parse_hub_id
from compressdata.hub.publish import push_to_hub

__all__ = [
    "HubCardError",
    "HubChecksumError",
    "HubConfigError",
    "HubConnectionError",
    "HubError",
    "HubFileNotFoundError",
    "HubPermissionError",
    "HubRepoNotFoundError",
    "HubRevisionError",
    "HubRevisionNotFoundError",
    "fetch_hub_bank",
    "is_hub_id",
    "load_hub_bank",
    "parse_hub_id",
    "push_to_hub",
]
