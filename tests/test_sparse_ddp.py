"""SparseTrainingHook under DDP: 2 CPU processes (gloo), real mmengine
Runners, masks compared across ranks after several updates."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .helpers import ToyDataset, make_runner, sparse_hook, toy_model

WORLD_SIZE = 2
NUM_ITERS = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _train_rank(rank, port, work_dir, result_dir):
    from mmengine.model import MMDistributedDataParallel

    os.environ.update(
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
    )
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=WORLD_SIZE)
    # mmengine passes device_ids=[LOCAL_RANK], which CPU modules reject,
    # so the model is wrapped here as the Runner would otherwise do.
    model = MMDistributedDataParallel(
        module=toy_model(seed=rank), device_ids=None, broadcast_buffers=False
    )
    runner = make_runner(
        work_dir,
        [
            dict(
                type='SparseTrainingHook',
                sparsity=0.5,
                init='snip',
                growth='random',
                prune_rate=0.5,
                update_interval=1,
            )
        ],
        max_iters=NUM_ITERS,
        checkpoint_interval=NUM_ITERS,
        # Each rank its own batches (so its own SNIP scores) and its own
        # seed (so its own random draws): agreement must come from the hook.
        dataset=ToyDataset(seed=rank),
        model=model,
        launcher='pytorch',
        randomness=dict(seed=0, diff_rank_seed=True),
    )
    runner.train()
    sparse = sparse_hook(runner).controller
    torch.save(
        dict(
            masks=sparse.mask_state.masks,
            weights=runner.model.module.state_dict(),
            num_updates=sparse.num_updates,
            seed=sparse.seed,
        ),
        os.path.join(result_dir, f'rank{rank}.pth'),
    )
    dist.destroy_process_group()


def test_ranks_hold_identical_masks_after_updates(tmp_path):
    results = tmp_path / 'results'
    results.mkdir()
    # fork: the children inherit the imported modules (spawn re-imports
    # torch, mmengine and matplotlib, most of the test's time).
    mp.start_processes(
        _train_rank,
        args=(
            _free_port(),
            str(tmp_path / 'work'),
            str(results),
        ),
        nprocs=WORLD_SIZE,
        join=True,
        start_method='fork',
    )
    rank0, rank1 = (
        torch.load(results / f'rank{r}.pth', weights_only=True)
        for r in range(WORLD_SIZE)
    )
    assert rank0['seed'] != rank1['seed']
    assert rank0['num_updates'] == rank1['num_updates'] == NUM_ITERS
    assert list(rank0['masks']) == list(rank1['masks'])
    for name, mask in rank0['masks'].items():
        assert torch.equal(mask, rank1['masks'][name]), name
    for key, value in rank0['weights'].items():
        assert torch.equal(value, rank1['weights'][key]), key
