"""The documentation check (README.md and docs/), and proof that it fails.

Each check of ``docs_check`` must pass on the repository, and must report a
broken link, a missing anchor, a missing path, a renamed fuller object and a
hand-edited study number in a temporary copy of the pages. The ``--help``
run costs one process per distinct script shown (about 25 s for 15 scripts
on 2 loaded cores, since the tools parse arguments before heavy imports).
"""
import json
import math
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import docs_check

REPO_ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 150


def _assert_clean(problems):
    assert not problems, 'documentation problems:\n' + '\n'.join(problems)


def test_readme_is_short():
    n = len((REPO_ROOT / 'README.md').read_text(encoding='utf-8').splitlines())
    assert n <= README_MAX_LINES, (
        f'README.md has {n} lines; keep it to {README_MAX_LINES} and move '
        'detail to a page under docs/')


def test_links_and_anchors_resolve():
    _assert_clean(docs_check.check_links(REPO_ROOT))


def test_named_repository_paths_exist():
    _assert_clean(docs_check.check_paths(REPO_ROOT))


def test_named_fuller_objects_exist():
    _assert_clean(docs_check.check_python_names(REPO_ROOT))


def test_quoted_study_numbers_equal_their_json():
    _assert_clean(docs_check.check_study_markers(REPO_ROOT))


def _first_number_marker(text):
    """(line, file, key path, percent, number shown) of the first marked
    number of ``text``."""
    return next(m for m in docs_check.study_markers(text)
                if not m[4].isalpha())


def test_pages_quote_study_numbers():
    # The README's results summary quotes the study through markers; if they
    # were removed the marker check above would pass vacuously.
    assert _first_number_marker(
        (REPO_ROOT / 'README.md').read_text(encoding='utf-8'))


STUDY_REPORTS = [pytest.param(js, md, id=str(md.relative_to(REPO_ROOT)))
                 for js, md in docs_check.study_reports(REPO_ROOT)]


@pytest.mark.parametrize('json_path,md_path', STUDY_REPORTS)
def test_study_reports_are_rendered_from_their_json(json_path, md_path):
    from fuller.evaluation.ablation import render_report
    data = json.loads(json_path.read_text(encoding='utf-8'))
    assert render_report(data) == md_path.read_text(encoding='utf-8')


def _same(a, b, path=''):
    """'' when two JSON values agree (floats to 1e-12), else where not."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f'{path}: keys {sorted(set(a) ^ set(b))}'
        return next((r for k in a if (r := _same(a[k], b[k], f'{path}/{k}'))),
                    '')
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f'{path}: {len(a)} vs {len(b)} items'
        return next((r for i, (x, y) in enumerate(zip(a, b))
                     if (r := _same(x, y, f'{path}/{i}'))), '')
    if isinstance(a, float) and isinstance(b, (int, float)):
        if math.isnan(a) and math.isnan(b) or \
                math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15):
            return ''
    return '' if a == b else f'{path}: {a!r} vs {b!r}'


@pytest.mark.parametrize('json_path,md_path', STUDY_REPORTS)
def test_study_json_summary_is_computed_from_its_runs(json_path, md_path):
    # Pages quote data['summary'] (study markers); it must be what the
    # per-seed metrics in data['runs'] give, as the rendered .md is.
    from fuller.evaluation.ablation import MARGIN, summarize
    data = json.loads(json_path.read_text(encoding='utf-8'))
    runs = {v: {int(s): m for s, m in by_seed.items()}
            for v, by_seed in data['runs'].items()}
    summary = summarize(runs, data['baseline'],
                        margin=float(data.get('margin', MARGIN)))
    assert _same(json.loads(json.dumps(summary)), data['summary']) == ''


def test_tool_commands_shown_answer_help():
    """Every distinct ``python tools/X.py`` shown runs with ``--help``: exit
    0 and a help text (one process per script, two at a time)."""
    scripts = docs_check.tool_scripts(REPO_ROOT)
    assert 'tools/train.py' in scripts      # the collector finds commands

    def run(script):
        return script, subprocess.run(
            [sys.executable, script, '--help'], cwd=REPO_ROOT,
            capture_output=True, text=True, timeout=600)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, scripts))
    failed = [f'{script}: exit {r.returncode}\n{r.stderr[-2000:]}'
              for script, r in results
              if r.returncode != 0 or not r.stdout.strip()]
    assert not failed, '--help failed:\n' + '\n'.join(failed)


# The check must fail: each case edits one page of a copy of the pages.
@pytest.fixture
def docs_copy(tmp_path):
    """README.md and docs/ copied into ``tmp_path``; every other top-level
    entry of the repository linked, so links and paths resolve as in the
    repository."""
    for entry in REPO_ROOT.iterdir():
        if entry.name in ('README.md', 'docs'):
            continue
        (tmp_path / entry.name).symlink_to(entry)
    shutil.copy(REPO_ROOT / 'README.md', tmp_path / 'README.md')
    shutil.copytree(REPO_ROOT / 'docs', tmp_path / 'docs')
    _assert_clean(docs_check.run_all(tmp_path))
    return tmp_path


def _append(path: Path, text: str):
    path.write_text(path.read_text(encoding='utf-8') + text, encoding='utf-8')


def test_check_fails_on_a_broken_link(docs_copy):
    _append(docs_copy / 'docs' / 'get_started.md',
            '\nSee [the guide](user_guides/no_such_page.md).\n')
    problems = docs_check.check_links(docs_copy)
    assert len(problems) == 1
    assert 'user_guides/no_such_page.md' in problems[0]
    assert problems[0].startswith('docs/get_started.md:')


def test_check_fails_on_a_missing_anchor(docs_copy):
    _append(docs_copy / 'README.md',
            '\n[setup](docs/get_started.md#no-such-heading) and '
            '[install](docs/get_started.md#install)\n')
    problems = docs_check.check_links(docs_copy)
    assert len(problems) == 1
    assert '#no-such-heading' in problems[0]


@pytest.mark.parametrize('page, text, check, names', [
    ('docs/user_guides/data.md',
     '\nRun `tools/create_data.py`, then `tools/no_such_tool.py`.\n'
     '```bash\npython tools/train.py configs/fuller/no_such_config.py\n```\n',
     'check_paths',
     ["'tools/no_such_tool.py'", "'configs/fuller/no_such_config.py'"]),
    ('docs/advanced_guides/model.md',
     '\n`fuller.structures.BEVGeometry` and `fuller.structures.BEVGeometri`, '
     '`fuller.no_such_module.x`\n',
     'check_python_names',
     ["'fuller.structures.BEVGeometri'", "'fuller.no_such_module.x'"]),
], ids=['missing-path', 'renamed-fuller-object'])
def test_check_fails_on_a_wrong_name(docs_copy, page, text, check, names):
    """Only the wrong names of ``text`` are reported, in order."""
    _append(docs_copy / page, text)
    problems = getattr(docs_check, check)(docs_copy)
    assert len(problems) == len(names)
    for problem, name in zip(problems, names):
        assert name in problem


def test_check_fails_on_a_hand_edited_study_number(docs_copy):
    readme = docs_copy / 'README.md'
    text = readme.read_text(encoding='utf-8')
    line, file, key_path, _, shown = _first_number_marker(text)
    marker = re.search(rf'<!--\s*study:\s*{re.escape(file)}\s+'
                       rf'{re.escape(key_path)}[^>]*-->\s*', text)
    edited = docs_check.format_like(float(shown) + 1, shown)
    start = marker.end()
    assert text[start:start + len(shown)] == shown
    readme.write_text(text[:start] + edited + text[start + len(shown):],
                      encoding='utf-8')
    problems = docs_check.check_study_markers(docs_copy)
    assert len(problems) == 1
    assert problems[0].startswith(f'README.md:{line}: shows {edited} ')
    assert problems[0].endswith(f'which is {shown}')


def test_check_fails_on_a_hand_edited_results_table():
    from fuller.evaluation.ablation import render_report
    js = REPO_ROOT / 'docs' / 'study-v2' / 'results.json'
    md = js.with_suffix('.md').read_text(encoding='utf-8')
    data = json.loads(js.read_text(encoding='utf-8'))
    cell = re.search(r'(\d+\.\d{3}) ±', md)     # the first mean of the table
    edited = f'{float(cell.group(1)) + 0.01:.3f}'
    assert render_report(data) == md
    assert render_report(data) != \
        md[:cell.start(1)] + edited + md[cell.end(1):]
    data['runs']['naive']['0'] = dict(data['runs']['naive']['0'])
    key = next(k for k in data['runs']['naive']['0'] if k.endswith('/mAP'))
    data['runs']['naive']['0'][key] += 0.05      # an edited per-seed metric
    summary = json.loads(json.dumps(data['summary']))
    runs = {v: {int(s): m for s, m in by_seed.items()}
            for v, by_seed in data['runs'].items()}
    from fuller.evaluation.ablation import summarize
    assert _same(json.loads(json.dumps(summarize(runs, 'naive'))), summary)


def test_check_fails_on_a_copied_study_cell(docs_copy):
    _append(docs_copy / 'docs' / 'advanced_guides' / 'benchmarks.md',
            '\n| naive | 0.058 ± 0.014 |\n')
    problems = docs_check.check_study_markers(docs_copy)
    assert len(problems) == 1 and "'0.058 ± 0.014'" in problems[0]


def test_check_fails_on_an_edited_results_file(docs_copy):
    # The other direction: the JSON changes, the page does not.
    line, file, key_path, percent, shown = _first_number_marker(
        (docs_copy / 'README.md').read_text(encoding='utf-8'))
    js = docs_copy / file
    js.unlink()          # replace the file: never write through a link
    data = json.loads((REPO_ROOT / file).read_text(encoding='utf-8'))
    *parents, last = key_path.split('/')
    docs_check.json_value(data, '/'.join(parents))[last] += 1.0
    js.write_text(json.dumps(data), encoding='utf-8')
    problems = docs_check.check_study_markers(docs_copy)
    assert f'README.md:{line}: shows {shown} for {file} {key_path}, which is ' \
        in '\n'.join(problems)
    assert all(key_path in p for p in problems)


def test_github_anchors():
    # Spelt as GitHub spells them (checked by hand on rendered pages).
    anchor = docs_check.github_anchor
    assert anchor('Map segmentation metric keys (`BEVMapIoUMetric`, '
                  'prefix `map/`)') == \
        'map-segmentation-metric-keys-bevmapioumetric-prefix-map'
    assert anchor('Two training loops: the same seed is not the same run '
                  'across 9a9e4a8') == \
        'two-training-loops-the-same-seed-is-not-the-same-run-across-9a9e4a8'
    assert anchor('GPU nodes (Docker)') == 'gpu-nodes-docker'
    assert anchor('The `map_masks` cache') == 'the-map_masks-cache'
    assert anchor('Results: the **multi-task** study') == \
        'results-the-multi-task-study'
    text = '# A\n```\n# not a heading\n```\n## A\n### Why?\n'
    assert docs_check.heading_anchors(text) == {'a', 'a-1', 'why'}


def test_path_patterns():
    text = ('`configs/fuller/fuller_tiny-{inter,intra}_...`, '
            '`tests/test_docs/test_docs.py::test_path_patterns`.\n'
            '```bash\npython tools/train.py CONFIG --work-dir work_dirs/x\n'
            '```\n')
    assert [p for _, p in docs_check.named_paths(text)] == [
        'configs/fuller/fuller_tiny-{inter,intra}_...',
        'tests/test_docs/test_docs.py', 'tools/train.py']
    assert docs_check.format_like(0.0574, '+0.057') == '+0.057'
    assert docs_check.format_like(-0.0426, '-0.043') == '-0.043'
    assert docs_check.format_like(1.2349, '1.2') == '1.2'
