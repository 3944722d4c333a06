"""Config: YAML -> validated, frozen model (see `model`), with errors naming file, line and key."""

from edgeway.config.loader import load_config, load_config_text
from edgeway.config.model import Config
from edgeway.config.types import Address, parse_address, parse_duration
from edgeway.errors import ConfigError

__all__ = [
    "Address",
    "Config",
    "ConfigError",
    "load_config",
    "load_config_text",
    "parse_address",
    "parse_duration",
]
