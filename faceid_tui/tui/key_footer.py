"""The footer of keys, rebuilt only when the keys it shows change.

Textual's ``Footer`` removes and mounts all its key widgets whenever the screen's bindings
*may* have changed: on every focus change and every return from a dialog. With ~15 keys that
took the keyboard's thread 20-60 ms (each time) while a queue drained, mostly to build the
same footer again.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer


class KeyFooter(Footer):
    """A ``Footer`` that skips rebuilding when the keys it would show are the ones shown."""

    def __init__(self, *, compact: bool = False) -> None:
        super().__init__(compact=compact)
        self._keys_on_show: tuple[tuple[object, ...], ...] | None = None

    def _keys_now(self) -> tuple[tuple[object, ...], ...]:
        """What the footer shows: each shown binding's key, action, label and state."""
        return tuple((binding.key, binding.action, binding.description, enabled, tooltip)
                     for _, binding, enabled, tooltip in self.screen.active_bindings.values()
                     if binding.show)

    def bindings_changed(self, screen: Screen) -> None:
        if (self._keys_on_show is not None and self.is_attached and screen is self.screen
                and self._keys_now() == self._keys_on_show):
            return
        super().bindings_changed(screen)

    def compose(self) -> ComposeResult:
        self._keys_on_show = self._keys_now() if self._bindings_ready else None
        yield from super().compose()
