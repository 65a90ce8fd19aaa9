"""llama-index-workflows' ``workflows.retry_policy`` path, which is also the ``retry_policy`` function.

``from durableflow.retry_policy import stop_after_attempt`` works as the peer's import does, and
``durableflow.retry_policy(stop=..., wait=...)`` still builds a policy: a submodule becomes its package's
attribute once imported, so this module is callable as the function of the same name.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from ._retry import *  # noqa: F403 - the policies, and the function this module is called as
from ._retry import RetryPolicy, retry_policy
from ._retry import __all__ as _policies
from ._retry_strategies import *  # noqa: F403 - every strategy the peer's module offers
from ._retry_strategies import __all__ as _strategies

__all__ = [*_policies, *(name for name in _strategies if name != "is_native")]

__wrapped__ = retry_policy  # inspect.signature(durableflow.retry_policy) shows the function's


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> RetryPolicy:
        return retry_policy(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
