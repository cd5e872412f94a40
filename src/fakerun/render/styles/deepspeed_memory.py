"""What DeepSpeed's see_memory_usage reports of rank 0's GPU, from the run's
memory model, and how it prints the figures."""

from __future__ import annotations

from fakerun.world.identity import Identity
from fakerun.world.memory import state_bytes

GIB = 2**30


def gib(n: float) -> float:
    """see_memory_usage's and the timer's figures: round(bytes / 2**30, 2), printed raw."""
    return round(n / GIB, 2)


def memory_figures(allocated: float, peak: float, reserved: float) -> str:
    """see_memory_usage's second line: an f-string continued with backslashes,
    so each gap is "GB " plus the 8 spaces of indentation, and a space ends it."""
    return (f"MA {gib(allocated)} GB         Max_MA {gib(peak)} GB         "
            f"CA {gib(reserved)} GB         Max_CA {round(reserved / GIB)} GB ")


class Memory:
    """What torch's allocator tells rank 0, from the run's memory model: fp16
    weights and grads, the fp32 master copy and Adam's moments (12 bytes a
    parameter), sharded by ZeRO over data parallelism."""

    def __init__(self, ident: Identity) -> None:
        state = state_bytes(ident.model, ident.parallel)
        self.weights, self.grads, self.optimizer = state["weights"], state["grads"], state["optimizer"]
        self.master = self.optimizer / 3  # fp32 params; exp_avg and exp_avg_sq are the rest
        self.zero = ident.parallel.zero
        self.layer = 2 * ident.model.params / (ident.parallel.tp * ident.parallel.pp) / ident.model.layers

    def steady(self) -> float:
        """Allocated between steps (ZeRO-3 also keeps its gradient partition)."""
        return self.weights + self.optimizer + (self.grads if self.zero >= 3 else 0.0)

    def stage12(self) -> list[tuple[str, float, float]]:
        """(title, allocated, peak since the last report) through ZeRO-1/2's set-up:
        flattening copies the weights, a zero fp32 grad initialises the states."""
        ready, flattening = self.weights + self.master, self.weights + max(self.weights, self.master)
        return [("Before initializing optimizer states", ready, flattening),
                ("After initializing optimizer states", ready, ready + self.master),
                ("After initializing ZeRO optimizer", ready, ready)]

    def stage3(self, subgroups: int) -> list[tuple[str, float, float]]:
        """The same through ZeRO-3's: parameters arrive partitioned (zero.Init
        gathers one layer at a time), then fp16 and fp32 partitions are built."""
        w, ready = self.weights, self.weights + self.master
        return [("Stage 3 initialize beginning", w, w + self.layer),
                ("DeepSpeedZeRoOffload initialize [begin]", w, w),
                ("DeepSpeedZeRoOffload initialize [end]", w, w),
                ("Before creating fp16 partitions", w, w),
                (f"After creating fp16 partitions: {subgroups}", w, 2 * w),
                ("Before creating fp32 partitions", w, w),
                ("After creating fp32 partitions", ready, ready),
                ("Before initializing optimizer states", ready, ready),
                ("After initializing optimizer states", ready, ready + self.master),
                ("After initializing ZeRO optimizer", ready + self.grads, ready + self.grads)]
