"""pytest plugin: mmcv, mmdet, mmseg and mmpretrain cannot be imported.

Simulates the GPU check's machine, which has torch, Triton, timm and the
wheels of ``tools/misc/download_gpu_wheels.sh`` (mmengine) but none of the
OpenMMLab toolkits. Load it first with ``python -m pytest -p
tests.block_toolkits ...`` from the repository root;
``tests/test_gpu_check.py`` collects the GPU check's tests that way.
"""

import importlib.abc
import sys

BLOCKED = ('mmcv', 'mmdet', 'mmseg', 'mmpretrain')


class BlockToolkits(importlib.abc.MetaPathFinder):
    """Raises ImportError for the blocked top-level packages."""

    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError(
                f'{name} is blocked: the GPU check has no {BLOCKED} packages'
            )
        return None


_loaded = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)
if _loaded:
    raise RuntimeError(
        f'tests.block_toolkits loaded too late: {_loaded} already imported'
    )
sys.meta_path.insert(0, BlockToolkits())
