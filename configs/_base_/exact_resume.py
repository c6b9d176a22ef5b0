# A --resume that repeats the uninterrupted run bit for bit: every rank's
# random generator states go into each checkpoint and come back on resume
# (RNGStateHook), and checkpoints are written to a hidden file and renamed
# into place (AtomicLocalBackend, local paths only), so a run killed while
# saving leaves no partial checkpoint. Configs take it as
# `default_hooks = dict(_base_.exact_resume_hooks, ...)`.
exact_resume_hooks = dict(
    rng_state=dict(type='RNGStateHook'),
    checkpoint=dict(backend_args=dict(backend='atomic_local')),
)
