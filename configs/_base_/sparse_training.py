# SLaK's released dynamic sparse training (the SLaK-S/B settings): 40%
# sparsity, SNIP layer densities, magnitude pruning with random regrowth,
# prune rate 0.3 decaying by a cosine. Configs take it as
# `dict(_base_.sparse_training, update_interval=..., ...)`.
sparse_training = dict(
    type='SparseTrainingHook',
    sparsity=0.4,
    init='snip',
    growth='random',
    prune_rate=0.3,
)
