"""Checkpoint files that are either complete or absent.

mmengine's ``LocalBackend.put`` opens the checkpoint's final path with
``'wb'`` and writes into it, so a process killed meanwhile leaves a
truncated file under that name; when ``CheckpointHook`` re-saves a
checkpoint that ``last_checkpoint`` already names (after a new best score),
``--resume`` then finds nothing whole to resume from.
:class:`AtomicLocalBackend` writes to a hidden file beside it and renames
that into place. Configs select it for their checkpoints with
``default_hooks.checkpoint.backend_args=dict(backend='atomic_local')``
(``configs/_base_/exact_resume.py``).
"""

import os
import os.path as osp
from pathlib import Path
from typing import Union

from mmengine.fileio import LocalBackend, register_backend
from mmengine.utils import mkdir_or_exist


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose ``put`` is atomic.

    ``put`` writes ``.<name>.part`` in the target's directory, flushes it
    to disk and ``os.replace``-s it onto the target: readers see the old
    file or the new one, never part of one. A kill during the write leaves
    only the ``.part`` file, which the next write of the same name
    replaces. Everything else is :class:`mmengine.fileio.LocalBackend`.
    """

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        """Writes ``obj`` to ``filepath`` atomically (creating its
        directory if needed)."""
        filepath = str(filepath)
        directory = osp.dirname(filepath)
        mkdir_or_exist(directory)
        partial = osp.join(directory, f'.{osp.basename(filepath)}.part')
        with open(partial, 'wb') as f:
            f.write(obj)
            f.flush()
            # On disk before the rename, so a crash of the machine (not
            # only of the process) cannot leave a renamed empty file.
            os.fsync(f.fileno())
        os.replace(partial, filepath)


register_backend('atomic_local', AtomicLocalBackend)
