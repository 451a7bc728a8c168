"""Every check of what a command was asked, run once before it builds, reads or writes anything;
past these the code trusts its inputs. One module per command family:

- ``training``: ``python -m src.train``'s config values, its launch, and its built parts
  (model against data, optimizers, data files, the metrics' classifier, the checkpoint to resume).
- ``commands``: ``python -m src.generate`` and ``python -m src.evaluate``.
- ``outputs``: the files and folders any command will write, and an Optuna search's storage.

The run folder's rules (another run there, its lock, ``overwrite``) are ``src/run_folder.py``'s;
a checkpoint file's are ``src/checkpoint.py``'s, which reads it; the data files' are
``src/data/provision.py``'s, which provisions them. Each is called from here.
"""
