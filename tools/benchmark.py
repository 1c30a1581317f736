"""Speed/memory benchmarks, each reported as a ratio against a reference
measured in the same run.

    python tools/benchmark.py bev_pool [--sizes small bevfusion]
    python tools/benchmark.py calibration
    python tools/benchmark.py map_masks
    python tools/benchmark.py all

Each name runs ``tools/benchmarks/bench_<name>.py``; pass ``-h`` after the
name for its options.
"""
import importlib.util
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent / 'benchmarks'


def available():
    return sorted(p.stem[len('bench_'):] for p in BENCH_DIR.glob('bench_*.py'))


def load(name):
    path = BENCH_DIR / f'bench_{name}.py'
    if not path.is_file():
        raise SystemExit(f'tools/benchmark.py: unknown benchmark {name!r}; '
                         f'choose from {available() + ["all"]}')
    spec = importlib.util.spec_from_file_location(f'bench_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(__doc__)
        print('available:', ', '.join(available()))
        return
    name, rest = argv[0], argv[1:]
    names = available() if name == 'all' else [name]
    for n in names:
        print(f'== {n} ==', flush=True)
        load(n).main(rest if name != 'all' else [])


if __name__ == '__main__':
    main()
