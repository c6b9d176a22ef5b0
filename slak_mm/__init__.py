"""SLaK for the OpenMMLab 2.x toolchain.

Importing this package registers the SLaK backbone in mmengine's root
registries (so ``type='SLaK'`` builds under the mmdet, mmseg and mmpretrain
scopes alike) and allow-lists the globals that mmengine checkpoints need for
``torch.load(weights_only=True)``, and routes mmengine's checkpoint reads
(``load_from``, ``--resume``, ``Pretrained`` init, the toolkits' inference
APIs) through that safe loader.
"""

from .engine import SLaKLearningRateDecayOptimizerConstructor  # noqa: F401
from .models import SLaK  # noqa: F401  registers SLaK
from .sparse import SparseTrainingHook  # noqa: F401  registers the hooks
from .utils import (
    register_checkpoint_safe_globals,
    register_mmengine_checkpoint_loaders,
)
from .version import __version__

register_checkpoint_safe_globals()
register_mmengine_checkpoint_loaders()

__all__ = ['__version__', 'SLaK']
