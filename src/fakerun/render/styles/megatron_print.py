"""Who prints a Megatron script's lines, and how: print_rank_0 (global rank
0), print_rank_last (the last rank), the data-parallel rank 0s of each
(tensor, pipeline) shard, Megatron's datetime and timers, as the pinned
megatron-core version prints them."""

from __future__ import annotations

import math
from datetime import datetime, tzinfo

from fakerun.render.lines import STDOUT, Line
from fakerun.render.styles.megatron_formats import Flavour, memory_report, timers_block
from fakerun.world import physics as sim
from fakerun.world.allocator import usage
from fakerun.world.identity import Identity


class MegatronPrint:
    """The printing half of the megatron renderer: it reads the run's identity
    and time zone from the renderer it is mixed into."""

    ident: Identity
    tz: tzinfo | None

    @property
    def flavour(self) -> Flavour:
        return Flavour.of(self.ident.versions.megatron)

    @property
    def last(self) -> int:
        return self.ident.world - 1

    def dp_zero(self) -> list[int]:
        """Global ranks with data-parallel rank 0, in Megatron's order of its
        groups (tp-cp-ep-dp-pp: allocator.stage_of), first stage first."""
        p = self.ident.parallel
        return [stage * p.tp * p.dp + t for stage in range(p.pp) for t in range(p.tp)]

    def coordinates(self, rank: int) -> tuple[int, int]:
        """(tensor, pipeline) model-parallel rank of a global rank."""
        p = self.ident.parallel
        return rank % p.tp, rank // (p.tp * p.dp)

    @staticmethod
    def _out(texts_: list[str], rank: int = 0) -> list[Line]:
        return [Line(t, STDOUT, rank) for t in texts_]

    def _core_log(self, module: str, message: str) -> str:
        """A megatron.core logger line through Megatron's CustomHandler."""
        return f"INFO:megatron.core.{module}:{message}"

    def _time(self, when: float) -> str:
        """datetime.now() as Megatron formats it (2026 upstream adds microseconds)."""
        fmt = "%Y-%m-%d %H:%M:%S.%f" if self.flavour.micro else "%Y-%m-%d %H:%M:%S"
        return datetime.fromtimestamp(when, self.tz).strftime(fmt)

    def _datetime(self, what: str, when: float) -> Line:
        """training.print_datetime (note the trailing space)."""
        return Line(f"[{what}] datetime: {self._time(when)} ", STDOUT, 0)

    def _skew_ms(self, name: str, occasion: int) -> float:
        """Ranks leave a barrier within about one barrier latency of each
        other: the spread between a timer's min and max across ranks, never
        the same twice."""
        latency = 1e3 * 30e-6 * math.log2(max(2, self.ident.world))
        return latency * (0.5 + sim.uniform(self.ident.seed, "timer-skew", name, occasion))

    def _timers(self, rows: list[tuple[str, float]], occasion: int) -> list[Line]:
        """`occasion`: the iteration the timers were read at (0: the set-up's)."""
        return self._out(timers_block([(name, max(0.0, ms - self._skew_ms(name, occasion)), ms)
                                       for name, ms in rows]), self.last)

    def _memory(self, name: str, step: int) -> list[Line]:
        """utils.report_memory on every data-parallel rank 0, after `step`: the
        state allocated, the step's peak, the allocator's reserve (which
        never shrinks, so it is also its maximum)."""
        out = []
        for r in self.dp_zero():
            u = usage(self.ident, r, step)
            out.append(Line(f"[Rank {r}] {memory_report(name, u.allocated, u.peak, u.reserved)}", STDOUT, r))
        return out
