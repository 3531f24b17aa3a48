"""``make mutation`` mutates route handlers: in a target's working copy their decorators
are applied after the function (``decorators_after``), which must leave the module as it
was once imported."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar

from gateway.context import providers
from tests.mutation.run import decorators_after

SOURCE = '''
from __future__ import annotations

calls: list[str] = []


def tag(label: str):
    def wrap(fn):
        calls.append(f"{label}({fn.__name__})")
        fn.tags = [*getattr(fn, "tags", []), label]
        return fn
    return wrap


@tag("outer")
@tag("inner")
def handler(x: int) -> int:
    """Twice x."""
    return 2 * x


class Kept:
    @staticmethod
    def method() -> int:
        return 1


def plain() -> int:
    return 3
'''


def _load(name: str, source: str) -> types.ModuleType:
    module = types.ModuleType(name)
    sys.modules[name] = module  # litestar reads a handler's annotations through it
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


@pytest.fixture
def load() -> Iterator[Callable[[str, str], types.ModuleType]]:
    loaded: list[str] = []

    def load(name: str, source: str) -> types.ModuleType:
        loaded.append(name)
        return _load(name, source)

    yield load
    for name in loaded:
        sys.modules.pop(name, None)


def test_decorators_are_applied_after_the_function_in_the_same_order(
    load: Callable[[str, str], types.ModuleType],
) -> None:
    before = load("decorated_before", SOURCE)
    after = load("decorated_after", decorators_after(SOURCE))
    assert "@" not in decorators_after(SOURCE).split("class Kept")[0]
    assert after.calls == before.calls == ["inner(handler)", "outer(handler)"]
    assert after.handler.tags == before.handler.tags == ["inner", "outer"]
    assert after.handler(4) == before.handler(4) == 8
    assert after.handler.__doc__ == "Twice x."
    # methods keep their decorators (mutmut handles staticmethod and classmethod itself)
    assert "@staticmethod" in decorators_after(SOURCE)
    assert after.Kept.method() == 1
    assert after.plain() == 3


def _schema(router: Any) -> dict[str, Any]:
    app = Litestar(route_handlers=[router], dependencies=providers())
    schema: dict[str, Any] = app.openapi_schema.to_schema()
    return schema


@pytest.mark.parametrize(
    ("module_name", "router"),
    [
        ("gateway.spaces", "spaces_router"),
        ("gateway.invitations", "invitations_router"),
        ("gateway.sync_http", "sync_router"),
        ("gateway.reads", "spaces_reads_router"),
        ("gateway.auth", "auth_router"),
        ("gateway.devices", "devices_router"),
    ],
)
def test_a_route_module_serves_the_same_routes(
    load: Callable[[str, str], types.ModuleType], module_name: str, router: str
) -> None:
    """The whole OpenAPI description (paths, methods, parameters, bodies, answers) of the
    rewritten module's router is the original's."""
    original = importlib.import_module(module_name)
    assert original.__file__ is not None
    source = Path(original.__file__).read_text()
    rewritten = decorators_after(source)
    assert rewritten != source  # it has handlers to rewrite
    copy = load(f"{module_name}_undecorated", rewritten)
    assert _schema(getattr(copy, router)) == _schema(getattr(original, router))
