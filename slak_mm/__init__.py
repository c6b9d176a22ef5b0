"""SLaK for the OpenMMLab 2.x toolchain.

Importing this package registers the SLaK backbone in mmengine's root
registries (so ``type='SLaK'`` builds under the mmdet, mmseg and mmpretrain
scopes alike) and the sparse-training hooks in its root ``HOOKS``,
allow-lists the globals that mmengine checkpoints need for
``torch.load(weights_only=True)``, and routes mmengine's checkpoint reads
(``load_from``, ``--resume``, ``Pretrained`` init, the toolkits' inference
APIs) through that safe loader, which also refuses a checkpoint that does
not fit a SLaK model on every one of those paths.

Without mmengine installed there is no registry to fill: only the
plain-torch sparse-training package :mod:`slak_mm.sparse` is usable then.
"""

from .version import __version__

try:
    import mmengine
except ImportError:  # plain torch: slak_mm.sparse only
    mmengine = None

if mmengine is not None:
    from .engine import SLaKLearningRateDecayOptimizerConstructor  # noqa: F401
    from .engine.hooks import SparseTrainingHook  # noqa: F401  registers hooks
    from .models import SLaK  # noqa: F401  registers SLaK
    from .utils import (
        make_mmengine_loading_strict,
        register_checkpoint_safe_globals,
        register_mmengine_checkpoint_loaders,
    )

    register_checkpoint_safe_globals()
    register_mmengine_checkpoint_loaders()
    make_mmengine_loading_strict()

__all__ = ['__version__', 'SLaK']
