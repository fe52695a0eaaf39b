"""optbench's Hydra configs; importable as ``optbench.conf`` so that they ship inside the package."""
