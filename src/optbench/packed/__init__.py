"""Packed training: many runs of one model shape as one batched model in one process (``hydra/launcher=packed``)."""

from .train import pack_key, run_pack

__all__ = ["pack_key", "run_pack"]
