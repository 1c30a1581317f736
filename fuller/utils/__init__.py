from .collect_env import collect_env, git_hash
from .config_utils import set_data_root

__all__ = ['collect_env', 'git_hash', 'set_data_root']
