"""Write the shared test vectors: `python -m tests.vectors.generate` (or `--check`).

Each vector lists its ops shuffled with a fixed seed, the `[applied, conflicted]` result
of applying them in that order, and the facts of every entity (`tests.vectors.expect`).
Before writing, the generator proves the facts do not depend on the order: it refolds
every permutation of small vectors, and many seeded ones of the others, and a doubled
delivery. Output: `js/vectors/cases.json` (hand-written, `tests.vectors.cases`) and
`js/vectors/random.json` (seeded histories, `tests.vectors.randomized`), one vector per
line so a diff shows which vectors changed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
from pathlib import Path
from typing import Any

import msgspec

from crdt import CLIENT_KINDS, Op, PredTarget, validate
from tests.vectors.cases import CASES
from tests.vectors.expect import VECTOR_FORMAT, entities_of, op_to_json, results_of
from tests.vectors.history import SCHEMA
from tests.vectors.randomized import random_history

__all__ = ["OUT_DIR", "RANDOM_COUNT", "build_files", "check_order_free", "main", "render"]

OUT_DIR = Path(__file__).resolve().parents[2] / "js" / "vectors"
RANDOM_COUNT = 250
_EXHAUSTIVE_UP_TO = 7  # ops; 7! = 5040 refolds
_SAMPLED_PERMUTATIONS = 200


def _check_case_valid(ops: list[Op]) -> None:
    """A hand-written case may hold only ops a server would store (server kinds aside)."""
    earlier: dict[str, Op] = {}
    for op in ops:
        if op.op_id in earlier:
            continue
        if op.kind in CLIENT_KINDS:
            targets = {
                p: PredTarget(
                    op_id=t.op_id,
                    entity_type=t.entity_type,
                    entity_id=t.entity_id,
                    kind=t.kind,
                    field=t.field,
                    value=t.value,
                    lamport=t.lamport,
                )
                for p in op.pred
                if (t := earlier.get(p)) is not None
            }
            top = max((o.lamport for o in earlier.values()), default=0)
            violation = validate(op, SCHEMA, targets, top)
            if violation is not None:
                raise AssertionError(f"invalid op in a case ({violation.message}): {op}")
        earlier[op.op_id] = op


def check_order_free(ops: list[Op], expected: list[dict[str, Any]], seed: int) -> None:
    """Raise unless every delivery order (and a doubled delivery) gives `expected`."""
    if len(ops) <= _EXHAUSTIVE_UP_TO:
        orders: Any = itertools.permutations(ops)
    else:
        rng = random.Random(seed)
        orders = [rng.sample(ops, len(ops)) for _ in range(_SAMPLED_PERMUTATIONS)]
        orders.append(list(reversed(ops)))
    for order in orders:
        if entities_of(list(order), SCHEMA) != expected:
            raise AssertionError(f"order-dependent result for {[o.op_id for o in order]}")
    if entities_of(ops + ops, SCHEMA) != expected:
        raise AssertionError("doubled delivery changed the result")


def _vector(
    name: str, description: str, causal: list[Op], seed: int, check_orders: bool
) -> dict[str, Any]:
    listed = random.Random(seed).sample(causal, len(causal))
    expected = entities_of(listed, SCHEMA)
    if check_orders:
        check_order_free(listed, expected, seed)
    return {
        "name": name,
        "description": description,
        "seed": seed,
        "ops": [op_to_json(op) for op in listed],
        "results": results_of(listed),
        "entities": expected,
    }


def render(title: str, vectors: list[dict[str, Any]]) -> str:
    """The file's text: a header, then one vector per line."""
    schema = msgspec.to_builtins(SCHEMA)
    head = {
        "format": VECTOR_FORMAT,
        "title": title,
        "generator": "python -m tests.vectors.generate",
        "schema": schema,
    }
    lines = [json.dumps(v, ensure_ascii=False, separators=(",", ":")) for v in vectors]
    head_text = json.dumps(head, ensure_ascii=False, separators=(",", ":"))[:-1]
    return head_text + ',"vectors":[\n' + ",\n".join(lines) + "\n]}\n"


def build_files(*, check_orders: bool = True) -> dict[str, str]:
    """File name -> text of every vector file; `check_orders` refolds permutations first
    (the slow part: seconds, not needed to compare with the committed files)."""
    cases = []
    for n, make in enumerate(CASES):
        history = make()
        _check_case_valid(history.ops)
        cases.append(
            _vector(history.name, history.description, history.ops, 1000 + n, check_orders)
        )
    randoms = [
        _vector(f"random-{seed}", "seeded random history", random_history(seed), seed, check_orders)
        for seed in range(1, RANDOM_COUNT + 1)
    ]
    return {
        "cases.json": render("hand-written cases of docs/protocol.md section 3", cases),
        "random.json": render(f"{RANDOM_COUNT} seeded random histories", randoms),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed files are stale"
    )
    args = parser.parse_args(argv)
    stale = []
    for name, text in build_files(check_orders=not args.check).items():
        path = OUT_DIR / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path} ({len(text.encode()):,} bytes)")
    if stale:
        print(f"stale: {', '.join(stale)}: run python -m tests.vectors.generate", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
