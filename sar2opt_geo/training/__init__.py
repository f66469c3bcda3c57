"""Training side: paired-tile datasets, the pix2pix trainer (pretrain, full and LoRA fine-tuning),
validation metrics, evaluation against trivial baselines and cutting georeferenced rasters into tile pairs.

Nothing here imports click (the CLI lives in :mod:`sar2opt_geo.cli.train`). Heavy names are imported from
the submodules: ``from sar2opt_geo.training.trainer import train``.
"""
