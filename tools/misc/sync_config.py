"""Print or write the config keys that follow a config's declared geometry and channels.

    # after editing `geometry` / `channels` in a child config: the keys to change with them
    python tools/misc/sync_config.py configs/my_child.py
    # the same for an override, written out as a complete config both tool sets run
    python tools/misc/sync_config.py CONFIG --cfg-options geometry.voxel_size=[0.2,0.2,0.4] \
        --out configs/my_variant.py

Without --out it prints one ``KEY=VALUE`` line per key that disagrees (``--cfg-options``
syntax), or nothing when the config is consistent; exit status 1 when there were keys to
change. With --out it writes the whole config, every dependent key set from the declarations
(fuller.utils.config_utils.sync_dependent_values), atomically.
"""
import argparse
import sys

from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries (e.g. geometry.*) first')
    parser.add_argument('--out', help='write the synced config here (.py)')
    return parser.parse_args(argv)


def _flat(key: str, value):
    """``--cfg-options`` items: dicts become one item per leaf key."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flat(f'{key}.{k}', v)
    else:
        yield key, value


def _text(value) -> str:
    if isinstance(value, (list, tuple)):
        inner = ','.join(_text(v) for v in value)
        return f'({inner})' if isinstance(value, tuple) else f'[{inner}]'
    return str(value)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmengine.config import Config

    from fuller.utils.config_utils import (check_config_consistency,
                                           config_disagreements,
                                           sync_dependent_values)
    from fuller.utils.io import atomic_open
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.out:
        sync_dependent_values(cfg)
        check_config_consistency(cfg)
        with atomic_open(args.out) as f:
            f.write(cfg.pretty_text)
        print(f'wrote {args.out}')
        return 0
    changes = config_disagreements(cfg)
    for key, _, expected, _ in changes:
        for k, v in _flat(key, expected):
            print(f'{k}={_text(v)}')
    return 1 if changes else 0


if __name__ == '__main__':
    sys.exit(main())
