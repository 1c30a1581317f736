"""What importing fuller costs and in which direction its packages import each other (issue 22).

- The import graph of fuller's packages (every ``import``, module level or inside a function,
  read with ``ast``) only points down the layers below; within a layer, packages do not import
  each other (the offline map-cache writer and the runtime datasets, evaluation and the engine).
- ``import fuller`` registers everything without importing mmdet3d's models or spconv: mmdet3d's
  registries import fuller's modules on their first query (``fuller.REGISTERING_PACKAGES``).
- The map-cache writer imports no runtime dataset code; the submission checks import no data
  preparation and no metric; ``--help`` of the tools imports neither torch nor fuller.
"""
import ast
import subprocess
import sys
from collections import defaultdict

import pytest

from fuller.testing import REPO_ROOT

# layer of each package of fuller (lower numbers lie below)
LAYERS = {
    'fuller.version': 0, 'fuller.structures': 0, 'fuller.compat': 0,
    'fuller.utils': 1,
    'fuller.data_prep': 2, 'fuller.datasets': 2, 'fuller.calibration': 2,
    'fuller.models': 3,
    'fuller.engine': 4, 'fuller.evaluation': 4,
    'fuller.apis': 5, 'fuller.visualization': 5, 'fuller.testing': 5,
}
TOOLS_FAST_HELP = sorted(p for p in (REPO_ROOT / 'tools').glob('*.py')
                         if p.name != 'ablation.py') + [
    REPO_ROOT / 'tools' / 'analysis' / 'visualize.py',
    REPO_ROOT / 'tools' / 'analysis' / 'plot_calibration.py',
    REPO_ROOT / 'tools' / 'analysis' / 'demo_report.py',
    REPO_ROOT / 'tools' / 'analysis' / 'model_stats.py',
    REPO_ROOT / 'tools' / 'analysis' / 'optimizer_probe.py',
    REPO_ROOT / 'tools' / 'benchmarks' / 'bench_bev_pool.py',
    REPO_ROOT / 'tools' / 'benchmarks' / 'bench_calibration.py',
    REPO_ROOT / 'tools' / 'benchmarks' / 'bench_full_model.py',
    REPO_ROOT / 'tools' / 'benchmarks' / 'bench_map_masks.py',
    REPO_ROOT / 'tools' / 'misc' / 'sync_config.py']


def _package(module: str) -> str:
    return '.'.join(module.split('.')[:2])


def _imports(path, module: str):
    """Absolute names of the fuller modules ``path`` imports."""
    is_init = path.name == '__init__.py'
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if not node.level:
                yield node.module
                continue
            base = module.split('.')[:len(module.split('.')) + is_init - node.level]
            if node.module:
                yield '.'.join(base + [node.module])
            else:
                yield from ('.'.join(base + [a.name]) for a in node.names)


def import_graph():
    """{(from package, to package): [modules]} between different packages."""
    edges = defaultdict(list)
    for path in sorted((REPO_ROOT / 'fuller').rglob('*.py')):
        parts = path.relative_to(REPO_ROOT).with_suffix('').parts
        module = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
        for target in _imports(path, module):
            if target and target.startswith('fuller.') and \
                    _package(target) != _package(module) and _package(module) != 'fuller':
                edges[(_package(module), _package(target))].append(module)
    return edges


def test_every_package_has_a_layer():
    packages = {'fuller.' + p.name for p in (REPO_ROOT / 'fuller').iterdir()
                if (p / '__init__.py').is_file()} | {'fuller.version'}
    assert packages == set(LAYERS)


def test_imports_point_down_the_layers():
    edges = import_graph()
    assert edges, 'the graph reader found no edge at all'
    upward = {f'{a} -> {b} ({", ".join(sorted(set(m)))})' for (a, b), m in edges.items()
              if LAYERS[b] >= LAYERS[a]}
    assert not upward, sorted(upward)


def _python(code: str) -> str:
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_import_fuller_registers_without_loading_mmdet3d_models():
    out = _python(
        'import sys\nimport fuller\n'
        "heavy = [m for m in ('spconv', 'mmdet3d.models', 'mmdet3d.datasets', 'fuller.models')"
        ' if m in sys.modules]\n'
        'from mmdet3d.registry import MODELS, TRANSFORMS\n'
        "assert MODELS.get('MultiTaskBEVFusion') is not None\n"
        "assert TRANSFORMS.get('LoadBEVMapMasks') is not None\n"
        "print(heavy, 'spconv' in sys.modules)\n")
    assert out.strip() == '[] True'  # nothing heavy before the first query, spconv after
    # a registry queried before fuller was imported: fuller imports its modules at once
    out = _python('from mmdet3d.registry import MODELS\n'
                  "assert MODELS.get('SparseEncoder') is not None\n"
                  'import fuller\n'
                  "print(MODELS.get('MultiTaskBEVFusion').__name__)\n")
    assert out.strip() == 'MultiTaskBEVFusion'


def test_map_cache_writer_and_submission_checks_stay_in_their_layer():
    out = _python(
        'import sys\nimport fuller.data_prep.bev_map_masks\n'
        "print(sorted(m for m in sys.modules if m.startswith(('fuller.datasets.', "
        "'mmdet3d.datasets', 'fuller.models', 'spconv'))))\n"
        'import fuller.evaluation.submission\n'
        "print(sorted(m for m in sys.modules if m.startswith(('fuller.evaluation.metrics', "
        "'mmdet3d.evaluation'))))\n")
    assert out.splitlines() == ['[]', '[]']


@pytest.mark.parametrize('tool', TOOLS_FAST_HELP, ids=lambda p: p.name)
def test_help_imports_neither_torch_nor_fuller(tool):
    proc = subprocess.run([sys.executable, '-X', 'importtime', str(tool), '--help'],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr[-2000:]
    imported = {line.split('|')[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith('import time:')}
    assert not imported & {'torch', 'fuller', 'mmdet3d', 'spconv'}, tool.name
