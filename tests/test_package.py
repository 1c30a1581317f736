"""`import fuller` (what `custom_imports = dict(imports=['fuller'])` does)
registers fuller's modules into mmdet3d's registries."""
import subprocess
import sys

from fuller.testing import REPO_ROOT

EXPECTED = {
    'HOOKS': ['RunMetaHook', 'SparseConvAlgoHook', 'GradientCalibrationHook'],
    'MODELS': ['LSSViewTransform', 'DepthLSSViewTransform',
               'GeneralizedLSSFPN', 'ConvFuser', 'BEVDecoder',
               'MultiModalDataPreprocessor', 'MultiTaskBEVFusion',
               'TransFusionDetHead', 'BEVMapSegHead'],
    'TASK_UTILS': ['QueryHungarianAssigner3D'],
    'DATASETS': ['NuScenesMultiTaskDataset'],
    'TRANSFORMS': ['LoadNuScenesPoints', 'LoadMultiViewImages',
                   'LoadBEVMapMasks', 'ImageAug3D', 'BEVGlobalRotScaleTrans',
                   'BEVRandomFlip3D', 'PackMultiTaskInputs'],
    'METRICS': ['BEVMapIoUMetric'],
}


def test_custom_imports_registers_everything():
    lines = ['from mmengine.config import Config',
             'from mmengine.utils import import_modules_from_strings',
             'import mmdet3d.registry as R',
             "cfg = Config(dict(custom_imports=dict(imports=['fuller'])))",
             'import_modules_from_strings(**cfg.custom_imports)']
    for registry, names in EXPECTED.items():
        for name in names:
            lines.append(f'assert R.{registry}.get({name!r}) is not None, '
                         f'{name!r}')
    lines.append("print('ok')")
    proc = subprocess.run([sys.executable, '-c', '\n'.join(lines)],
                          capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=300)
    assert proc.returncode == 0 and 'ok' in proc.stdout, proc.stderr[-2000:]


def test_version_and_env_report():
    import fuller
    from fuller.utils import collect_env
    env = collect_env()
    assert fuller.__version__ in env['fuller']
    assert env['mmcv ops'] == 'compiled'
    assert env['numpy'].startswith('1.')


def test_test_modules_do_not_import_conftest():
    """Shared test helpers live in fuller.testing (pytest loads conftest.py
    itself and advises against importing it)."""
    offenders = [str(path.relative_to(REPO_ROOT))
                 for path in sorted((REPO_ROOT / 'tests').rglob('*.py'))
                 if path.name != 'conftest.py'
                 and any(line.startswith(('from tests.conftest', 'import tests.conftest',
                                          'from conftest', 'import conftest'))
                         for line in path.read_text().splitlines())]
    assert offenders == []
