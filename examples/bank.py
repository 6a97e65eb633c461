#!/usr/bin/env python3
"""A small bank on three nodes, written the way an application uses dg.

Accounts live on the coordinator (a local table) and on two peers (reached
through dg). Clients move money between random accounts on random nodes,
concurrently; each transfer is one transaction block on the coordinator:

    BEGIN;
    INSERT INTO bank_ledger ...;          -- the transfer's id, locally
    debit one account, credit another     -- local UPDATE or dg.dist_exec
    COMMIT;                               -- atomic across all three nodes

The retry loop is the one README ("A client's retry loop") prescribes:

- 40001 (serialization failure) and 40P01 (deadlock, also a distributed
  one that dg broke): the transaction rolled back everywhere; run it again.
- An ERROR from COMMIT (08006 included: a peer's connection was lost
  during the prepare phase): dg rolled back everywhere; run it again.
- The client's own connection to the coordinator lost during COMMIT: the
  outcome is unknown to the client. Reconnect and look for the transfer's
  id in the ledger, written in the same DT: there means committed
  everywhere, absent means rolled back everywhere.

At the end it checks the invariant: the money total is unchanged, the
ledger holds exactly the transfers the clients saw commit, and no dg
prepared transaction is left on any node.

    python3 examples/bank.py --port 5801 --dbname demo [--clients 4] [--transfers 200]
"""

import argparse
import random
import sys
import threading
import time
import uuid

import psycopg

NODES = ["local", "peer1", "peer2"]
ACCOUNTS = 10
START = 1000

# SQLSTATEs after which the whole transfer may simply run again: an ERROR
# the coordinator reports means the DT rolled back on every node, and these
# say the cause was passing (a conflict, a broken distributed deadlock, a
# peer that could not be reached or was lost before the commit point).
RETRY = {"40001", "40P01", "08006", "08001"}


def connect(args):
    return psycopg.connect(
        host=args.host, port=args.port, dbname=args.dbname, user=args.user, autocommit=True
    )


def setup(args):
    with connect(args) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS dg")
        c.execute("DROP TABLE IF EXISTS bank_accounts, bank_ledger")
        c.execute("CREATE TABLE bank_accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
        c.execute("CREATE TABLE bank_ledger (id uuid PRIMARY KEY, amount bigint NOT NULL)")
        c.execute(
            "INSERT INTO bank_accounts SELECT g, %s FROM generate_series(1, %s) g",
            (START, ACCOUNTS),
        )
        for peer in NODES[1:]:
            for sql in (
                "DROP TABLE IF EXISTS bank_accounts",
                "CREATE TABLE bank_accounts (id int PRIMARY KEY, balance bigint NOT NULL)",
                f"INSERT INTO bank_accounts SELECT g, {START} FROM generate_series(1, {ACCOUNTS}) g",
            ):
                c.execute("SELECT dg.dist_exec(%s, %s)", (peer, sql))


def move(cur, node, account, delta):
    sql = "UPDATE bank_accounts SET balance = balance + $1 WHERE id = $2"
    if node == "local":
        cur.execute(
            "UPDATE bank_accounts SET balance = balance + %s WHERE id = %s", (delta, account)
        )
    else:
        cur.execute("SELECT dg.dist_exec(%s, %s, %s, %s)", (node, sql, str(delta), str(account)))


def committed(args, transfer_id):
    """After a lost connection: did the transfer commit? Its ledger row says."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with connect(args) as c:
                row = c.execute(
                    "SELECT count(*) FROM bank_ledger WHERE id = %s", (transfer_id,)
                ).fetchone()
                return row[0] == 1
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class Client(threading.Thread):
    def __init__(self, args, seed):
        super().__init__()
        self.args = args
        self.rng = random.Random(seed)
        self.done = []  # ids of the transfers this client saw commit
        self.retries = {}
        self.error = None

    def transfer(self, conn, transfer_id, src, dst, amount):
        with conn.transaction():
            cur = conn.cursor()
            cur.execute(
                "INSERT INTO bank_ledger VALUES (%s, %s)", (transfer_id, amount)
            )
            # Lock in a fixed order, as a careful application does; dg
            # breaks the cycles of those that do not.
            for node, account, delta in sorted([(*src, -amount), (*dst, amount)]):
                move(cur, node, account, delta)

    def run(self):
        try:
            conn = connect(self.args)
            for _ in range(self.args.transfers):
                transfer_id = uuid.uuid4()
                src = (self.rng.choice(NODES), self.rng.randint(1, ACCOUNTS))
                dst = (self.rng.choice(NODES), self.rng.randint(1, ACCOUNTS))
                if src == dst:
                    continue
                amount = self.rng.randint(1, 50)
                for attempt in range(20):
                    try:
                        self.transfer(conn, transfer_id, src, dst, amount)
                        self.done.append(transfer_id)
                        break
                    except psycopg.Error as e:
                        state = e.sqlstate
                        if state is None or conn.closed:
                            # Our own connection is gone: the outcome is
                            # unknown to us, not to the ledger.
                            conn = connect(self.args)
                            if committed(self.args, transfer_id):
                                self.done.append(transfer_id)
                                break
                            state = "connection"
                        elif state not in RETRY:
                            raise
                        self.retries[state] = self.retries.get(state, 0) + 1
                        time.sleep(0.01 * attempt)
                else:
                    raise RuntimeError(f"transfer {transfer_id} failed 20 times")
            conn.close()
        except Exception as e:  # reported by main, which fails the run
            self.error = e


def check(args, clients):
    with connect(args) as c:
        local = c.execute("SELECT sum(balance) FROM bank_accounts").fetchone()[0]
        total = local
        for peer in NODES[1:]:
            total += c.execute(
                "SELECT sum(balance) FROM dg.dist_query(%s, 'SELECT balance FROM bank_accounts')"
                " AS t(balance bigint)",
                (peer,),
            ).fetchone()[0]
        ledger = {r[0] for r in c.execute("SELECT id FROM bank_ledger")}
        prepared = c.execute("SELECT count(*) FROM dg.in_doubt").fetchone()[0]
    seen = {t for cl in clients for t in cl.done}
    problems = []
    if total != START * ACCOUNTS * len(NODES):
        problems.append(f"money total {total}, expected {START * ACCOUNTS * len(NODES)}")
    if ledger != seen:
        problems.append(
            f"ledger has {len(ledger)} transfers, clients saw {len(seen)} commit "
            f"({len(ledger - seen)} unseen, {len(seen - ledger)} lost)"
        )
    if prepared:
        problems.append(f"{prepared} dg prepared transactions left")
    return total, len(seen), problems


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5801)
    p.add_argument("--dbname", default="demo")
    p.add_argument("--user", default="postgres")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--transfers", type=int, default=200, help="per client")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    setup(args)
    clients = [Client(args, args.seed * 1000 + i) for i in range(args.clients)]
    started = time.monotonic()
    for cl in clients:
        cl.start()
    for cl in clients:
        cl.join()
    took = time.monotonic() - started
    failed = [cl.error for cl in clients if cl.error]
    total, n, problems = check(args, clients)
    retries = {}
    for cl in clients:
        for k, v in cl.retries.items():
            retries[k] = retries.get(k, 0) + v
    print(
        f"bank: {n} transfers by {args.clients} clients in {took:.1f} s, "
        f"retries {retries or 'none'}, money total {total}"
    )
    for e in failed:
        print(f"bank: a client failed: {e!r}", file=sys.stderr)
    for pr in problems:
        print(f"bank: INVARIANT VIOLATED: {pr}", file=sys.stderr)
    ok = not failed and not problems
    print(f"bank: {'1 passed, 0 failed' if ok else '0 passed, 1 failed'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
