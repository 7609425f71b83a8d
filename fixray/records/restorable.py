"""Tune callbacks saved with a sweep's state and built anew on resume, from the arguments they were made with."""

from __future__ import annotations

from typing import Any


def _rebuild(cls: type, args: tuple, kwargs: dict[str, Any]) -> Any:
    return cls(*args, **kwargs)


class Restorable:
    """Pickles as its constructor call: a restored callback holds no clock, client, queue or stream of the process
    that saved it, only what it was built with (Tune pickles callbacks into the sweep's saved state)."""

    def __new__(cls, *args, **kwargs):
        made = super().__new__(cls)
        made._made_with = (args, kwargs)
        return made

    def __reduce__(self):
        return _rebuild, (type(self), *self._made_with)
