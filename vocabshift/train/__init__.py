"""Continued pretraining (CPT): data pipeline, PEFT setup, training loop and checkpoints.

``data`` streams, tokenizes, packs and masks the corpus; ``config``, ``peft_setup``, ``loop`` and
``checkpoint`` set up and run the training. Import the submodules directly.
"""
