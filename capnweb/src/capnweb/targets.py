"""``RpcTarget`` and what a peer may reach on a local value (the reference's rules).

On an :class:`RpcTarget` only what its class defines is reachable: public methods (sync or
async) and properties. Instance attributes raise ``TypeError`` (never silently ``undefined``),
names starting with ``_`` and everything ``object`` defines resolve to ``undefined``. On a dict
only its own keys; on a list only non-negative integer indexes; on anything else nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .values import UNDEFINED, RpcError


class RpcTarget:
    """Subclass to expose an object by reference: its public methods and properties are what a
    peer can call and read. Define ``__rpc_dispose__(self)`` to learn when the peer lets it go."""

    __slots__ = ("__weakref__",)


_OBJECT_NAMES = frozenset(dir(object))


def _member(target: RpcTarget, name: object) -> Any:
    if not isinstance(name, str) or name.startswith("_") or name in _OBJECT_NAMES:
        return UNDEFINED
    cls_attr = inspect.getattr_static(type(target), name, UNDEFINED)
    if cls_attr is UNDEFINED:
        instance_dict = getattr(target, "__dict__", None)
        if instance_dict is not None and name in instance_dict:
            raise RpcError(
                "TypeError",
                f"Attempted to access property '{name}', which is an instance property of the RpcTarget. "
                "Only methods and properties of its class can be reached over RPC.",
            )
        return UNDEFINED
    return getattr(target, name)  # a bound method, or a property's value


def get_property(value: Any, name: object) -> Any:
    """``value[name]`` by the reference's rules (``UNDEFINED`` when there is nothing there)."""
    if isinstance(value, RpcTarget):
        return _member(value, name)
    if isinstance(value, dict):
        if isinstance(name, str):
            return value.get(name, UNDEFINED)
        return UNDEFINED
    if isinstance(value, (list, tuple)):
        if isinstance(name, int) and not isinstance(name, bool) and 0 <= name < len(value):
            return value[name]
        return UNDEFINED
    return UNDEFINED


def callable_at(parent: Any, name: object) -> Callable[..., Any]:
    """The function a call ``parent.name(...)`` runs, or ``TypeError`` as the reference words it."""
    member = get_property(parent, name)
    if not callable(member) or isinstance(member, (RpcTarget, type)):
        raise RpcError("TypeError", f"'{name}' is not a function.")
    return member  # type: ignore[no-any-return]
