"""One training step — forward, backward, optimizer update — recorded once and replayed (``trainer.cuda_graph``).

On a GPU a step of the seed CNN is dozens of tiny kernels, and launching them costs more than running
them; a CUDA graph launches the whole step at once. The contract a recorded step must keep:

- its Python runs once, at recording: every value it computes on the host is frozen into the graph,
  so step counters and step-dependent scalars live on the device (``capturable`` optimizers);
- it reads its batch from static input buffers, refilled before each replay;
- it writes only tensors that outlive it, in place (gradients, optimizer state, metric sums): a tensor
  it creates and keeps in a Python attribute is the recording's, never updated by a replay;
- random draws (dropout) advance on every replay, as they do eagerly.

CPUs have no kernel graphs, so ``trainer.cuda_graph=true`` is refused there (``recorder``). The tests
record with ``make_fx`` instead, which keeps the same contract, to check a recorded step on a CPU.

Own code for a gap: ``torch.cuda.make_graphed_callables`` leaves the optimizer step out, and
``torch.compile(mode="reduce-overhead")`` draws dropout masks from Inductor's generator (other numbers
for a seed); Lightning ships no graph capture.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

WARMUP_STEPS = 3  # eager steps before recording: optimizer state and gradients exist, CUDA libraries are set up

Recorder = Callable[[Callable[[], None], Sequence[torch.Generator]], Callable[[], None]]


def record_cuda(step: Callable[[], None], generators: Sequence[torch.Generator] = ()) -> Callable[[], None]:
    """Capture ``step`` as a CUDA graph, run it once (capture itself runs nothing), return its replay.

    ``generators``: random generators the step draws from besides the default one (a pack's replicas).
    """
    graph = torch.cuda.CUDAGraph()
    for generator in generators:
        graph.register_generator_state(generator)
    with torch.cuda.graph(graph):
        step()
    graph.replay()
    return graph.replay


def recorder(device: torch.device) -> Recorder:
    """What records a step on ``device``; ``ValueError`` where nothing can."""
    if device.type != "cuda":
        raise ValueError("this run trains on the CPU (CUDA graphs capture CUDA kernels; use trainer=gpu)")
    return record_cuda


class GraphedStep:
    """``step(*inputs)`` eager for ``WARMUP_STEPS`` calls, then recorded once and replayed.

    ``__call__`` returns False, doing nothing, for a batch whose shapes differ from the first one (the
    last, partial batch of an epoch): the caller runs that step eagerly.
    """

    def __init__(
        self,
        step: Callable[..., None],
        example: tuple[torch.Tensor, ...],
        record: Recorder,
        generators: Sequence[torch.Generator] = (),
    ):
        self.inputs = tuple(torch.empty_like(t) for t in example)
        self.step, self.record, self.generators = step, record, tuple(generators)
        self.calls = 0
        self.replay: Callable[[], None] | None = None

    def _eager(self) -> None:
        """A warm-up step; CUDA wants those on a side stream before a capture."""
        if self.inputs[0].device.type != "cuda":
            self.step(*self.inputs)
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.step(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)

    def __call__(self, *batch: torch.Tensor) -> bool:
        if any(b.shape != s.shape for b, s in zip(batch, self.inputs, strict=True)):
            return False
        for static, value in zip(self.inputs, batch, strict=True):
            static.copy_(value)
        if self.replay is not None:
            self.replay()
        elif self.calls < WARMUP_STEPS:
            self._eager()
        else:
            self.replay = self.record(lambda: self.step(*self.inputs), self.generators)
        self.calls += 1
        return True

    def reset(self) -> None:
        """Record again at the next call (the step's Python changed: a replica of a pack stopped)."""
        self.replay, self.calls = None, WARMUP_STEPS
