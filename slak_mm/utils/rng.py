"""The global random number streams of a process, as a checkpoint entry.

Stochastic depth, dropout and data augmentations draw from the process-wide
generators of torch (CPU and each CUDA device), numpy and Python's
``random``. :func:`get_rng_states` captures all of them in a form that
``torch.load(weights_only=True)`` reads back (tensors, ints, floats,
strings, tuples; no numpy arrays); :func:`set_rng_states` puts them back.
"""

import random
from typing import List

import numpy as np
import torch


def get_rng_states() -> dict:
    """The current states of this process's global generators.

    Returns:
        dict: ``python`` (``random.getstate()``), ``numpy`` (the legacy
        ``np.random`` state, its key array as an int64 tensor), ``torch``
        (the CPU generator's ByteTensor) and ``cuda`` (one ByteTensor per
        visible CUDA device; empty without CUDA).
    """
    algorithm, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return dict(
        python=random.getstate(),
        numpy=dict(
            algorithm=str(algorithm),
            keys=torch.from_numpy(keys.astype(np.int64)),
            pos=int(pos),
            has_gauss=int(has_gauss),
            cached_gaussian=float(cached_gaussian),
        ),
        torch=torch.get_rng_state(),
        cuda=(
            torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        ),
    )


def set_rng_states(states: dict) -> List[str]:
    """Restores states from :func:`get_rng_states` (tensors may sit on
    any device, as a checkpoint loaded with a ``map_location`` has them).

    CUDA states are restored for the devices both sides have.

    Args:
        states (dict): The output of :func:`get_rng_states`.

    Returns:
        list[str]: What could not be restored (CUDA devices that differ in
        number), for the caller to report; empty when everything was.
    """
    random.setstate(states['python'])
    saved = states['numpy']
    np.random.set_state(
        (
            saved['algorithm'],
            saved['keys'].cpu().numpy().astype(np.uint32),
            saved['pos'],
            saved['has_gauss'],
            saved['cached_gaussian'],
        )
    )
    torch.set_rng_state(states['torch'].cpu())
    problems = []
    saved_cuda = list(states.get('cuda', []))
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for device, state in enumerate(saved_cuda[:visible]):
        torch.cuda.set_rng_state(state.cpu(), device)
    if len(saved_cuda) != visible:
        problems.append(
            f'{len(saved_cuda)} CUDA generator states saved, {visible} '
            f'CUDA devices visible: restored {min(len(saved_cuda), visible)}'
        )
    return problems
