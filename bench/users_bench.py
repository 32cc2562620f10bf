"""Cost of the users lookup (prints figures; not a test): the admin path against tenants files, in one run.

    .venv/bin/python bench/users_bench.py [--tasks 10000] [--seconds 3] [--rounds 4] [--connections 64]

One SQLite database of --tasks finished tasks is filled while no service runs (as service_bench and
store_bench fill it), copied once per case and given its owners (the `tenant` column); the three
services run side by side, and each round measures every case in turn (every other round in reverse
order), so the machine's other load falls on all of them alike:

reference            one simple token (VIDEO_API_TOKENS), an admin: the path from before users existed
1 user               a tenants file of one user (role user) owning every task; requests with its token
100 users, 1 token   a tenants file of 100 users (role user) owning the tasks in turn; one user's token
100 users, 8 tokens  the same service, requests spread over 8 users' tokens (--spread), each user
                     asking for its own tasks

Targets: GET /api/status/<id> (ids the token's user may see) and GET /api/tasks?limit=50 (for a user
the page is filtered in SQL by the (tenant, seq) index and its counts are read from the per-user
counters the triggers keep, so neither grows with the user's own tasks). Each case's figure is
its best round; the ratio is to the reference's best round, with the range of the rounds' ratios.

The load generator (service_bench.load, aiohttp) runs in this process on the same 2 cores as the
services, so the figures are floors and a cost in the service shows diluted in the ratios.
"""

import argparse
import asyncio
import contextlib
import json
import shutil
import sqlite3
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from service_bench import Service, load  # noqa: E402
from store_bench import fill_sqlite  # noqa: E402

from app.tenants.tenants_file import Role, Tenant, new_token, token_digest, write  # noqa: E402

USERS = 100
SIMPLE_TOKEN = new_token()
TARGETS = ("status", "list50")


def user_name(n: int) -> str:
    return f"u{n:03d}"


def tenants_file(path: Path, tokens: dict[str, str]) -> Path:
    """A tenants file of these users (name: token), each of role user."""
    write(path, {name: Tenant(name, Role.USER, token_digest(token)) for name, token in tokens.items()})
    return path


def data_dir(seed: Path, folder: Path, ids: list[str], owner_of) -> Path:
    """A copy of the seed data folder whose task ids[n] is owned by owner_of(n)."""
    shutil.copytree(seed, folder)
    with contextlib.closing(sqlite3.connect(folder / "db" / "tasks.sqlite3")) as db, db:
        db.executemany("UPDATE tasks SET tenant = ? WHERE id = ?", ((owner_of(n), i) for n, i in enumerate(ids)))
        # A task's user never changes in the service, so its triggers keep no count for it: counted again here.
        db.execute("DELETE FROM tenant_counts")
        db.execute(
            "INSERT INTO tenant_counts (tenant, status, n) SELECT tenant, status, COUNT(*) FROM tasks"
            " WHERE parent_id IS NULL GROUP BY tenant, status"
        )
    return folder


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def get(base: str, path: str, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(base + path, headers=bearer(token))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def requests(ids_by_token: dict[str, list[str]]) -> dict:
    """Per target, (paths, headers) for service_bench.load: the tokens in turn, each asking for its
    own tasks (as many of each token's as the fewest any token has)."""
    tokens = list(ids_by_token)
    status = [
        (f"/api/status/{task_id}", bearer(token))
        for batch in zip(*ids_by_token.values(), strict=False)
        for token, task_id in zip(tokens, batch, strict=True)
    ]
    listing = [("/api/tasks?limit=50", bearer(token)) for token in tokens]
    return {
        name: ([path for path, _ in pairs], [headers for _, headers in pairs])
        for name, pairs in (("status", status), ("list50", listing))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=3.0, help="per case, target and round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--spread", type=int, default=8, help="users' tokens of the spread case")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vda-users-bench-"))
    try:
        started = time.perf_counter()
        seed = work / "seed"
        (seed / "db").mkdir(parents=True)
        ids = fill_sqlite(seed / "db" / "tasks.sqlite3", args.tasks)  # oldest first
        sample = ids[:: max(1, len(ids) // 1000)]
        owned = {user_name(n): ids[n::USERS] for n in range(USERS)}
        one = {user_name(0): new_token()}
        many = {user_name(n): new_token() for n in range(USERS)}
        folders = {
            "reference": data_dir(seed, work / "reference", ids, lambda n: "admin"),
            "1 user": data_dir(seed, work / "one", ids, lambda n: user_name(0)),
            "100 users": data_dir(seed, work / "many", ids, lambda n: user_name(n % USERS)),
        }
        print(
            f"stored {args.tasks:,} tasks, 3 copies with their owners, in {time.perf_counter() - started:.1f}s;"
            f" {args.connections} connections, {args.seconds:g} s a case, {args.rounds} rounds, best shown"
        )
        with contextlib.ExitStack() as stack:
            reference = stack.enter_context(Service(folders["reference"], VIDEO_API_TOKENS=SIMPLE_TOKEN))
            one_file = tenants_file(work / "one.toml", one)
            single = stack.enter_context(Service(folders["1 user"], VIDEO_API_TENANTS_FILE=str(one_file)))
            many_file = tenants_file(work / "many.toml", many)
            hundred = stack.enter_context(Service(folders["100 users"], VIDEO_API_TENANTS_FILE=str(many_file)))
            check(reference, single, hundred, one, many, owned, args.tasks)
            spread = [user_name(n) for n in range(args.spread)]
            cases = {
                "reference (admin)": (reference, requests({SIMPLE_TOKEN: sample})),
                "1 user": (single, requests({one[user_name(0)]: sample})),
                "100 users, 1 token": (hundred, requests({many[user_name(0)]: owned[user_name(0)]})),
                f"100 users, {args.spread} tokens": (hundred, requests({many[name]: owned[name] for name in spread})),
            }
            results = {(case, target): [] for case in cases for target in TARGETS}
            for round_number in range(args.rounds):
                order = list(cases.items()) if round_number % 2 == 0 else list(reversed(cases.items()))
                for target in TARGETS:
                    for case, (service, targets) in order:
                        paths, headers = targets[target]
                        if round_number == 0:
                            asyncio.run(load(service.base, paths, 4, 0.5, headers))  # warm up
                        result = asyncio.run(load(service.base, paths, args.connections, args.seconds, headers))
                        results[case, target].append(result)
        table(results, list(cases))
        print(f"whole run {time.perf_counter() - started:.0f}s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check(reference: Service, single: Service, hundred: Service, one: dict, many: dict, owned: dict, tasks: int):
    """What each token sees: the total of its list, and a 404 for another user's task."""
    first, other, token = owned[user_name(0)][0], owned[user_name(1)][0], many[user_name(0)]
    totals = {
        "reference": get(reference.base, "/api/tasks?limit=50", SIMPLE_TOKEN)[1]["total"],
        "1 user": get(single.base, "/api/tasks?limit=50", one[user_name(0)])[1]["total"],
        "100 users": get(hundred.base, "/api/tasks?limit=50", token)[1]["total"],
    }
    own, foreign = (
        get(hundred.base, f"/api/status/{first}", token)[0],
        get(hundred.base, f"/api/status/{other}", token)[0],
    )
    assert totals == {"reference": tasks, "1 user": tasks, "100 users": tasks // USERS}, totals
    assert (own, foreign) == (200, 404), (own, foreign)
    print(f"check: list totals {totals}; in 100 users, u000 asking for its task gets {own}, for u001's {foreign}")


def table(results: dict, cases: list[str]) -> None:
    """Each case's best round; its req/s and p99 over the reference's best round, and the range of
    the rounds' req/s ratios (each round's case over the same round's reference)."""
    row = "{:<7} {:<21} {:>7} {:>7} {:>7}  {:>8} {:>11}  {:>9}"
    print(row.format("target", "case", "req/s", "p50 ms", "p99 ms", "req/s vs", "rounds", "p99 vs"))
    for target in TARGETS:
        reference = results[cases[0], target]
        best_reference = max(reference, key=lambda result: result["rps"])
        for case in cases:
            measured = results[case, target]
            best = max(measured, key=lambda result: result["rps"])
            ratios = sorted(m["rps"] / r["rps"] for m, r in zip(measured, reference, strict=True))
            print(
                row.format(
                    target,
                    case,
                    f"{best['rps']:.0f}",
                    f"{best['p50_ms']:.2f}",
                    f"{best['p99_ms']:.2f}",
                    f"{best['rps'] / best_reference['rps']:.2f}x",
                    f"{ratios[0]:.2f}-{ratios[-1]:.2f}x",
                    f"{best['p99_ms'] / best_reference['p99_ms']:.2f}x",
                )
            )


if __name__ == "__main__":
    main()
