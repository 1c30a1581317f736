"""The documentation check: README.md and every Markdown page under docs/.

Plain Python, no site generator. Each ``check_*`` function takes the
repository root and returns a list of problems (``'<page>:<line>: <what>'``),
empty when the pages are consistent with the repository:

* :func:`check_links`: every relative link ``[text](target)`` /
  ``![alt](target)`` names an existing file or folder, and every ``#anchor``
  (same page or another page) is a heading of that page, spelt as GitHub
  spells heading anchors (:func:`github_anchor`).
* :func:`check_paths`: every repository path written in code (inline code or
  a fenced block) that starts with one of :data:`REPO_PREFIXES` exists.
  ``{a,b}`` is expanded and ``...`` or ``*`` stands for any text, so
  ``configs/fuller/fuller_tiny-{inter,intra}_...`` must match a file for
  each alternative.
* :func:`check_study_markers`: every number marked
  ``<!-- study: FILE KEY/PATH [%] -->NUMBER`` equals the value at
  ``KEY/PATH`` of the JSON file ``FILE`` (repository-relative), printed with
  the same number of decimals and sign (``%``: the value times 100); a
  marked lower-case word (a verdict such as ``worse``) equals the string
  there. Pages quote results this way instead of copying them, e.g.
  ``mAP <!-- study: docs/study-v2/results.json summary/naive/mAP/mean -->0.058``
  (GitHub shows ``mAP 0.058``). A study cell ``0.058 ± 0.014`` on a page
  outside ``docs/study*`` and ``docs/probe`` counts as copied by hand.
* :func:`check_python_names`: every dotted name of fuller written in code
  (``fuller.compat.set_spconv_algo``, ``fuller.utils.collect_env``) imports
  or is an attribute of an importable module.

:func:`tool_scripts` lists the ``tools/...py`` scripts that pages show as
``python tools/X.py ...`` (the test runs each with ``--help``), and
:func:`study_reports` the ``docs/study*/<name>.json`` files that have a
``<name>.md`` rendered from them (``render_report`` in
``fuller/evaluation/ablation.py``; the test compares).

To quote a study number on a page, write the marker and the number and run
``pytest tests/test_docs``; a wrong number is reported with the right one.
"""
import glob
import json
import os
import re
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Set, Tuple

# Top-level entries of the repository whose paths pages may name in code.
# ``data/`` and ``work_dirs/`` are left out on purpose: pages name folders
# there that a run creates (data/nuscenes-synthetic, work_dirs/demo/...).
REPO_PREFIXES = ('fuller/', 'tools/', 'configs/', 'tests/', 'docs/',
                 'docker/', 'requirements/', '.ci/')
REPO_FILES = ('Makefile', 'setup.py', 'setup.cfg', 'README.md',
              'data/README.md', '.dockerignore', '.gitignore')

_FENCE = re.compile(r'^\s*(```|~~~)')
_LINK = re.compile(r'!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?'
                   r'(?:\s+"[^"]*")?\s*\)')
_INLINE_CODE = re.compile(r'(`+)(.+?)\1')
_HEADING = re.compile(r'^(#{1,6})\s+(.*?)\s*#*\s*$')
_MARKER = re.compile(r'<!--\s*study:\s*(\S+)\s+(\S+)(?:\s+(%))?\s*-->'
                     r'\s*([+-]?\d+(?:\.\d+)?|[a-z]+)')
_TOOL_CMD = re.compile(r'\bpython3?\s+(tools/[\w/.-]+\.py)\b')
_TOKEN_SPLIT = re.compile(r'[\s`\'"=();:\[\]|]+')


def doc_files(root: Path) -> List[Path]:
    """README.md and every ``*.md`` under docs/, sorted."""
    root = Path(root)
    pages = [root / 'README.md'] if (root / 'README.md').is_file() else []
    return pages + sorted((root / 'docs').rglob('*.md'))


def _rel(root: Path, path: Path) -> str:
    return str(Path(path).relative_to(root))


def split_code(text: str) -> Iterator[Tuple[int, str, bool]]:
    """Yield ``(line number, line, inside a fenced code block)``."""
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            yield n, line, True
            continue
        yield n, line, fenced


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: link syntax reduced to its text,
    lower case, every character that is not a letter, digit, space, ``-`` or
    ``_`` removed, spaces turned into ``-`` (duplicates: see
    :func:`heading_anchors`)."""
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading)
    text = re.sub(r'<[^>]+>', '', text).strip().lower()
    text = ''.join(c for c in text if c.isalnum() or c in ' -_')
    return text.replace(' ', '-')


def heading_anchors(text: str) -> Set[str]:
    """Anchors of every heading outside code blocks; the n-th repeat of an
    anchor gets ``-n``, as on GitHub."""
    seen: Dict[str, int] = {}
    anchors = set()
    for _, line, fenced in split_code(text):
        m = None if fenced else _HEADING.match(line)
        if not m:
            continue
        base = github_anchor(m.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        anchors.add(base if count == 0 else f'{base}-{count}')
    return anchors


def _prose(line: str) -> str:
    """The line without its inline code spans."""
    return _INLINE_CODE.sub('', line)


def check_links(root: Path) -> List[str]:
    """Problems of relative links and anchors in every page."""
    root = Path(os.path.abspath(root))
    problems = []
    anchors_of: Dict[Path, Set[str]] = {}
    for page in doc_files(root):
        text = page.read_text(encoding='utf-8')
        for n, line, fenced in split_code(text):
            if fenced:
                continue
            for target in _LINK.findall(_prose(line)):
                if re.match(r'^[a-z][a-z0-9+.-]*:', target):   # http:, mailto:
                    continue
                where = f'{_rel(root, page)}:{n}'
                path_part, _, anchor = target.partition('#')
                # normpath, not resolve(): a symlinked folder stays inside
                dest = Path(os.path.normpath(page.parent / path_part)) \
                    if path_part else page
                if not dest.exists():
                    problems.append(f'{where}: link target {target!r} does '
                                    'not exist')
                    continue
                if root not in dest.parents and dest != root:
                    problems.append(f'{where}: link target {target!r} lies '
                                    'outside the repository')
                    continue
                if not anchor:
                    continue
                if dest.suffix != '.md':
                    problems.append(f'{where}: anchor #{anchor} on {target!r},'
                                    ' which is not a Markdown page')
                    continue
                if dest not in anchors_of:
                    anchors_of[dest] = heading_anchors(
                        dest.read_text(encoding='utf-8'))
                if anchor not in anchors_of[dest]:
                    problems.append(f'{where}: {target!r}: no heading with '
                                    f'anchor #{anchor} in {_rel(root, dest)}')
    return problems


def _code_texts(text: str) -> Iterator[Tuple[int, str]]:
    """``(line number, code)`` for every fenced line and inline code span."""
    for n, line, fenced in split_code(text):
        if fenced:
            if not _FENCE.match(line):
                yield n, line
            continue
        for m in _INLINE_CODE.finditer(line):
            yield n, m.group(2)


def _expand_braces(token: str) -> List[str]:
    m = re.search(r'\{([^{}]*)\}', token)
    if not m:
        return [token]
    out = []
    for alt in m.group(1).split(','):
        out += _expand_braces(token[:m.start()] + alt + token[m.end():])
    return out


def named_paths(text: str) -> Iterator[Tuple[int, str]]:
    """``(line number, path)`` for every repository path written in code."""
    for n, code in _code_texts(text):
        tokens = []
        for token in _TOKEN_SPLIT.split(code):
            tokens += [token] if '{' in token else token.split(',')
        for token in tokens:
            if token.endswith('.') and not token.endswith('...'):
                token = token[:-1]        # the end of a sentence
            if token.startswith('./'):
                token = token[2:]
            if token in REPO_FILES or token.startswith(REPO_PREFIXES):
                if '$' in token or '<' in token:
                    continue      # a placeholder, e.g. docs/study-v2/${X}
                yield n, token


def check_paths(root: Path) -> List[str]:
    """Problems of repository paths named in code in every page."""
    root = Path(root)
    problems = []
    for page in doc_files(root):
        for n, token in named_paths(page.read_text(encoding='utf-8')):
            for path in _expand_braces(token):
                pattern = glob.escape(path).replace('[*]', '*') \
                    .replace('...', '*')
                if not glob.glob(str(root / pattern)):
                    problems.append(f'{_rel(root, page)}:{n}: {path!r} does '
                                    'not exist in the repository')
    return problems


_PY_NAME = re.compile(r'^fuller(?:\.[A-Za-z_]\w*)+$')


def resolve_python_name(name: str):
    """The module or object ``name`` (``pkg.module.attr...``) names;
    ImportError or AttributeError when there is none."""
    import importlib
    parts = name.split('.')
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module('.'.join(parts[:cut]))
        except ModuleNotFoundError as e:
            if e.name is None or not '.'.join(parts[:cut]).startswith(e.name):
                raise      # a module that exists but fails to import
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f'no module in {name!r}')


def check_python_names(root: Path) -> List[str]:
    """Problems of dotted fuller names written in code in every page."""
    root = Path(root)
    problems = []
    for page in doc_files(root):
        for n, code in _code_texts(page.read_text(encoding='utf-8')):
            for token in re.split(r'[^\w.]+', code):
                token = token.rstrip('.')
                if not _PY_NAME.match(token):
                    continue
                try:
                    resolve_python_name(token)
                except (ImportError, AttributeError) as e:
                    problems.append(f'{_rel(root, page)}:{n}: {token!r} does '
                                    f'not resolve ({e})')
    return problems


def tool_scripts(root: Path) -> List[str]:
    """Distinct ``tools/...py`` scripts shown as ``python tools/X.py``."""
    scripts = set()
    for page in doc_files(root):
        for _, code in _code_texts(page.read_text(encoding='utf-8')):
            scripts.update(_TOOL_CMD.findall(code))
    return sorted(scripts)


def json_value(data, key_path: str):
    """``data[k1][k2]...`` for ``key_path = 'k1/k2/...'`` (list items by
    index); KeyError naming the missing part."""
    value = data
    for part in key_path.split('/'):
        if isinstance(value, list):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise KeyError(f'{part!r} (of {key_path!r})')
    return value


def format_like(value: float, shown: str) -> str:
    """``value`` printed the way ``shown`` is: same decimals, ``+`` sign if
    ``shown`` has one."""
    decimals = len(shown.split('.')[1]) if '.' in shown else 0
    sign = '+' if shown.startswith('+') else ''
    return f'{value:{sign}.{decimals}f}'


def study_markers(text: str) -> Iterator[Tuple[int, str, str, bool, str]]:
    """``(line, json file, key path, percent, number shown)`` per marker."""
    for n, line in enumerate(text.splitlines(), 1):
        for m in _MARKER.finditer(line):
            yield n, m.group(1), m.group(2), bool(m.group(3)), m.group(4)


# A study table's cell, ``mean ± spread``, on a page that is not a study's
# own: it was copied by hand (quote through markers or link the table).
_COPIED_CELL = re.compile(r'(?<![\d>])\d+\.\d+ ± \d+\.\d+')
RESULTS_DIRS = ('docs/study', 'docs/probe')


def check_study_markers(root: Path) -> List[str]:
    """Problems of numbers marked as quoted from a results JSON, and
    study cells (``0.058 ± 0.014``) copied by hand outside the results
    folders (:data:`RESULTS_DIRS`)."""
    root = Path(root)
    problems = []
    loaded: Dict[str, object] = {}
    for page in doc_files(root):
        text = page.read_text(encoding='utf-8')
        if not _rel(root, page).startswith(RESULTS_DIRS):
            for n, line, fenced in split_code(text):
                if not fenced and _COPIED_CELL.search(line):
                    problems.append(
                        f'{_rel(root, page)}:{n}: '
                        f'{_COPIED_CELL.search(line).group()!r} looks copied '
                        'from a study table; link the table or quote its '
                        'numbers with study markers')
        if '<!-- study' in text and not any(study_markers(text)):
            problems.append(f'{_rel(root, page)}: a study marker does not '
                            'parse (<!-- study: FILE KEY/PATH [%] -->NUMBER)')
        for n, file, key_path, percent, shown in study_markers(text):
            where = f'{_rel(root, page)}:{n}'
            if file not in loaded:
                try:
                    loaded[file] = json.loads(
                        (root / file).read_text(encoding='utf-8'))
                except (OSError, ValueError) as e:
                    problems.append(f'{where}: cannot read {file}: {e}')
                    continue
            try:
                value = json_value(loaded[file], key_path)
            except (KeyError, IndexError, ValueError) as e:
                problems.append(f'{where}: {file} has no {e}')
                continue
            if shown.isalpha():
                if value != shown:
                    problems.append(f'{where}: shows {shown!r} for {file} '
                                    f'{key_path}, which is {value!r}')
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                problems.append(f'{where}: {file} {key_path} is {value!r}, '
                                'not a number')
                continue
            expected = format_like(value * 100 if percent else value, shown)
            if expected != shown:
                problems.append(f'{where}: shows {shown} for {file} '
                                f'{key_path}, which is {expected}')
    return problems


def study_reports(root: Path) -> List[Tuple[Path, Path]]:
    """``(json, md)`` for each ``docs/study*/<name>.json`` with a sibling
    ``<name>.md``."""
    pairs = []
    for js in sorted(Path(root).glob('docs/study*/*.json')):
        md = js.with_suffix('.md')
        if md.is_file():
            pairs.append((js, md))
    return pairs


ALL_CHECKS = (check_links, check_paths, check_python_names,
              check_study_markers)


def run_all(root: Path, checks: Sequence = ALL_CHECKS) -> List[str]:
    """Every problem of every check."""
    return [p for check in checks for p in check(root)]
