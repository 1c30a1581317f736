"""docker/Dockerfile and .dockerignore, checked without a Docker engine.

The Dockerfile is parsed (line continuations, comments, ARG/ENV scoping as
Docker defines them), its COPY sources must exist and survive .dockerignore,
its variables must be declared, it must install from the same requirements
files as tools/setup_env.sh, and its shell steps are run here: the step that
derives .docker-req/ from requirements/, the PYTHON_VERSION guard, and every
pip step as ``pip install --dry-run --no-index`` against the development
environment, which must already satisfy each of them (same pins, nothing to
install).
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / 'docker' / 'Dockerfile'
DOCKERIGNORE = REPO / '.dockerignore'
SETUP_ENV = REPO / 'tools' / 'setup_env.sh'
VAR_RE = re.compile(r'\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-+][^}]*)?\}|'
                    r'\$([A-Za-z_][A-Za-z0-9_]*)')


# ------------------------------------------------------------------ parsing
def parse_dockerfile(text):
    """[(INSTRUCTION, arguments, line number)], as Docker reads them: comment
    lines dropped (also inside continuations), lines ending in a backslash
    joined with the next one without the backslash and newline."""
    out, buf, start = [], '', None
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith('#')):
            continue
        if buf and stripped.startswith('#'):
            continue  # comment inside a continued instruction
        if start is None:
            start = lineno
        if line.rstrip().endswith('\\'):
            buf += line.rstrip()[:-1]
            continue
        buf += line
        word, _, args = buf.strip().partition(' ')
        out.append((word.upper(), args.strip(), start))
        buf, start = '', None
    assert not buf, f'Dockerfile ends inside a continued line {start}'
    return out


def parse_assignments(args):
    """``A=1 B="x y"`` (ENV/ARG) -> {'A': '1', 'B': 'x y'}; ``ARG A`` -> ''."""
    result = {}
    for token in shlex.split(args):
        name, _, value = token.partition('=')
        result[name] = value
    return result


def stages(instructions):
    """(global ARG defaults, [stage instruction lists]) split at FROM."""
    global_args, stage_list = {}, []
    for ins in instructions:
        if ins[0] == 'FROM':
            stage_list.append([ins])
        elif not stage_list:
            assert ins[0] == 'ARG', f'{ins[0]} before FROM (line {ins[2]})'
            global_args.update(parse_assignments(ins[1]))
        else:
            stage_list[-1].append(ins)
    return global_args, stage_list


def stage_args(stage, global_args):
    """ARG defaults visible in a stage; a bare ``ARG X`` re-imports X."""
    values = {}
    for word, args, _ in stage:
        if word == 'ARG':
            for token in shlex.split(args):
                name, eq, value = token.partition('=')
                values[name] = value if eq else global_args.get(name, '')
    return values


def dockerignore_patterns():
    pats = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith('#'):
            pats.append(line)
    return pats


def _pattern_regex(pattern):
    out, i = '', 0
    while i < len(pattern):
        if pattern.startswith('**', i):
            out += '.*'
            i += 2
            if pattern.startswith('/', i):
                out, i = out[:-2] + '(?:.*/)?', i + 1
        elif pattern[i] == '*':
            out, i = out + '[^/]*', i + 1
        elif pattern[i] == '?':
            out, i = out + '[^/]', i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r'\Z')


def ignored(relpath, patterns):
    """Docker's rule: the last matching pattern wins, ``!`` re-includes, and
    a pattern matching a directory excludes everything below it."""
    parts = relpath.strip('/').split('/')
    prefixes = ['/'.join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for pattern in patterns:
        negate = pattern.startswith('!')
        rx = _pattern_regex(pattern.lstrip('!').strip('/'))
        if any(rx.match(p) for p in prefixes):
            result = not negate
    return result


@pytest.fixture(scope='module')
def dockerfile():
    instructions = parse_dockerfile(DOCKERFILE.read_text())
    global_args, stage_list = stages(instructions)
    assert len(stage_list) == 1, 'one build stage expected'
    stage = stage_list[0]
    return dict(global_args=global_args,
                stage=stage,
                args=stage_args(stage, global_args),
                runs=[a for w, a, _ in stage if w == 'RUN'])


# ---------------------------------------------------------- static checks
def test_parser_on_a_known_snippet():
    text = ('ARG A=1\nFROM img:${A}\n# c\nRUN echo a \\\n'
            '    # inside\n    && echo "b c"\nENV X=1 Y="2 3"\n')
    ins = parse_dockerfile(text)
    assert [i[0] for i in ins] == ['ARG', 'FROM', 'RUN', 'ENV']
    assert ins[2] == ('RUN', 'echo a     && echo "b c"', 4)
    assert parse_assignments(ins[3][1]) == {'X': '1', 'Y': '2 3'}
    pats = ['data', '**/__pycache__', '!keep/data']
    assert ignored('data/nuscenes/x.bin', pats)
    assert ignored('fuller/models/__pycache__/a.pyc', pats)
    assert not ignored('fuller/data_prep/a.py', pats)
    assert not ignored('keep/data', ['**/data', '!keep/data'])


def test_copy_sources_exist_and_are_not_ignored(dockerfile):
    patterns = dockerignore_patterns()
    copies = [a for w, a, _ in dockerfile['stage'] if w in ('COPY', 'ADD')]
    assert copies
    for args in copies:
        tokens = [t for t in shlex.split(args) if not t.startswith('--')]
        assert not any(t.startswith('--from') for t in shlex.split(args))
        for src in tokens[:-1]:
            path = REPO / src
            assert path.exists(), f'COPY source {src} does not exist'
            assert not ignored(src, patterns), \
                f'COPY source {src} is excluded by .dockerignore'
            if path.is_dir():
                files = [p for p in path.rglob('*') if p.is_file()]
                kept = [p for p in files
                        if not ignored(str(p.relative_to(REPO)), patterns)]
                assert kept, f'.dockerignore leaves nothing of {src}'


def test_dockerignore_keeps_environments_outputs_and_data_out():
    patterns = dockerignore_patterns()
    for path in ('.venv/bin/python', 'work_dirs/run/epoch_1.pth',
                 'data/nuscenes/samples/a.jpg', '.git/HEAD', '.gpu/x',
                 'fuller/__pycache__/x.pyc', '.pytest_cache/v/x',
                 'fuller.egg-info/PKG-INFO', '.docker-req/build.txt'):
        assert ignored(path, patterns), path
    for path in ('fuller/__init__.py', 'setup.py', 'setup.cfg', 'README.md',
                 'requirements/constraints.txt', 'configs/_base_/a.py',
                 'tools/train.py', 'docker/Dockerfile'):
        assert not ignored(path, patterns), path


def test_variables_are_declared(dockerfile):
    declared = set(dockerfile['global_args'])
    # FROM sees only the ARGs declared before it
    from_line = dockerfile['stage'][0][1]
    for m in VAR_RE.finditer(from_line):
        assert (m.group(1) or m.group(2)) in declared, from_line
    scope = {'PATH', 'HOME'}
    for word, args, lineno in dockerfile['stage'][1:]:
        # upper-case names are build args / environment; lower-case ones
        # are shell variables of a RUN step
        used = {m.group(1) or m.group(2) for m in VAR_RE.finditer(args)}
        used = {u for u in used if u.isupper()}
        missing = used - scope
        assert not missing, f'line {lineno}: {word} uses undeclared {missing}'
        if word in ('ARG', 'ENV'):
            scope |= set(parse_assignments(args))


def pip_file_args(run):
    """The ``-r`` / ``-c`` files of the ``pip install`` commands of a RUN."""
    refs = []
    for command in re.split(r'&&|;', run):
        if 'pip install' not in command:
            continue
        tokens = shlex.split(command)
        refs += [b for a, b in zip(tokens, tokens[1:]) if a in ('-r', '-c')]
    return refs


def _requirement_files(text):
    return set(re.findall(r'requirements/[\w.-]+\.txt', text))


def test_same_requirement_files_as_setup_env(dockerfile):
    setup_files = _requirement_files(SETUP_ENV.read_text())
    assert setup_files == {'requirements/build.txt',
                           'requirements/constraints.txt',
                           'requirements/runtime.txt',
                           'requirements/tests.txt'}
    docker_text = ' '.join(dockerfile['runs'])
    assert _requirement_files(docker_text) == setup_files
    for path in setup_files:
        assert (REPO / path).is_file(), path
    # every -r / -c of a pip step is a requirements/ file or a derived copy
    pip_runs = [r for r in dockerfile['runs'] if 'pip install' in r]
    refs = [ref for r in pip_runs for ref in pip_file_args(r)]
    assert refs
    for ref in refs:
        assert (ref.startswith('requirements/') and
                (REPO / ref).is_file()) or ref.startswith('.docker-req/'), ref
    # setup_env's order: build prerequisites, then runtime + tests in one
    # call, then fuller itself
    order = [next(i for i, r in enumerate(pip_runs) if key in r)
             for key in ('build.txt', 'runtime.txt', '-e .')]
    assert order == sorted(order)
    assert any('runtime.txt' in r and 'tests.txt' in r for r in pip_runs)


# ------------------------------------------------------ running the steps
def run_step(script, cwd, env_vars, python_dir=None):
    env = dict(os.environ, **env_vars)
    if python_dir is not None:
        env['PATH'] = f'{python_dir}{os.pathsep}{env["PATH"]}'
    return subprocess.run(['sh', '-c', script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def derive_requirements(dockerfile, tmp_path, **overrides):
    work = tmp_path / 'ctx'
    shutil.copytree(REPO / 'requirements', work / 'requirements')
    step = next(r for r in dockerfile['runs'] if '.docker-req' in r and
                'mkdir' in r)
    proc = run_step(step, work, {**dockerfile['args'], **overrides})
    assert proc.returncode == 0, proc.stderr
    return work


def _lines(path):
    return path.read_text().splitlines()


def test_python_version_guard(dockerfile):
    guard = dockerfile['runs'][0]
    args = dockerfile['args']
    supported = args['SUPPORTED_PYTHON_VERSIONS'].split()
    assert args['PYTHON_VERSION'] in supported
    ok = run_step(guard, REPO, args)
    assert ok.returncode == 0, ok.stderr
    bad = run_step(guard, REPO, dict(args, PYTHON_VERSION='3.9'))
    assert bad.returncode != 0
    assert 'PYTHON_VERSION=3.9 is not supported' in bad.stderr
    assert args['PYTHON_VERSION'] in bad.stderr


def test_derived_requirements_replace_only_the_torch_pin(dockerfile, tmp_path):
    work = derive_requirements(dockerfile, tmp_path)
    for name in ('constraints.txt', 'build.txt'):
        # default: the pin of requirements/ itself
        assert _lines(work / '.docker-req' / name) == \
            _lines(REPO / 'requirements' / name)
    other = derive_requirements(dockerfile, tmp_path / 'other',
                                TORCH_VERSION='2.1.2')
    for name in ('constraints.txt', 'build.txt'):
        orig = _lines(REPO / 'requirements' / name)
        new = _lines(other / '.docker-req' / name)
        changed = [(a, b) for a, b in zip(orig, new) if a != b]
        assert len(orig) == len(new)
        assert len(changed) == 1 and changed[0][0].startswith('torch==')
        assert changed[0][1] == 'torch==2.1.2'


def test_pip_steps_resolve_against_the_dev_environment(dockerfile, tmp_path):
    """Every pip step, dry-run offline (``--no-deps``: the requirements it
    names, under its constraints): all of it is already satisfied by the
    environment tools/setup_env.sh built from the same files."""
    work = derive_requirements(dockerfile, tmp_path)
    shim = tmp_path / 'bin'
    shim.mkdir()
    # a wrapper, not a symlink: a venv is only found from its own bin/
    (shim / 'python').write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (shim / 'python').chmod(0o755)
    steps = [r for r in dockerfile['runs']
             if 'pip install' in r and '-e .' not in r]
    assert len(steps) == 3  # CUDA torch, build prerequisites, runtime+tests
    for i, step in enumerate(steps):
        report = tmp_path / f'report{i}.json'
        dry = re.sub(r'--index-url\s+\S+', '', step)
        dry = dry.replace('pip install',
                          f'pip install --dry-run --no-index --no-deps '
                          f'--report {report}')
        proc = run_step(dry, work, dockerfile['args'], python_dir=shim)
        assert proc.returncode == 0, f'{step}\n{proc.stdout}\n{proc.stderr}'
        would_install = [item['metadata']['name'] for item in
                         json.loads(report.read_text())['install']]
        assert would_install == [], (step, would_install)
