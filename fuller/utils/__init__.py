from .collect_env import collect_env, git_hash

__all__ = ['collect_env', 'git_hash']
