"""The package's layers point down (docs/architecture.md): no module below
``slak_mm.engine`` imports the runner glue (``slak_mm.engine``), the tool
library (``slak_mm.apis``) or the scripts (``tools``), not even lazily
inside a function."""

import ast
import os.path as osp
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'slak_mm'

#: The packages below slak_mm.engine.
LOWER = ('models', 'ops', 'sparse', 'analysis', 'converters', 'datasets',
         'utils')  # fmt: skip
#: What they must not import.
UPPER = ('slak_mm.engine', 'slak_mm.apis', 'tools')


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def imported_modules(path: Path, package: Path):
    """``(line, dotted name)`` of every import in the file (relative ones
    resolved; ``from a import b`` gives ``a`` and ``a.b``), wherever it
    stands: module level, functions, ``try`` blocks; and the constant
    names given to ``importlib.import_module``."""
    name = module_name(path, package)
    is_package = path.name == '__init__.py'
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split('.')
                # A package's own module counts as one level.
                base = base[: len(base) - node.level + is_package]
                parent = '.'.join(
                    base + ([node.module] if node.module else [])
                )
            else:
                parent = node.module
            yield node.lineno, parent
            for alias in node.names:
                yield node.lineno, f'{parent}.{alias.name}'
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Attribute, ast.Name))
            and getattr(node.func, 'attr', getattr(node.func, 'id', None))
            == 'import_module'
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


#: Which packages of slak_mm each lower package may import, besides itself
#: (the table of docs/architecture.md).
MAY_IMPORT = dict(
    utils=set(),
    ops={'utils'},
    sparse={'utils'},
    datasets={'utils'},
    models={'ops', 'utils'},
    converters={'models', 'ops', 'utils'},
    analysis={'converters', 'datasets', 'models', 'ops', 'sparse', 'utils'},
)


def is_upper(module: str) -> bool:
    return any(module == up or module.startswith(up + '.') for up in UPPER)


def upward_imports(package: Path):
    """``'file:line imports name'`` for each import of an upper layer by a
    module of a lower one."""
    found = []
    for lower in LOWER:
        for path in sorted((package / lower).rglob('*.py')):
            where = osp.relpath(path, package.parent)
            seen = set()
            for line, module in imported_modules(path, package):
                if is_upper(module) and line not in seen:
                    seen.add(line)  # one report per import statement
                    found.append(f'{where}:{line} imports {module}')
    return found


def test_every_lower_package_exists():
    # A renamed package would silently drop out of the check.
    for lower in LOWER:
        assert (PACKAGE / lower / '__init__.py').is_file(), lower


def test_no_module_below_engine_imports_engine_apis_or_tools():
    assert upward_imports(PACKAGE) == []


def test_lower_packages_import_only_what_the_table_allows():
    assert set(MAY_IMPORT) == set(LOWER)
    found = []
    for lower, allowed in MAY_IMPORT.items():
        for path in sorted((PACKAGE / lower).rglob('*.py')):
            for line, module in imported_modules(path, PACKAGE):
                parts = module.split('.')
                if parts[0] != 'slak_mm' or len(parts) < 2:
                    continue
                if parts[1] not in allowed | {lower}:
                    where = osp.relpath(path, PACKAGE.parent)
                    found.append(f'{where}:{line} imports {module}')
    assert found == []


@pytest.mark.parametrize(
    'source, expected',
    [
        ('from slak_mm.engine import hooks', 'slak_mm.engine'),
        ('from ...engine.hooks import X', 'slak_mm.engine.hooks'),
        ('from ... import apis', 'slak_mm.apis'),
        ('def f():\n    from ...apis import x', 'slak_mm.apis'),
        ('import tools.misc.demo', 'tools.misc.demo'),
        ('importlib.import_module("slak_mm.apis")', 'slak_mm.apis'),
    ],
)
def test_the_check_sees_every_kind_of_upward_import(
    tmp_path, source, expected
):
    package = tmp_path / 'slak_mm'
    for lower in LOWER:
        (package / lower).mkdir(parents=True)
        (package / lower / '__init__.py').write_text('')
    (package / 'models' / 'sub').mkdir()
    (package / 'models' / 'sub' / 'mod.py').write_text(source + '\n')
    found = upward_imports(package)
    assert found and all(expected in line for line in found[:1]), found
    # Imports within the lower layers pass.
    (package / 'models' / 'sub' / 'mod.py').write_text(
        'from ...utils import checkpoint\nfrom .. import layers\n'
    )
    assert upward_imports(package) == []
