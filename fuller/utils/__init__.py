from .collect_env import collect_env, git_hash
from .config_utils import apply_cli_overrides, set_data_root

__all__ = ['collect_env', 'git_hash', 'set_data_root', 'apply_cli_overrides']
