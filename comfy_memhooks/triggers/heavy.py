"""Which nodes are heavy: the first settings rule whose glob matches a node's class name.

The executor hook asks for every node ComfyUI runs, so the answer is computed once per class and kept until
the settings change; a glob match per node would cost more than the rest of the hook together.
"""

from __future__ import annotations

from collections.abc import Callable

from .settings import AutoSettings, HeavyNodeRule


class HeavyNodeIndex:
    """The heavy-node rule for each class name, cached per settings object.

    Settings are frozen and every change makes a new object, so an identity check is enough to notice a change.
    The cache is swapped as one tuple: a reader in another thread sees either the old pair or the new one.

    Args:
        settings: returns the current settings (``lambda: store.current``).
    """

    def __init__(self, settings: Callable[[], AutoSettings]):
        self._settings = settings
        self._cache: tuple[AutoSettings | None, dict[str, HeavyNodeRule | None]] = (None, {})

    def rule_for(self, node_class: str) -> HeavyNodeRule | None:
        """The rule that applies to ``node_class``, ``None`` for an ordinary node."""
        settings = self._settings()
        known, rules = self._cache
        if known is not settings:
            rules = {}
            self._cache = (settings, rules)
        try:
            return rules[node_class]
        except KeyError:
            rule = rules[node_class] = settings.rule_for(node_class)
            return rule

    def is_heavy(self, node_class: str) -> bool:
        return self.rule_for(node_class) is not None
