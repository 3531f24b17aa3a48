"""What ``make mutation`` mutates, and the tests each target is mutated against.

A target is one mutmut run: the modules it mutates and the fast test subset that must
kill their mutants (mutmut runs, per mutant, only the tests of that subset that call the
mutated function). Tests that start server processes are left out on purpose: code run
in another process is invisible to mutmut's per-function test mapping, except the
end-to-end tests of the gateway's routes: a target with ``gateway_in_process`` runs them
against gateways served in the test process (``CONCORD_TEST_GATEWAY=in-process``,
tests/e2e/conftest.py).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Every top-level package of the project: a mutation run copies them all, mutated or not.
PACKAGES = (
    "core",
    "crdt",
    "eventstore",
    "gateway",
    "projector",
    "scheduler",
    "client",
    "lab",
    "concord",
    "bench",
)


@dataclass(frozen=True)
class Target:
    """One mutmut run: ``modules`` (paths of .py files) mutated against ``tests``."""

    name: str
    modules: tuple[str, ...]
    tests: tuple[str, ...]
    #: The score each module must reach (killed / mutants with a verdict), or with
    #: ``whole`` the target's modules together (issue 16: "≥ 90% on crdt/").
    floor: float
    whole: bool = False
    #: The tests need CONCORD_TEST_DATABASE_URL / CONCORD_TEST_NATS_URL.
    services: bool = False
    #: The tests' gateways are served in the test process, not started as processes.
    gateway_in_process: bool = False
    #: One mutant at a time whatever ``--jobs`` says: the tests act on the whole of the
    #: run's shared database (the relay's claim, or drain, every space's outbox rows), so
    #: two mutants' tests at once would fail each other and count as kills.
    serial: bool = False
    #: Functions (mutmut's names, ``gateway.params.x_seq_query``) that run only while
    #: their module is imported. mutmut runs a mutant against the tests it saw call the
    #: function, and these are called once, while the test session imports, by no test:
    #: their verdicts say which test happened to run, not whether the tests notice. They
    #: are counted apart, not in the score; tests named beside the target check what
    #: they declare (checked by hand, docs/development.md).
    at_import: tuple[str, ...] = ()
    #: Functions that run only in processes the tests start (a rebuild's worker
    #: processes): mutmut sees no test call them, so their mutants are "no tests" whatever
    #: the tests check. Counted apart, like ``at_import``; the tests named beside the
    #: target check their work through the processes' results.
    in_other_process: tuple[str, ...] = ()

    @property
    def packages(self) -> tuple[str, ...]:
        """The packages holding ``modules`` (mutmut's ``source_paths``)."""
        return tuple(dict.fromkeys(m.split("/", 1)[0] for m in self.modules))


TARGETS = (
    Target(
        name="crdt",
        modules=(
            "crdt/__init__.py",
            "crdt/codec.py",
            "crdt/fields.py",
            "crdt/ops.py",
            "crdt/order.py",
            "crdt/schema.py",
            "crdt/state.py",
            "crdt/validate.py",
            "crdt/views.py",
        ),
        tests=(
            "tests/unit/test_crdt_codec.py",
            "tests/unit/test_crdt_order.py",
            "tests/unit/test_crdt_regressions.py",
            "tests/unit/test_crdt_schema.py",
            "tests/unit/test_crdt_state.py",
            "tests/unit/test_crdt_validate.py",
            "tests/unit/test_crdt_edges.py",
            "tests/property/test_crdt_algebra.py",
            "tests/property/test_crdt_convergence.py",
            "tests/property/test_crdt_shape_fast_path.py",
            "tests/property/test_crdt_validity.py",
        ),
        floor=0.90,
        whole=True,
    ),
    Target(
        name="ws",
        modules=("gateway/ws/subscription.py",),
        tests=(
            "tests/unit/test_ws_subscription.py",
            "tests/unit/test_ws_subscription_loop.py",
        ),
        floor=0.80,
    ),
    Target(
        name="feed",
        modules=("gateway/ws/feed.py",),
        tests=(
            "tests/integration/test_gateway_feed.py",
            "tests/integration/test_gateway_feed_delivery.py",
            "tests/unit/test_ws_subscription_loop.py",
            "tests/unit/test_ws_subscription.py",
        ),
        floor=0.80,
        services=True,
    ),
    Target(
        name="params",
        modules=("gateway/params.py",),
        tests=(
            "tests/unit/test_gateway_params.py",
            "tests/unit/test_gateway_errors.py",
            "tests/e2e/test_input_poison.py",
            "tests/e2e/test_http_bad_bodies.py",
            "tests/e2e/test_http_spaces.py",
            "tests/e2e/test_http_auth_edges.py",
        ),
        floor=0.80,
        services=True,
        gateway_in_process=True,
        # the routes' parameter declarations: test_http_bad_bodies.py checks each bound
        # as the document states it and as a request meets it
        at_import=tuple(
            f"gateway.params.x_{name}"
            for name in (
                "_integer",
                "uuid_path",
                "uuid_query",
                "seq_query",
                "limit_query",
                "after_query",
            )
        ),
    ),
    Target(
        name="announcer",
        modules=("gateway/committed.py",),
        tests=(
            "tests/unit/test_announcer.py",
            "tests/integration/test_gateway_feed.py",
            "tests/integration/test_gateway_registry.py",
            "tests/e2e/test_ws_membership.py",
            "tests/e2e/test_ws_invitations.py",
            "tests/e2e/test_ws_removal_stalled.py",
        ),
        floor=0.80,
        services=True,
        gateway_in_process=True,
    ),
    Target(
        name="registry",
        modules=("gateway/ws/registry.py",),
        tests=("tests/integration/test_gateway_registry.py",),
        floor=0.80,
        services=True,
    ),
    Target(
        name="pushes",
        modules=("gateway/pushes.py", "gateway/ws/push.py"),
        tests=("tests/integration/test_gateway_ws_push.py", "tests/unit/test_pushes.py"),
        floor=0.80,
        services=True,
    ),
    Target(
        name="connection",
        modules=("gateway/ws/connection.py",),
        tests=("tests/integration/test_gateway_ws_connection.py",),
        floor=0.80,
        services=True,
    ),
    Target(
        name="reads",
        modules=("eventstore/reads.py",),
        tests=(
            "tests/integration/test_eventstore_reads.py",
            "tests/integration/test_eventstore_replay.py",
            "tests/integration/test_eventstore_integrity.py",
            "tests/integration/test_store_contract.py",
            "tests/integration/test_projector_relay_batches.py",
            "tests/integration/test_projector_batch.py",
        ),
        floor=0.80,
        services=True,
        # test_projector_relay_batches.py relays every space of the shared database
        serial=True,
    ),
    Target(
        name="readmodel",
        modules=("projector/readmodel.py", "projector/batch.py"),
        tests=(
            "tests/integration/test_readmodel_edges.py",
            "tests/integration/test_readmodel_lag.py",
            "tests/integration/test_readmodel_order.py",
            "tests/integration/test_projector_readmodel.py",
            "tests/integration/test_projector_batch.py",
            "tests/integration/test_projector_quarantine.py",
            "tests/e2e/test_http_reads_paths.py",
        ),
        floor=0.80,
        services=True,
        # test_http_reads_paths.py reads through the gateway's entity routes
        gateway_in_process=True,
        # test_projector_readmodel.py and test_projector_quarantine.py run projector
        # services on the shared database, where the e2e tests expect none
        serial=True,
    ),
    Target(
        name="projector",
        modules=("projector/apply.py",),
        tests=(
            "tests/integration/test_projector_readmodel.py",
            "tests/integration/test_projector_quarantine.py",
            "tests/integration/test_projector_checkpoint_atomic.py",
            "tests/integration/test_projector_apply_edges.py",
        ),
        floor=0.80,
        services=True,
        # projector services on the shared database (as for ``readmodel``)
        serial=True,
    ),
    Target(
        name="rebuild",
        modules=("projector/rebuild.py", "projector/bulk.py", "projector/verify.py"),
        tests=(
            "tests/unit/test_projector_plan.py",
            "tests/integration/test_projector_rebuild.py",
            "tests/integration/test_projector_quarantine.py",
        ),
        floor=0.80,
        services=True,
        # test_projector_rebuild.py folds in 2 and 3 worker processes and checks the result
        in_other_process=("projector.bulk.x__worker",),
    ),
    Target(
        name="relay",
        modules=("projector/relay.py",),
        tests=(
            "tests/unit/test_relay_runs.py",
            "tests/integration/test_projector_relay.py",
            "tests/integration/test_projector_relay_batches.py",
            "tests/integration/test_projector_relay_edges.py",
        ),
        floor=0.80,
        services=True,
        serial=True,
    ),
    Target(
        name="eventstore",
        modules=("eventstore/append.py", "eventstore/group.py", "eventstore/push.py"),
        tests=(
            "tests/unit/test_eventstore_group.py",
            "tests/unit/test_eventstore_ops.py",
            "tests/integration/test_eventstore_basics.py",
            "tests/integration/test_eventstore_validation.py",
            "tests/integration/test_eventstore_concurrency.py",
            "tests/integration/test_eventstore_faults.py",
            "tests/integration/test_eventstore_heads.py",
            "tests/integration/test_store_contract.py",
            "tests/property/test_push_fast_path.py",
        ),
        floor=0.80,
        services=True,
    ),
    Target(
        name="writer",
        modules=("eventstore/writer.py", "eventstore/heads.py", "eventstore/server_events.py"),
        tests=(
            "tests/unit/test_keys.py",
            "tests/unit/test_eventstore_canonical.py",
            "tests/integration/test_eventstore_basics.py",
            "tests/integration/test_eventstore_heads.py",
            "tests/integration/test_eventstore_members.py",
            "tests/integration/test_eventstore_written_as_read.py",
            "tests/integration/test_eventstore_integrity.py",
            "tests/integration/test_eventstore_concurrency.py",
            "tests/integration/test_server_op_id_upgrade.py",
            "tests/integration/test_store_contract.py",
            "tests/integration/test_scheduler_firing.py",
        ),
        floor=0.80,
        services=True,
    ),
    Target(
        name="wire",
        modules=("core/wire.py",),
        tests=(
            "tests/unit/test_wire.py",
            "tests/unit/test_gateway_params.py",
            "tests/unit/test_scheduler_parts.py",
        ),
        floor=0.80,
    ),
    Target(
        name="boundary",
        modules=("core/ids.py", "core/canonical.py", "core/ops.py"),
        tests=(
            "tests/unit/test_eventstore_canonical.py",
            "tests/unit/test_eventstore_ops.py",
            "tests/unit/test_gateway_params.py",
            "tests/property/test_push_fast_path.py",
            "tests/integration/test_eventstore_validation.py",
        ),
        # together: canonical.py chooses between two encoders that write the same bytes,
        # so most of its mutants only send a value down the other one
        floor=0.80,
        whole=True,
        services=True,
    ),
    Target(
        name="integrity",
        modules=("eventstore/chain.py", "eventstore/audit.py"),
        tests=(
            "tests/unit/test_eventstore_canonical.py",
            "tests/integration/test_eventstore_integrity.py",
            "tests/integration/test_eventstore_audit.py",
        ),
        floor=0.80,
        services=True,
    ),
    Target(
        name="membership",
        modules=("eventstore/members.py", "eventstore/invitations.py", "eventstore/roles.py"),
        tests=(
            "tests/integration/test_eventstore_invitations.py",
            "tests/integration/test_eventstore_members.py",
            "tests/integration/test_eventstore_roles.py",
            "tests/integration/test_eventstore_basics.py",
            "tests/integration/test_eventstore_validation.py",
            "tests/integration/test_eventstore_two_stores.py",
            "tests/integration/test_store_contract.py",
        ),
        floor=0.80,
        services=True,
    ),
    Target(
        name="sessions",
        modules=("gateway/sessions.py", "gateway/accounts.py"),
        tests=("tests/integration/test_gateway_sessions.py",),
        # together: most of accounts.py is SQL, whose letter case mutmut changes to no
        # effect (docs/development.md, Survivors)
        floor=0.80,
        whole=True,
        services=True,
    ),
    Target(
        name="revocation",
        modules=("gateway/revocation.py",),
        tests=(
            "tests/integration/test_gateway_revocation.py",
            "tests/integration/test_gateway_sessions.py",
        ),
        # 75%: of its 110 mutants, 10 change only the letter case of SQL and 7 sit in a
        # branch (a broadcast that raises) that NatsBus, which counts and drops instead,
        # never takes (docs/development.md, Survivors)
        floor=0.75,
        services=True,
    ),
    Target(
        name="tokens",
        modules=("gateway/tokens.py",),
        tests=("tests/unit/test_gateway_tokens.py", "tests/unit/test_keys.py"),
        floor=0.80,
    ),
    Target(
        name="spaces",
        modules=("gateway/spaces.py", "gateway/invitations.py"),
        tests=(
            "tests/e2e/test_http_spaces.py",
            "tests/e2e/test_invitations.py",
            "tests/e2e/test_http_isolation.py",
            "tests/e2e/test_ws_invitations.py",
            "tests/e2e/test_ws_membership.py",
            "tests/e2e/test_ws_removal_stalled.py",
        ),
        floor=0.80,
        services=True,
        gateway_in_process=True,
    ),
    Target(
        name="sync",
        modules=("gateway/sync_http.py", "gateway/ws/route.py", "gateway/reads.py"),
        tests=(
            "tests/unit/test_sync_http.py",
            "tests/e2e/test_http_push.py",
            "tests/e2e/test_http_reads.py",
            "tests/e2e/test_http_reads_paths.py",
            "tests/e2e/test_http_bad_bodies.py",
            "tests/e2e/test_http_isolation.py",
            "tests/e2e/test_input_poison.py",
            "tests/e2e/test_ws_sync.py",
            "tests/e2e/test_ws_input_limits.py",
            "tests/e2e/test_ws_faults.py",
            "tests/e2e/test_ws_expiry.py",
            "tests/e2e/test_ws_internal_error.py",
        ),
        # together: 13 of ws/route.py's 64 mutants change the close code or reason of a
        # socket closed before it is accepted, which ASGI answers with HTTP 403 instead
        # (docs/development.md, Survivors)
        floor=0.80,
        whole=True,
        services=True,
        gateway_in_process=True,
    ),
    Target(
        name="http_auth",
        modules=("gateway/auth.py", "gateway/devices.py", "gateway/limits.py"),
        tests=(
            "tests/unit/test_gateway_limits.py",
            "tests/e2e/test_http_auth_edges.py",
            "tests/e2e/test_http_auth.py",
            "tests/e2e/test_http_auth_hardening.py",
            "tests/e2e/test_http_refresh_grace.py",
            "tests/e2e/test_http_isolation.py",
            "tests/e2e/test_http_push.py",
        ),
        floor=0.80,
        services=True,
        gateway_in_process=True,
    ),
    Target(
        name="scheduler",
        modules=("scheduler/engine.py", "scheduler/firing.py"),
        tests=(
            "tests/integration/test_scheduler_engine.py",
            "tests/integration/test_scheduler_batch.py",
            "tests/integration/test_scheduler_firing.py",
        ),
        floor=0.80,
        services=True,
    ),
    Target(
        name="reminders",
        modules=("scheduler/store.py", "scheduler/queries.py", "scheduler/retention.py"),
        tests=(
            "tests/unit/test_scheduler_parts.py",
            "tests/integration/test_scheduler_engine.py",
            "tests/integration/test_scheduler_batch.py",
            "tests/integration/test_scheduler_firing.py",
            "tests/integration/test_scheduler_queries.py",
            "tests/integration/test_scheduler_store.py",
            "tests/integration/test_scheduler_service.py",
            "tests/integration/test_scheduler_webhook.py",
        ),
        floor=0.80,
        services=True,
    ),
    Target(
        name="delivery",
        modules=("scheduler/delivery.py", "scheduler/breaker.py", "scheduler/webhook.py"),
        tests=(
            "tests/unit/test_scheduler_parts.py",
            "tests/unit/test_keys.py",
            "tests/integration/test_scheduler_webhook.py",
            "tests/integration/test_scheduler_service.py",
        ),
        floor=0.80,
        services=True,
    ),
)

BY_NAME = {t.name: t for t in TARGETS}
