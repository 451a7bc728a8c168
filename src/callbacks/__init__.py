"""The project's Lightning callbacks, each in the module of its job (conf/callbacks/default.yaml names them):

- ``checkpoints``: the run's checkpoints (``RunCheckpoint``), the model config stored in them,
  their atomic writer, the checkpoint written on Ctrl-C or SIGTERM, and where the run was then.
- ``grids``: the per-epoch sample grid and latent-walk grid.
- ``quality``: the sample-quality figures of each epoch (``val/fid`` ...) and the run's last figures.
- ``hparams``: the run's row in TensorBoard's HParams tab.
"""
