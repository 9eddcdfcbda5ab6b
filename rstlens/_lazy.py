"""Package attributes imported on first use (PEP 562): `import rstlens` and its subpackages
stay cheap, because the command line must not pay for pandas, pyarrow or numba."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, names: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: `names` maps each attribute to the module that
    defines it (absolute, or relative to `package`); a resolved name is stored in the
    package's `namespace`, so later lookups skip the hook."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    return __getattr__
