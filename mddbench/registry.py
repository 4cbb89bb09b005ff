"""Name -> object registries: methods, datasets, networks, budgets, renderers (timm's registry is the model).

Built-ins register with a decorator when their module is imported. Third-party methods arrive
through the ``mddbench.methods`` entry-point group or as a single ``.py`` file (``--plugin``),
and register with the same decorator a built-in uses.
"""
from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import importlib.util
import logging
import pkgutil
import sys
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from mddbench.errors import MddError, UnknownNameError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of objects, filled lazily from the built-in package and plugins."""

    instances: "weakref.WeakSet[Registry]" = weakref.WeakSet()  # a plugin may register into any of them

    def __init__(self, kind: str, builtin_package: str | None = None, entry_point_group: str | None = None,
                 expects: type | None = None):
        Registry.instances.add(self)
        self.kind = kind
        self.expects = expects  # what every entry must be (a class: a subclass or an instance of it)
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._builtin_package = builtin_package
        self._entry_point_group = entry_point_group
        self._loaded = False
        self._files: set[Path] = set()  # plugin files already imported
        self.failures: dict[str, str] = {}  # plugin name -> why it failed to load

    def register(self, name: str, obj: T | None = None, *, aliases: tuple[str, ...] = (), replace: bool = False):
        """Register ``obj`` under ``name``; used bare (``register(name, obj)``) or as a decorator."""

        def add(o: T) -> T:
            key = name.strip().lower()
            if self.expects is not None and not (isinstance(o, type) and issubclass(o, self.expects)
                                                 or isinstance(o, self.expects)):
                raise MddError(f"{self.kind} {key!r} is {_origin(o)}, not a {self.expects.__name__}: register a "
                               f"subclass of mddbench.{self.expects.__name__}")
            if key in self._items and self._items[key] is not o and self._items[key] != o and not replace:
                raise MddError(f"{self.kind} {key!r} is already registered by {_origin(self._items[key])}")
            self._items[key] = o
            for alias in aliases:
                self._aliases[alias.lower()] = key
            return o

        return add(obj) if obj is not None else add

    def get(self, name: str, *default: T) -> T:
        """The entry ``name`` stands for; with a ``default``, that when there is none (as ``dict.get``)."""
        if default and name not in self:
            return default[0]
        return self._items[self.canonical(name)]

    def canonical(self, name: str) -> str:
        """The registered name ``name`` stands for (any case, or an alias): what records and job ids use."""
        self.load()
        key = str(name).strip().lower()
        key = self._aliases.get(key, key)
        if key not in self._items:
            known = ", ".join(self.names()) or "(none)"
            hint = ""
            if self.failures:
                hint = "\nplugins that failed to load: " + "; ".join(f"{k}: {v}" for k, v in self.failures.items())
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}{hint}")
        return key

    def __contains__(self, name: str) -> bool:
        self.load()
        key = name.lower()
        return key in self._items or key in self._aliases

    def names(self, pattern: str = "*") -> list[str]:
        self.load()
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern.lower()))

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]

    # a read-write mapping in registration order (budgets list themselves in the order they were defined)
    def __iter__(self):
        self.load()
        return iter(list(self._items))

    def __len__(self) -> int:
        self.load()
        return len(self._items)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __setitem__(self, name: str, obj: T) -> None:
        self.register(name, obj, replace=True)

    def __delitem__(self, name: str) -> None:
        del self._items[self.canonical(name)]

    def values(self) -> list[T]:
        return [self._items[n] for n in self]

    # ----------------------------------------------------------------- loading
    def load(self) -> None:
        """Import the built-in package and installed entry points once."""
        if self._loaded:
            return
        self._loaded = True
        if self._builtin_package:
            pkg = importlib.import_module(self._builtin_package)
            for info in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
                if not info.name.startswith("_"):
                    self._guarded(f"{self._builtin_package}.{info.name}", importlib.import_module,
                                  f"{self._builtin_package}.{info.name}")
        if self._entry_point_group:
            for ep in importlib.metadata.entry_points(group=self._entry_point_group):
                self._guarded(ep.name, self._load_entry_point, ep)

    def _load_entry_point(self, ep: importlib.metadata.EntryPoint) -> None:
        with all_or_nothing():
            self._register_entry_point(ep)

    def _register_entry_point(self, ep: importlib.metadata.EntryPoint) -> None:
        obj = ep.load()
        # An entry point may name a module (its decorators register) or an object to register.
        if not isinstance(obj, type(sys)) and ep.name.lower() not in self._items:
            if isinstance(obj, type) and getattr(obj, "name", None) == "?":
                obj.name = ep.name.lower()  # what register_method does for a decorated class
            self.register(ep.name, obj)

    def load_file(self, path: str | Path) -> None:
        """Import a single plugin file; its decorators register what it defines."""
        path = Path(path)
        if not path.is_file():
            raise MddError(f"plugin file {str(path)!r} does not exist")
        self.load()
        if path.resolve() in self._files:
            return  # importing it again would register its classes a second time
        mod_name = f"mddbench_plugin_{path.stem}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None:
            raise MddError(f"plugin file {str(path)!r} is not a Python file (.py)")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            with all_or_nothing():
                spec.loader.exec_module(module)
        except Exception as exc:  # a broken plugin is reported by name, and the others stay usable
            del sys.modules[mod_name]
            self.failures[str(path)] = f"{type(exc).__name__}: {exc}"
            raise MddError(f"plugin {str(path)!r} failed to import: {type(exc).__name__}: {exc}") from exc
        self._files.add(path.resolve())

    def _guarded(self, name: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self.failures[name] = f"{type(exc).__name__}: {exc}"
            log.warning("mddbench: %s plugin %r failed to load (%s: %s); the others are unaffected",
                        self.kind, name, type(exc).__name__, exc)


@contextmanager
def all_or_nothing():
    """Take back everything registered inside the block if it raises: a plugin that registers a method and
    then fails must not leave a half-imported method behind. Built-ins load first, so a rollback cannot
    drop them."""
    registries = list(Registry.instances)
    for registry in registries:
        registry.load()
    saved = [(r, dict(r._items), dict(r._aliases)) for r in registries]
    try:
        yield
    except BaseException:
        for registry, items, aliases in saved:
            registry._items, registry._aliases = items, aliases
        raise


def _origin(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


METHODS: Registry = Registry("method", "mddbench.methods", "mddbench.methods")
DATASETS: Registry = Registry("dataset", "mddbench.datasets", "mddbench.datasets")
NETWORKS: Registry = Registry("network", "mddbench.nn.networks")


def register_method(name: str, **kw):
    """Class decorator: ``@register_method("mymethod")`` on a :class:`mddbench.Method` subclass."""

    def deco(cls):
        METHODS.register(name, cls, **kw)  # refuses what is not a Method before anything is changed
        cls.name = name
        return cls

    return deco


def register_dataset(name: str, spec=None, **kw):
    return DATASETS.register(name, spec, **kw)


def register_network(name: str, **kw):
    return NETWORKS.register(name, **kw)


def load_plugins(paths: list[str] | None) -> None:
    for p in paths or []:
        METHODS.load_file(p)
