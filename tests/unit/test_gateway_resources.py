"""How handlers get their resources (gateway/context.py): each route handler and each
dependency declares, by name and type, the resources it uses; the providers are the
only readers of the app's state; nothing the lifespan keeps for handlers goes unused;
and no resource shows in the OpenAPI document."""

from __future__ import annotations

import dataclasses
from typing import Any, get_type_hints

import pytest
from litestar import Litestar
from litestar.datastructures import State
from litestar.routes import HTTPRoute
from litestar.typing import FieldDefinition
from litestar.utils.signature import ParsedSignature

import gateway.context
from core.settings import Settings
from gateway.app import create_app
from gateway.context import Resources
from gateway.options import GatewayOptions

#: The dependencies that are not resources: the caller, the operator check, the
#: sandbox's folds.
OTHER_DEPENDENCIES = {"principal", "admin", "folds"}
#: The providers that read the app's state (one per resource, and the sandbox's folds).
STATE_READERS = {f"provide_{f.name}" for f in dataclasses.fields(Resources)} | {"_provide_folds"}


@pytest.fixture(scope="module")
def app() -> Litestar:
    return create_app(Settings(secret_key="x" * 32, sandbox=True), options=GatewayOptions())


def _signatures(app: Litestar) -> dict[str, dict[str, FieldDefinition]]:
    """The parameters of every route handler (``"<path> <name>"``) and of every
    dependency provider (by its name) of the app."""
    found: dict[str, dict[str, FieldDefinition]] = {}
    for route in app.routes:
        handlers: list[Any] = (
            route.route_handlers if isinstance(route, HTTPRoute) else [route.route_handler]
        )
        for handler in handlers:
            found[f"{route.path} {handler.handler_name}"] = dict(
                handler.parsed_fn_signature.parameters
            )
            for provide in handler.resolve_dependencies().values():
                fn = provide.dependency
                found[fn.__name__] = dict(ParsedSignature.from_fn(fn, {}).parameters)
    return found


def test_a_resource_is_declared_with_the_type_the_lifespan_built(app: Litestar) -> None:
    """Resources are not checked per request (``Resource`` skips validation), so a
    parameter typed as something else than what the lifespan built would go unnoticed
    until it is used: it must not exist."""
    built = get_type_hints(Resources, vars(gateway.context))
    declared = 0
    for where, parameters in _signatures(app).items():
        for name, parameter in parameters.items():
            if name in built:
                declared += 1
                assert parameter.annotation is built[name], (where, name)
    assert declared > len(built)


def test_every_resource_is_used_and_every_dependency_is_known(app: Litestar) -> None:
    """What the lifespan keeps for handlers, some handler or dependency declares."""
    used = {
        name
        for parameters in _signatures(app).values()
        for name, parameter in parameters.items()
        if parameter.is_di_field
    }
    resources = {f.name for f in dataclasses.fields(Resources)}
    assert resources <= used, resources - used
    assert used <= resources | OTHER_DEPENDENCIES, used - resources - OTHER_DEPENDENCIES


def test_only_the_providers_read_the_app_state(app: Litestar) -> None:
    readers = {
        where
        for where, parameters in _signatures(app).items()
        for name, parameter in parameters.items()
        if name == "state" or parameter.annotation is State
    }
    assert readers == STATE_READERS


def test_no_resource_is_a_parameter_of_the_document(app: Litestar) -> None:
    document = app.openapi_schema.to_schema()
    names = {
        parameter["name"]
        for item in document["paths"].values()
        for operation in item.values()
        for parameter in operation.get("parameters", [])
    }
    resources = {f.name for f in dataclasses.fields(Resources)}
    assert names, "the document names parameters"
    assert not names & (resources | OTHER_DEPENDENCIES | {"state"})
