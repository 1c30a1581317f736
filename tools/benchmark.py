"""Speed/memory benchmarks, each reported as a ratio against a reference
measured in the same run.

    python tools/benchmark.py bev_pool [--sizes small bevfusion]
    python tools/benchmark.py calibration
    python tools/benchmark.py map_masks
    python tools/benchmark.py view_transform       # Triton vs torch pool
    python tools/benchmark.py full_model           # full-size train/infer
    python tools/benchmark.py all
    python tools/benchmark.py --device cuda --out gpu.json full_model

Options before the name apply to every benchmark run: ``--device DEV`` is
passed on as the benchmark's own ``--device`` (all but map_masks take one;
default: cuda if available, per benchmark), ``--out FILE`` writes one JSON
object {benchmark: its report} with the environment (benchmarks that only
print report null). Each name runs ``tools/benchmarks/bench_<name>.py``;
pass ``-h`` after the name for its options.
"""
import argparse
import importlib.util
import json
import platform
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent / 'benchmarks'
NO_DEVICE_OPTION = ('map_masks', )  # device-free (file I/O, rasterisation)
GPU_SIZED = ('full_model', )  # 'all' skips these without CUDA (hours on CPU)


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


def environment(device):
    import torch
    env = dict(python=platform.python_version(), torch=torch.__version__,
               cuda=torch.version.cuda, device=device or 'default',
               host=platform.node())
    if torch.cuda.is_available():
        env['gpu'] = torch.cuda.get_device_name(0)
        env['gpu_count'] = torch.cuda.device_count()
    return env


def _uses_cuda(device):
    if device:
        return device.startswith('cuda')
    import torch
    return torch.cuda.is_available()


def _json_safe(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('--device')
    parser.add_argument('--out')
    opts, argv = parser.parse_known_args(argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(__doc__)
        print('available:', ', '.join(available()))
        return
    name, rest = argv[0], argv[1:]
    names = available() if name == 'all' else [name]
    if name == 'all' and not _uses_cuda(opts.device):
        names = [n for n in names if n not in GPU_SIZED]
    results = dict(environment=environment(opts.device))
    for n in names:
        print(f'== {n} ==', flush=True)
        args = list(rest) if name != 'all' else []
        if opts.device and n not in NO_DEVICE_OPTION:
            args += ['--device', opts.device]
        results[n] = _json_safe(load(n).main(args))
    if opts.out:
        sys.path.insert(0, str(BENCH_DIR.parent.parent))
        from fuller.utils.io import atomic_open
        with atomic_open(opts.out, 'w') as f:
            json.dump(results, f, indent=2)
        print(f'wrote {opts.out}')
    return results


if __name__ == '__main__':
    main()
