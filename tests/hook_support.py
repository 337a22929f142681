"""Helpers for the hook tests: a recorder of our signals, a fake memory probe, and standard prompts."""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest

from comfy_memhooks import signals
from comfy_memhooks.comfy import runtime as runtime_module
from comfy_memhooks.comfy.runtime import Runtime, use_runtime
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.failures import Failures, failure_registry
from comfy_memhooks.hook import patch as hook_patch
from comfy_memhooks.probe.core_ram import CoreRamReader
from comfy_memhooks.probe.readings import MemorySnapshot, RamReading, RamSource
from comfy_memhooks.triggers.settings import SettingsStore

SIGNAL_NAMES = ("prompt_started", "node_started", "node_finished", "prompt_finished", "optimization_performed")
GIB = 1024**3


@dataclass
class Event:
    signal: str
    sender: Any
    kwargs: dict[str, Any]


@dataclass
class Recorder:
    """The signals named (all but the heavy-node ones by default), in order; connected strongly."""

    names_recorded: tuple[str, ...] = SIGNAL_NAMES
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._receivers = {}
        for name in self.names_recorded:

            def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
                self.events.append(Event(_name, sender, kwargs))

            self._receivers[name] = receiver
            getattr(signals, name).connect(receiver, weak=False)

    def close(self) -> None:
        for name, receiver in self._receivers.items():
            getattr(signals, name).disconnect(receiver)

    def names(self, *only: str) -> list[str]:
        return [event.signal for event in self.events if not only or event.signal in only]

    def of(self, name: str) -> list[Event]:
        return [event for event in self.events if event.signal == name]

    def node_trace(self) -> list[tuple[str, str]]:
        """("started"/"finished", node id) in order."""
        return [
            (event.signal.removeprefix("node_"), event.kwargs["node_id"])
            for event in self.events
            if event.signal in ("node_started", "node_finished")
        ]


class FakeProbe:
    """A memory probe whose RAM percentage the test sets; there is no GPU."""

    def __init__(self, ram_percent: float = 50.0):
        self.ram_percent = ram_percent
        self.grow_percent_per_snapshot = 0.0  # usage that keeps arriving, capped at 99%
        self.snapshots = 0
        self.failures = Failures(logging.getLogger("comfy_memhooks.probe.memory"), "memory probe failed while {kind}")
        self.core_ram = CoreRamReader()  # ComfyUI's own reading: none outside ComfyUI, as the real probe's

    def _ram(self) -> RamReading:
        total = 16 * GIB
        used = int(total * min(self.ram_percent + self.grow_percent_per_snapshot * self.snapshots, 99) / 100)
        return RamReading(RamSource.HOST, total, used, total - used, 2 * GIB, total)

    def read_ram(self) -> RamReading:
        return self._ram()

    def snapshot(self, include_processes: bool = False) -> MemorySnapshot:
        self.snapshots += 1
        return MemorySnapshot(time.time(), self._ram(), (), None, "no GPU in this test", None)

    def failure_count(self) -> int:
        return self.failures.count

    def last_failure(self) -> str | None:
        return self.failures.last_error

    def usage(self) -> tuple[int | None, int | None]:
        return 2 * GIB, None

    def processes(self) -> None:
        return None


def chain_prompt(*classes: str, first_input: Any = 1) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Nodes "1".."n" of the given classes, each fed by the one before; the order to run them in."""
    prompt: dict[str, dict[str, Any]] = {}
    for index, class_type in enumerate(classes, start=1):
        inputs = {"x": first_input} if index == 1 else {"x": [str(index - 1), 0]}
        prompt[str(index)] = {"class_type": class_type, "inputs": inputs}
    return prompt, list(prompt)


def spy(function: Callable[..., Any], into: list[Any]) -> Callable[..., Any]:
    """A wrapper of the same nature (sync or async, made with functools.wraps) that keeps what ``function`` returned."""
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def spying_async(*args: Any, **kwargs: Any) -> Any:
            into.append(await function(*args, **kwargs))
            return into[-1]

        return spying_async

    @functools.wraps(function)
    def spying(*args: Any, **kwargs: Any) -> Any:
        into.append(function(*args, **kwargs))
        return into[-1]

    return spying


def fresh_hook_failures(monkeypatch: pytest.MonkeyPatch) -> Failures:
    """A new counter for the executor hook's own failures (its pipeline's steps' included), for one test."""
    failures = Failures(logging.getLogger("comfy_memhooks.pipeline"), "executor hook failed while {kind}")
    monkeypatch.setitem(failure_registry._parts, "hook", failures)
    monkeypatch.setattr(hook_patch, "hook_failures", failures)
    monkeypatch.setattr(runtime_module, "hook_failures", failures)  # what a runtime's pipeline counts into
    return failures


def hooked_runtime(module: ModuleType, engine: Engine, store: SettingsStore, *, watch: bool = False) -> Runtime:
    """A runtime on ``engine`` and ``store`` with its hook in ``module``, made the process's; it keeps the current
    runtime's pipeline, so parts a test already put into it (a panel's, a recorder's) see the same nodes."""
    previous = use_runtime(None)
    pipeline = None if previous is None else previous.pipeline
    runtime = Runtime(engine=engine, settings=store, pipeline=pipeline, watch=watch)
    use_runtime(runtime)
    if runtime.install_hook(module) is None:
        raise RuntimeError("the executor hook did not install")
    return runtime
