"""The SQL that keeps the desk's aggregates (app/desk/models.py) equal to the vote rows.

Triggers on `votes`, `users` and `organisations` change the aggregates in the same transaction as the row, for
whatever wrote it: the vote command, a captured vote, a merge or its undo, an account deletion, a person moving
organisation, an organisation's new segment or revenue, plain SQL. Each trigger applies a signed delta:

* counts: the vote(s) as they counted before (-1) and as they count now (+1), summed into the vote's day
  (`desk_days`), the voter's organisation's day (`desk_org_days`) and every window that holds that day
  (`desk_windows`);
* organisations: the (item, organisation) pairs the change touches are taken out of the windows, recounted
  from that organisation's votes per item and day (`desk_org_days`, just brought up to date; bounded by the days
  it voted on the item; from its people's vote rows when a vote is moved), and put back.

The same statements, dialect by dialect, make `rebuild()` (the migration's backfill) and `recount()` (what
`ahead desk-check` compares with). Only the windows keep sums of revenue factors, in two sets (f, g) for the
generations of the revenue factor: a new factor is summed into the other set than the one the desk reads, from
`desk_org_days` (votes per organisation and day, a factor per organisation), never from the vote rows, a range of
items per transaction (`refactor_step()`), while the triggers keep both sets of the items filled so far; after the
last range the generation number in `desk_state` moves on, and the desk reads the other set. `refactor()` does all
the ranges at once in the weights' own request on a small desk; the outbox's worker runs the steps otherwise
(app/desk/service.py, REFACTOR_KIND). `advance()` takes out a day's factors the same way. On PostgreSQL every
trigger holds a shared advisory lock for its transaction and `advance()` and each `refactor_step()` take it
exclusively, so a window is never moved or refactored while a change is in flight; a trigger recounting an organisation's pairs first takes that
organisation's own lock (two organisations in id order), so two transactions never recount the same pair from
different snapshots (the pair's insert is an upsert besides). SQLite has one writer.

Every statement here is put together from this module's own constants and column names (the `nosec B608` marks);
values (days, weights) are bound parameters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Date, Numeric, bindparam, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

SPANS = (0, 30, 84, 90, 365)  # days of each window kept; 0 = all time; 84 = the trend's 12 weeks
ALL_TIME_SINCE = date(1900, 1, 1)
LOCK_KEY = 0x6465736B  # "desk": PostgreSQL advisory lock between the triggers and advance()
COUNTS = ("n1", "n2", "n3", "f1", "f2", "f3", "lone")  # a window's sums, as the desk reads them
FACTOR_SETS = (("f1", "f2", "f3"), ("g1", "g2", "g3"))  # sums of factors of the even and odd generations
WINDOW_SUMS = (*COUNTS, *FACTOR_SETS[1])  # what the triggers add to a window
DAY_COUNTS = ("n1", "n2", "n3", "lone")  # a day's: its factors come from desk_org_days when needed
ORG_COUNTS = ("n1", "n2", "n3")


CURRENT, NEXT = "revenue_", "next_revenue_"  # desk_state's columns of the current and the next factor


def since_of(span: int, today: date) -> date:
    """The first day of the window of `span` days ending today (today included)."""
    return ALL_TIME_SINCE if span == 0 else today - timedelta(days=span - 1)


# --- SQL by dialect ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    name: str

    @property
    def pg(self) -> bool:
        return self.name == "postgresql"

    def day(self, value: str) -> str:
        return f"(({value}) AT TIME ZONE 'UTC')::date" if self.pg else f"date({value})"

    def real(self, value: str) -> str:
        return f"CAST({value} AS {'DOUBLE PRECISION' if self.pg else 'REAL'})"

    def least(self, a: str, b: str) -> str:
        return f"{'least' if self.pg else 'min'}({a}, {b})"

    def differs(self, a: str, b: str) -> str:
        return f"{a} IS DISTINCT FROM {b}" if self.pg else f"{a} IS NOT {b}"

    def factor(self, revenue: str, params: str = CURRENT) -> str:
        """The revenue factor of an organisation's revenue, with the parameters in `desk_state st` (`params`: the
        current generation's columns, or NEXT's)."""
        r = f"{self.real(f'coalesce({revenue}, 0)')} / {self.real(f'st.{params}unit')}"
        return (f"(CASE st.{params}mode WHEN 'linear' THEN 1.0 + {r} WHEN 'logarithmic' THEN 1.0 + ln(1.0 + {r}) "
                f"WHEN 'capped' THEN {self.least(f'1.0 + {r}', self.real(f'st.{params}cap'))} ELSE 1.0 END)")

    def factor_excess(self, revenue: str, params: str = CURRENT) -> str:
        """The factor less 1: what an organisation's votes add to the sums of factors beyond their count (0 without
        revenue, and in every mode for a revenue of 0, so people without an organisation never add any)."""
        return f"({self.factor(revenue, params)} - 1.0)"

    def set_factors(self, revenue: str, item: str) -> str:
        """Columns `ra` and `rb`: the factor a vote on `item` counts with in each set of sums of factors (f, g):
        the current generation's in its set, the next one's in the other for the items filled so far, 0 elsewhere
        (that set is garbage there until filled)."""
        def one(parity: int) -> str:
            return (f"CASE WHEN (st.generation & 1) = {parity} THEN {self.factor(revenue)} "
                    f"WHEN {item} <= st.next_through THEN {self.factor(revenue, NEXT)} ELSE 0.0 END")
        return f"{one(0)} AS ra, {one(1)} AS rb"

    # A source of signed vote contributions: columns item_id, day, seg, imp, ra, rb, lone, sgn, org.

    def one_vote(self, row: str, sign: int) -> str:
        return (f"SELECT {row}.item_id AS item_id, {self.day(f'{row}.created_at')} AS day, "  # nosec B608  # our own SQL
                f"coalesce(o.segment_id, 0) AS seg, {row}.importance AS imp, "
                f"{self.set_factors('o.revenue', f'{row}.item_id')}, "
                f"CASE WHEN o.id IS NULL THEN 1 ELSE 0 END AS lone, {sign} AS sgn, o.id AS org "
                f"FROM desk_state st LEFT JOIN users u ON u.id = {row}.user_id "
                f"LEFT JOIN organisations o ON o.id = u.organisation_id")

    def all_votes(self) -> str:
        return (f"SELECT v.item_id AS item_id, {self.day('v.created_at')} AS day, coalesce(o.segment_id, 0) AS seg, "  # nosec B608  # our own SQL
                f"v.importance AS imp, {self.set_factors('o.revenue', 'v.item_id')}, "
                f"CASE WHEN o.id IS NULL THEN 1 ELSE 0 END AS lone, 1 AS sgn, o.id AS org "
                f"FROM votes v CROSS JOIN desk_state st JOIN users u ON u.id = v.user_id "
                f"LEFT JOIN organisations o ON o.id = u.organisation_id")

    def person_moved(self) -> str:
        def side(org: str, sign: int) -> str:
            return (f"SELECT v.item_id AS item_id, {self.day('v.created_at')} AS day, "  # nosec B608  # our own SQL
                    f"coalesce(o.segment_id, 0) AS seg, v.importance AS imp, "
                    f"{self.set_factors('o.revenue', 'v.item_id')}, "
                    f"CASE WHEN o.id IS NULL THEN 1 ELSE 0 END AS lone, {sign} AS sgn, o.id AS org "
                    f"FROM votes v CROSS JOIN desk_state st LEFT JOIN organisations o ON o.id = {org} "
                    f"WHERE v.user_id = NEW.id")
        return f"{side('OLD.organisation_id', -1)} UNION ALL {side('NEW.organisation_id', 1)}"

    def organisation_changed(self) -> str:
        def side(row: str, sign: int) -> str:
            return (f"SELECT v.item_id AS item_id, {self.day('v.created_at')} AS day, "  # nosec B608  # our own SQL
                    f"coalesce({row}.segment_id, 0) AS seg, v.importance AS imp, "
                    f"{self.set_factors(f'{row}.revenue', 'v.item_id')}, "
                    f"0 AS lone, {sign} AS sgn, {row}.id AS org "
                    f"FROM users u CROSS JOIN votes v CROSS JOIN desk_state st "
                    f"WHERE u.organisation_id = NEW.id AND v.user_id = u.id")
        return f"{side('OLD', -1)} UNION ALL {side('NEW', 1)}"

    @staticmethod
    def _counts(d: str = "d") -> list[str]:
        imp = {"1": f"{d}.imp = 1", "2": f"{d}.imp = 2", "3": f"{d}.imp NOT IN (1, 2)"}
        return [f"sum(CASE WHEN {imp[k]} THEN {d}.sgn ELSE 0 END)" for k in "123"]

    @staticmethod
    def _sums(d: str = "d") -> str:
        """The window's sums (WINDOW_SUMS) of a source: counts and sums of factors (set f) per importance, people
        alone, sums of factors (set g)."""
        imp = {"1": f"{d}.imp = 1", "2": f"{d}.imp = 2", "3": f"{d}.imp NOT IN (1, 2)"}

        def factors(r: str) -> list[str]:
            return [f"sum(CASE WHEN {imp[k]} THEN {d}.sgn * {d}.{r} ELSE 0.0 END)" for k in "123"]
        return ", ".join([*Dialect._counts(d), *factors("ra"), f"sum({d}.sgn * {d}.lone)", *factors("rb")])

    @staticmethod
    def _day_sums(d: str = "d") -> str:
        return ", ".join([*Dialect._counts(d), f"sum({d}.sgn * {d}.lone)"])

    def add_counts(self, source: str, *, organisations: bool = True) -> list[str]:
        """Add a source's signed contributions to its days, its organisations' days (unless `organisations` is
        False: a change of an organisation's segment or revenue moves no vote between organisations) and every
        window that holds each day."""
        cols, day_cols, org_cols = ", ".join(WINDOW_SUMS), ", ".join(DAY_COUNTS), ", ".join(ORG_COUNTS)
        update_days = ", ".join(f"{c} = desk_days.{c} + excluded.{c}" for c in DAY_COUNTS)
        update_orgs = ", ".join(f"{c} = desk_org_days.{c} + excluded.{c}" for c in ORG_COUNTS)
        update_windows = ", ".join(f"{c} = desk_windows.{c} + excluded.{c}" for c in WINDOW_SUMS)
        statements = [
            f"INSERT INTO desk_days (item_id, day, seg, {day_cols}) SELECT d.item_id, d.day, d.seg, "  # nosec B608  # our own SQL
            f"{self._day_sums()} FROM ({source}) d WHERE true GROUP BY d.item_id, d.day, d.seg "
            f"ON CONFLICT (item_id, day, seg) DO UPDATE SET {update_days}",
            f"INSERT INTO desk_windows (span, item_id, seg, {cols}, orgs, revenue) "  # nosec B608  # our own SQL
            f"SELECT sp.span, d.item_id, d.seg, {self._sums()}, 0, 0 FROM ({source}) d "
            f"JOIN desk_spans sp ON d.day >= sp.since WHERE true GROUP BY sp.span, d.item_id, d.seg "
            f"ON CONFLICT (span, item_id, seg) DO UPDATE SET {update_windows}",
        ]
        if organisations:
            statements.append(
                f"INSERT INTO desk_org_days (organisation_id, item_id, day, {org_cols}) "  # nosec B608  # our own SQL
                f"SELECT d.org, d.item_id, d.day, {', '.join(self._counts())} FROM ({source}) d "
                f"WHERE d.org IS NOT NULL GROUP BY d.org, d.item_id, d.day "
                f"ON CONFLICT (organisation_id, item_id, day) DO UPDATE SET {update_orgs}")
        return statements

    def lock_organisations(self, *orgs: str) -> list[str]:
        """PostgreSQL: wait for any other transaction recounting these organisations' pairs (in id order, so two
        such transactions never wait for each other); SQLite has one writer already."""
        if not self.pg:
            return []
        if len(orgs) == 2:
            orgs = (f"least({orgs[0]}, {orgs[1]})", f"greatest({orgs[0]}, {orgs[1]})")
        return [f"PERFORM pg_advisory_xact_lock({LOCK_KEY}, {org})" for org in orgs]

    def refresh_pairs(self, stored: str, raw: str, *, from_votes: bool = False) -> list[str]:
        """Take the (item, organisation) pairs `stored` selects (over `desk_item_orgs r`) out of the windows,
        recount those `raw` selects and put them back.

        The recount reads the organisation's votes per item and day (`raw` over `organisations o`,
        `desk_org_days g`): the same voters and latest day as its people's vote rows, from as many rows as days
        the organisation voted on the item (from the vote rows it was most of a vote's database time: 9-22 ms for
        an organisation of 2,753 people, bench/README.md). That needs `desk_org_days` brought up to date first,
        by `add_counts` earlier in the same trigger body. `from_votes` (`raw` over `organisations o`, `users u`,
        `votes v`): from the vote rows, for a trigger whose recount is a separate SQLite trigger, which SQLite
        may fire before the one with `add_counts`."""
        return [
            "UPDATE desk_windows SET orgs = desk_windows.orgs - x.k, revenue = desk_windows.revenue - x.rev "  # nosec B608  # our own SQL
            "FROM (SELECT sp.span AS span, r.item_id AS item_id, r.seg AS seg, count(*) AS k, sum(r.revenue) AS rev "
            f"FROM desk_item_orgs r JOIN desk_spans sp ON r.latest_day >= sp.since WHERE {stored} "
            "GROUP BY sp.span, r.item_id, r.seg) x "
            "WHERE desk_windows.span = x.span AND desk_windows.item_id = x.item_id AND desk_windows.seg = x.seg",
            # No alias: SQLite allows none on a trigger's DELETE.
            "DELETE FROM desk_item_orgs WHERE " + stored.replace("r.item_id", "desk_item_orgs.item_id")  # nosec B608  # our own SQL
            .replace("r.organisation_id", "desk_item_orgs.organisation_id"),
            self.pairs_from_votes(raw) if from_votes else self.pairs_from_org_days(raw),
            self.pairs_into_windows(stored),
        ]

    @staticmethod
    def pairs_into_windows(stored: str) -> str:
        return (
            "INSERT INTO desk_windows (span, item_id, seg, n1, n2, n3, f1, f2, f3, lone, g1, g2, g3, orgs, revenue) "  # nosec B608  # our own SQL
            "SELECT sp.span, r.item_id, r.seg, 0, 0, 0, 0.0, 0.0, 0.0, 0, 0.0, 0.0, 0.0, count(*), sum(r.revenue) "
            f"FROM desk_item_orgs r JOIN desk_spans sp ON r.latest_day >= sp.since WHERE {stored} "
            "GROUP BY sp.span, r.item_id, r.seg "
            "ON CONFLICT (span, item_id, seg) DO UPDATE SET orgs = desk_windows.orgs + excluded.orgs, "
            "revenue = desk_windows.revenue + excluded.revenue")

    def pairs_select(self, raw: str) -> str:
        # organisations -> their people -> their votes: bounded by the organisation's size (CROSS JOIN keeps
        # SQLite's planner to that order; PostgreSQL plans it itself).
        return (f"SELECT v.item_id, o.id, count(*), max({self.day('v.created_at')}), coalesce(o.segment_id, 0), "  # nosec B608  # our own SQL
                f"o.revenue FROM organisations o CROSS JOIN users u CROSS JOIN votes v "
                f"WHERE u.organisation_id = o.id AND v.user_id = u.id AND {raw} "
                f"GROUP BY v.item_id, o.id, o.segment_id, o.revenue")

    @staticmethod
    def pairs_from_org_days(raw: str) -> str:
        """The pairs `raw` selects (over `organisations o`, `desk_org_days g`), counted from the days they voted on;
        an upsert as in `pairs_from_votes`. A day whose votes were all withdrawn keeps a row of zeros: left out."""
        return ("INSERT INTO desk_item_orgs (item_id, organisation_id, voters, latest_day, seg, revenue) "  # nosec B608  # our own SQL
                "SELECT g.item_id, o.id, sum(g.n1 + g.n2 + g.n3), max(g.day), coalesce(o.segment_id, 0), o.revenue "
                "FROM organisations o JOIN desk_org_days g ON g.organisation_id = o.id "
                f"WHERE g.n1 + g.n2 + g.n3 > 0 AND {raw} GROUP BY g.item_id, o.id, o.segment_id, o.revenue "
                "ON CONFLICT (item_id, organisation_id) DO UPDATE SET voters = excluded.voters, "
                "latest_day = excluded.latest_day, seg = excluded.seg, revenue = excluded.revenue")

    def pairs_from_votes(self, raw: str) -> str:
        # An upsert: the pair was deleted just before, but a transaction that started recounting it without the
        # organisation's lock (none on SQLite; see lock_organisations) must not fail on the key.
        upsert = ("ON CONFLICT (item_id, organisation_id) DO UPDATE SET voters = excluded.voters, "
                  "latest_day = excluded.latest_day, seg = excluded.seg, revenue = excluded.revenue")
        return f"INSERT INTO desk_item_orgs (item_id, organisation_id, voters, latest_day, seg, revenue) {self.pairs_select(raw)} {upsert}"  # nosec B608  # our own SQL


def _organisation_of(row: str) -> str:
    return f"(SELECT uu.organisation_id FROM users uu WHERE uu.id = {row}.user_id)"  # nosec B608  # our own SQL


def _vote_pair(row: str, *, votes: str = "g") -> tuple[str, str]:
    """The stored and the raw condition of the pair of vote `row`; the raw one over `desk_org_days g`, or with
    votes="v" over the vote rows (see Dialect.refresh_pairs)."""
    org = _organisation_of(row)
    return f"r.item_id = {row}.item_id AND r.organisation_id = {org}", f"o.id = {org} AND {votes}.item_id = {row}.item_id"


@dataclass(frozen=True)
class Trigger:
    name: str
    table: str
    timing: str  # "AFTER INSERT", "AFTER DELETE", "AFTER UPDATE", "BEFORE DELETE", ...
    body: list[tuple[str | None, list[str]]]  # (condition or None, statements)
    when: str | None = None


def triggers(d: Dialect) -> list[Trigger]:
    new_pair, old_pair = _vote_pair("NEW"), _vote_pair("OLD")
    vote_moved = " OR ".join(d.differs(f"OLD.{c}", f"NEW.{c}") for c in ("item_id", "user_id", "created_at"))
    vote_changed = f"{vote_moved} OR {d.differs('OLD.importance', 'NEW.importance')}"
    items_of_person = "(SELECT vv.item_id FROM votes vv WHERE vv.user_id = NEW.id)"
    moved_orgs = "(OLD.organisation_id, NEW.organisation_id)"
    org_changed = f"{d.differs('OLD.segment_id', 'NEW.segment_id')} OR {d.differs('OLD.revenue', 'NEW.revenue')}"
    new_lock, old_lock = d.lock_organisations(_organisation_of("NEW")), d.lock_organisations(_organisation_of("OLD"))
    return [
        Trigger("desk_vote_added", "votes", "AFTER INSERT",
                [(None, d.add_counts(d.one_vote("NEW", 1)) + new_lock + d.refresh_pairs(*new_pair))]),
        Trigger("desk_vote_removed", "votes", "AFTER DELETE",
                [(None, d.add_counts(d.one_vote("OLD", -1)) + old_lock + d.refresh_pairs(*old_pair))]),
        Trigger("desk_vote_changed", "votes", "AFTER UPDATE", [
            (None, d.add_counts(d.one_vote("OLD", -1)) + d.add_counts(d.one_vote("NEW", 1))),
            # A second trigger on SQLite: from the vote rows (rare: a backdate, a merge or its undo).
            (vote_moved, d.lock_organisations(_organisation_of("OLD"), _organisation_of("NEW"))
             + d.refresh_pairs(*_vote_pair("OLD", votes="v"), from_votes=True)
             + d.refresh_pairs(*_vote_pair("NEW", votes="v"), from_votes=True)),
        ], when=vote_changed),
        Trigger("desk_person_moved", "users", "AFTER UPDATE", [
            (None, d.add_counts(d.person_moved())
             + d.lock_organisations("OLD.organisation_id", "NEW.organisation_id")
             + d.refresh_pairs(f"r.organisation_id IN {moved_orgs} AND r.item_id IN {items_of_person}",
                               f"o.id IN {moved_orgs} AND g.item_id IN {items_of_person}")),
        ], when=d.differs("OLD.organisation_id", "NEW.organisation_id")),
        # A person's votes go before the person, while their organisation still says how they counted.
        Trigger("desk_person_deleted", "users", "BEFORE DELETE",
                [(None, ["DELETE FROM votes WHERE user_id = OLD.id"])]),
        Trigger("desk_organisation_changed", "organisations", "AFTER UPDATE", [
            (None, d.add_counts(d.organisation_changed(), organisations=False)
             + d.lock_organisations("NEW.id")
             + d.refresh_pairs("r.organisation_id = NEW.id", "o.id = NEW.id")),
        ], when=org_changed),
        # Its people leave it first (as deleting it through the app does), so their votes are moved while it
        # still says what they counted for.
        Trigger("desk_organisation_deleted", "organisations", "BEFORE DELETE",
                [(None, ["UPDATE users SET organisation_id = NULL WHERE organisation_id = OLD.id"])]),
    ]


def create_triggers(conn: Connection) -> None:
    d = Dialect(conn.dialect.name)
    for trigger in triggers(d):
        if d.pg:
            lines = [f"PERFORM pg_advisory_xact_lock_shared({LOCK_KEY});"]
            for condition, statements in trigger.body:
                body = "\n".join(f"{s};" for s in statements)
                lines.append(f"IF {condition} THEN\n{body}\nEND IF;" if condition else body)
            result = "OLD" if trigger.timing.startswith("BEFORE") else "NULL"
            conn.exec_driver_sql(
                f"CREATE FUNCTION {trigger.name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
                + "\n".join(lines) + f"\nRETURN {result};\nEND\n$$")
            when = f" WHEN ({trigger.when})" if trigger.when else ""
            conn.exec_driver_sql(f"CREATE TRIGGER {trigger.name} {trigger.timing} ON {trigger.table} FOR EACH ROW"
                                 f"{when} EXECUTE FUNCTION {trigger.name}()")
        else:
            for n, (condition, statements) in enumerate(trigger.body):
                conditions = [c for c in (trigger.when, condition) if c]
                when = " WHEN " + " AND ".join(f"({c})" for c in conditions) if conditions else ""
                name = trigger.name if n == 0 else f"{trigger.name}_{n}"
                body = "\n".join(f"{s};" for s in statements)
                conn.exec_driver_sql(f"CREATE TRIGGER {name} {trigger.timing} ON {trigger.table} FOR EACH ROW"
                                     f"{when}\nBEGIN\n{body}\nEND")


def drop_triggers(conn: Connection) -> None:
    d = Dialect(conn.dialect.name)
    for trigger in triggers(d):
        if d.pg:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger.name} ON {trigger.table}")
            conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {trigger.name}()")
        else:
            for n in range(len(trigger.body)):
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger.name if n == 0 else f'{trigger.name}_{n}'}")


# --- rebuild, advance, recount --------------------------------------------------------------------------------


def _connection(target: Session | Connection) -> Connection:
    return target.connection() if isinstance(target, Session) else target


def _state_params(revenue_mode: str, revenue_unit: Decimal, revenue_cap: Decimal) -> tuple[Any, dict[str, Any]]:
    return (text("INSERT INTO desk_state (id, revenue_mode, revenue_unit, revenue_cap, generation) "
                 "VALUES (1, :mode, :unit, :cap, 0)")
            .bindparams(bindparam("unit", type_=Numeric(16, 3)), bindparam("cap", type_=Numeric(10, 3))),
            {"mode": revenue_mode, "unit": revenue_unit, "cap": revenue_cap})


Factor = tuple[str, Decimal, Decimal]  # a revenue factor's mode, unit and cap


@dataclass(frozen=True, slots=True)
class State:
    """desk_state: the current generation of the revenue factor and the next one, while it is being filled."""

    generation: int
    revenue: Factor
    next_revenue: Factor | None
    next_through: int | None  # the next generation's sums are filled for the items up to this id (None: no next)

    @property
    def current_set(self) -> tuple[str, ...]:
        return FACTOR_SETS[self.generation % 2]

    @property
    def next_set(self) -> tuple[str, ...]:
        return FACTOR_SETS[(self.generation + 1) % 2]


def _factor(mode: Any, unit: Any, cap: Any) -> Factor | None:
    # SQLite gives the NUMERIC columns back as floats or text: through str, so 100000 and 100000.000 compare equal.
    return None if mode is None else (str(mode), Decimal(str(unit)), Decimal(str(cap)))


def state(target: Session | Connection) -> State | None:
    """desk_state's row, None before the aggregates were counted."""
    row = _connection(target).exec_driver_sql(
        "SELECT generation, revenue_mode, revenue_unit, revenue_cap, next_revenue_mode, next_revenue_unit, "
        "next_revenue_cap, next_through FROM desk_state WHERE id = 1").first()
    if row is None:
        return None
    current = (str(row[1]), Decimal(str(row[2])), Decimal(str(row[3])))  # NOT NULL columns
    return State(int(row[0]), current, _factor(row[4], row[5], row[6]), None if row[7] is None else int(row[7]))


def rebuild(target: Session | Connection, *, today: date, revenue_mode: str = "off",
            revenue_unit: Decimal = Decimal(100_000), revenue_cap: Decimal = Decimal(3)) -> None:
    """Empty the aggregates and count them again from the vote rows (the backfill, `ahead desk-check --fix`), with
    the revenue factor given as generation 0 (a next generation being filled is dropped: its job starts it again)."""
    conn = _connection(target)
    d = Dialect(conn.dialect.name)
    if d.pg:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    for table in ("desk_days", "desk_org_days", "desk_windows", "desk_item_orgs", "desk_spans", "desk_state"):
        conn.exec_driver_sql(f"DELETE FROM {table}")  # nosec B608  # our own SQL
    conn.execute(*_state_params(revenue_mode, revenue_unit, revenue_cap))
    conn.execute(text("INSERT INTO desk_spans (span, since) VALUES (:span, :since)")
                 .bindparams(bindparam("since", type_=Date)),
                 [{"span": span, "since": since_of(span, today)} for span in SPANS])
    day_cols, org_cols = ", ".join(DAY_COUNTS), ", ".join(ORG_COUNTS)
    conn.exec_driver_sql(f"INSERT INTO desk_days (item_id, day, seg, {day_cols}) "  # nosec B608  # our own SQL
                         f"SELECT d.item_id, d.day, d.seg, {d._day_sums()} FROM ({d.all_votes()}) d "
                         f"GROUP BY d.item_id, d.day, d.seg")
    conn.exec_driver_sql(f"INSERT INTO desk_org_days (organisation_id, item_id, day, {org_cols}) "  # nosec B608  # our own SQL
                         f"SELECT d.org, d.item_id, d.day, {', '.join(d._counts())} FROM ({d.all_votes()}) d "
                         f"WHERE d.org IS NOT NULL GROUP BY d.org, d.item_id, d.day")
    # Sums of factors start as the counts (a factor of 1); _add_factors adds what revenue adds.
    conn.exec_driver_sql("INSERT INTO desk_windows (span, item_id, seg, n1, n2, n3, f1, f2, f3, lone, g1, g2, g3, "
                         "orgs, revenue) SELECT sp.span, d.item_id, d.seg, sum(d.n1), sum(d.n2), sum(d.n3), "
                         "sum(d.n1), sum(d.n2), sum(d.n3), sum(d.lone), 0.0, 0.0, 0.0, 0, 0 FROM desk_days d "
                         "JOIN desk_spans sp ON d.day >= sp.since GROUP BY sp.span, d.item_id, d.seg")
    _add_factors(conn, d, cols=FACTOR_SETS[0], params=CURRENT)
    conn.exec_driver_sql(d.pairs_from_votes("1 = 1"))
    conn.exec_driver_sql(d.pairs_into_windows("1 = 1"))


def refactor(target: Session | Connection, *, revenue_mode: str, revenue_unit: Decimal, revenue_cap: Decimal) -> None:
    """Sum the windows' revenue factors again with new parameters (mode, unit, cap) in one go (a small desk, in the
    weights' own transaction): refactor_step over every item at once."""
    refactor_step(target, revenue_mode=revenue_mode, revenue_unit=revenue_unit, revenue_cap=revenue_cap, items=None)


def refactor_step(target: Session | Connection, *, revenue_mode: str, revenue_unit: Decimal, revenue_cap: Decimal,
                  items: int | None) -> bool:
    """Fill the next generation's sums of factors (mode, unit, cap) for the next `items` items (all the rest when
    None), from the votes per organisation and day (`desk_org_days`), not from the vote rows: a factor is one
    organisation's. True when that was the last of them and the generation has moved on: the desk reads with the
    new factor from this transaction's commit.

    A step is meant to be a transaction of its own: it holds the desk's lock (PostgreSQL: the advisory lock taken
    exclusively, which every trigger takes shared; SQLite: the write lock) for a few items' rows, so a vote waits
    for one step at most, never for the whole re-sum. Between steps the triggers keep the items already filled up
    to date with the next factor as well as the current one (Dialect.set_factors). Another factor than the one
    being filled (a second change meanwhile), or none being filled, starts the filling from the first item; a step
    that dies is rolled back whole, and the next one resumes after the last committed."""
    conn = _connection(target)
    d = Dialect(conn.dialect.name)
    if d.pg:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    st = state(conn)
    if st is None:
        return True  # nothing counted yet: rebuild() counts with the weights in force
    wanted = (revenue_mode, Decimal(revenue_unit), Decimal(revenue_cap))
    after = st.next_through
    if after is None or st.next_revenue != wanted:
        conn.execute(text("UPDATE desk_state SET next_revenue_mode = :mode, next_revenue_unit = :unit, "
                          "next_revenue_cap = :cap, next_through = 0 WHERE id = 1")
                     .bindparams(bindparam("unit", type_=Numeric(16, 3)), bindparam("cap", type_=Numeric(10, 3))),
                     {"mode": revenue_mode, "unit": revenue_unit, "cap": revenue_cap})
        after = 0
    found = None if items is None else conn.execute(text(
        "SELECT item_id FROM desk_windows WHERE span = 0 AND item_id > :after ORDER BY item_id LIMIT 1 OFFSET :n"),
        {"after": after, "n": max(items, 1) - 1}).scalar()
    last = found is None
    # The last batch runs to the highest item with window rows (each has one in the all-time window, span 0); an
    # item without rows yet gets them from the triggers, with whichever factor is current then.
    upto = int(found) if found is not None else max(after, int(conn.exec_driver_sql(
        "SELECT coalesce(max(item_id), 0) FROM desk_windows WHERE span = 0").scalar() or 0))
    _fill(conn, d, st.next_set, after=after, upto=upto)
    if last:
        conn.exec_driver_sql(
            "UPDATE desk_state SET generation = generation + 1, revenue_mode = next_revenue_mode, "
            "revenue_unit = next_revenue_unit, revenue_cap = next_revenue_cap, next_revenue_mode = NULL, "
            "next_revenue_unit = NULL, next_revenue_cap = NULL, next_through = NULL WHERE id = 1")
    else:
        conn.execute(text("UPDATE desk_state SET next_through = :upto WHERE id = 1"), {"upto": upto})
    return last


def drop_next(target: Session | Connection) -> None:
    """Stop filling a next generation (its factor is the current one again): the triggers stop keeping it."""
    conn = _connection(target)
    conn.exec_driver_sql("UPDATE desk_state SET next_revenue_mode = NULL, next_revenue_unit = NULL, "
                         "next_revenue_cap = NULL, next_through = NULL WHERE id = 1 AND next_through IS NOT NULL")


def _fill(conn: Connection, d: Dialect, cols: tuple[str, ...], *, after: int, upto: int) -> None:
    """The sums of factors `cols` of the items after `after` up to `upto`, with the next factor: counts, plus what
    revenue adds. The span list lets both databases walk the windows' primary key (span, item_id, seg) by range."""
    spans = ", ".join(str(int(span)) for span in SPANS)
    sets = ", ".join(f"{c} = n{k}" for k, c in zip("123", cols, strict=True))
    conn.execute(text(f"UPDATE desk_windows SET {sets} WHERE span IN ({spans}) "  # nosec B608  # our own SQL
                      "AND item_id > :after AND item_id <= :upto"), {"after": after, "upto": upto})
    _add_factors(conn, d, cols=cols, params=NEXT, items=(after, upto))


def _excess(d: Dialect, where: str, params: str = CURRENT) -> str:
    """Per item and segment (and `bucket`, when the where clause's caller groups by one), what revenue adds to the
    sums of factors of the votes per organisation and day that `where` selects (over `desk_org_days od`)."""
    x = d.factor_excess("o.revenue", params)
    return (f"SELECT od.item_id AS item_id, coalesce(o.segment_id, 0) AS seg, "  # nosec B608  # our own SQL
            f"sum(od.n1 * {x}) AS e1, sum(od.n2 * {x}) AS e2, sum(od.n3 * {x}) AS e3 "
            f"FROM desk_org_days od JOIN organisations o ON o.id = od.organisation_id CROSS JOIN desk_state st "
            f"WHERE {where} GROUP BY od.item_id, coalesce(o.segment_id, 0)")


def _add_excess(cols: tuple[str, ...], source: str, span: str, sign: str = "+") -> str:
    sets = ", ".join(f"{c} = desk_windows.{c} {sign} x.e{k}" for k, c in zip("123", cols, strict=True))
    return (f"UPDATE desk_windows SET {sets} FROM ({source}) x WHERE desk_windows.span = {span} "  # nosec B608  # our own SQL
            "AND desk_windows.item_id = x.item_id AND desk_windows.seg = x.seg")


def _add_factors(conn: Connection, d: Dialect, *, cols: tuple[str, ...], params: str,
                 items: tuple[int, int] | None = None) -> None:
    """Add to each window's sums of factors `cols` what revenue adds with the factor `params` (nothing when revenue
    is off), for every item or those after items[0] up to items[1]. One pass over `desk_org_days`: each day falls in
    the shortest window that holds it (its bucket), a window sums the buckets of the windows it contains."""
    mode = conn.exec_driver_sql(f"SELECT {params}mode FROM desk_state WHERE id = 1").scalar()  # nosec B608  # our own SQL
    if mode in (None, "off"):
        return
    spans = sorted(((as_date(since), int(span)) for span, since in conn.execute(
        text("SELECT span, since FROM desk_spans"))), reverse=True)  # the shortest window first
    if not spans:
        return
    bucket = ("CASE " + " ".join(f"WHEN od.day >= :b{i} THEN {i}" for i in range(len(spans) - 1))
              + f" ELSE {len(spans) - 1} END")
    x = d.factor_excess("o.revenue", params)
    where = "true" if items is None else "od.item_id > :after AND od.item_id <= :upto"
    buckets = (f"SELECT od.item_id AS item_id, coalesce(o.segment_id, 0) AS seg, {bucket} AS bucket, "  # nosec B608  # our own SQL
               f"sum(od.n1 * {x}) AS g1, sum(od.n2 * {x}) AS g2, sum(od.n3 * {x}) AS g3 "
               f"FROM desk_org_days od JOIN organisations o ON o.id = od.organisation_id CROSS JOIN desk_state st "
               f"WHERE {where} GROUP BY od.item_id, coalesce(o.segment_id, 0), {bucket}")
    reach = "CASE sp.span " + " ".join(f"WHEN {span} THEN {i}" for i, (_since, span) in enumerate(spans)) + " END"
    source = (f"SELECT sp.span AS span, b.item_id AS item_id, b.seg AS seg, sum(b.g1) AS e1, sum(b.g2) AS e2, "  # nosec B608  # our own SQL
              f"sum(b.g3) AS e3 FROM ({buckets}) b JOIN desk_spans sp ON b.bucket <= {reach} "
              f"GROUP BY sp.span, b.item_id, b.seg")
    statement = text(_add_excess(cols, source, "x.span")).bindparams(
        *[bindparam(f"b{i}", type_=Date) for i in range(len(spans) - 1)])
    values: dict[str, Any] = {f"b{i}": since for i, (since, _span) in enumerate(spans[:-1])}
    if items is not None:
        values.update(after=items[0], upto=items[1])
    conn.execute(statement, values)


def advance(target: Session | Connection, *, today: date) -> bool:
    """Move each window's first day to where it is today: what left a window is taken out of it. False when the
    windows were already current."""
    conn = _connection(target)
    d = Dialect(conn.dialect.name)

    def stale_spans() -> dict[int, date]:
        stored = {int(span): as_date(since) for span, since in conn.execute(text("SELECT span, since FROM desk_spans"))}
        return {span: since for span, since in stored.items() if span != 0 and since < since_of(span, today)}

    stale = stale_spans()
    if not stale:
        return False
    if d.pg:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        stale = stale_spans()  # as they are now that no trigger is running
    st = state(conn)
    # A day's sums of factors: its counts, and what its organisations' revenue adds (from desk_org_days), in each
    # set kept: the current generation's, and the next one's while it is filled. Taken out of the next set for
    # every item: beyond the items filled it is garbage, which filling them overwrites.
    minus = ", ".join([*(f"{c} = desk_windows.{c} - x.{c}" for c in DAY_COUNTS),
                       *(f"{c} = desk_windows.{c} - x.n{k}" for cols in FACTOR_SETS
                         for k, c in zip("123", cols, strict=True))])
    kept = [] if st is None else [(st.current_set, CURRENT)] + (
        [(st.next_set, NEXT)] if st.next_through is not None else [])
    sums = ", ".join(f"sum({c}) AS {c}" for c in DAY_COUNTS)
    for span, old in stale.items():
        params = {"span": span, "old": old, "new": since_of(span, today)}
        conn.execute(_dated(
            f"UPDATE desk_windows SET {minus} FROM (SELECT item_id, seg, {sums} FROM desk_days "  # nosec B608  # our own SQL
            "WHERE day >= :old AND day < :new GROUP BY item_id, seg) x "
            "WHERE desk_windows.span = :span AND desk_windows.item_id = x.item_id AND desk_windows.seg = x.seg"),
            params)
        for cols, factor in kept:
            conn.execute(_dated(_add_excess(cols, _excess(d, "od.day >= :old AND od.day < :new", factor), ":span",
                                            "-")), params)
        conn.execute(_dated(
            "UPDATE desk_windows SET orgs = desk_windows.orgs - x.k, revenue = desk_windows.revenue - x.rev "
            "FROM (SELECT item_id, seg, count(*) AS k, sum(revenue) AS rev FROM desk_item_orgs "
            "WHERE latest_day >= :old AND latest_day < :new GROUP BY item_id, seg) x "
            "WHERE desk_windows.span = :span AND desk_windows.item_id = x.item_id AND desk_windows.seg = x.seg"),
            params)
        conn.execute(text("UPDATE desk_spans SET since = :new WHERE span = :span")
                     .bindparams(bindparam("new", type_=Date)), params)
    return True


def _dated(sql: str) -> Any:
    return text(sql).bindparams(bindparam("old", type_=Date), bindparam("new", type_=Date))


def as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


@dataclass(frozen=True, slots=True)
class Difference:
    table: str
    key: tuple[Any, ...]
    stored: tuple[Any, ...] | None
    recounted: tuple[Any, ...] | None


def _close(a: tuple[Any, ...] | None, b: tuple[Any, ...] | None) -> bool:
    if a is None or b is None:
        return a is b
    return all(math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-6) for x, y in zip(a, b, strict=True))


def _nonzero(rows: Iterable[Any], width: int) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in rows:
        key = tuple(as_date(k) if isinstance(k, (date, str)) else k for k in row[:width])
        values = tuple(row[width:])
        if any(abs(float(v or 0)) > 1e-6 for v in values):
            out[key] = tuple(v or 0 for v in values)
    return out


def _compare(table: str, stored: Mapping[tuple[Any, ...], tuple[Any, ...]],
             recounted: Mapping[tuple[Any, ...], tuple[Any, ...]]) -> list[Difference]:
    return [Difference(table, key, stored.get(key), recounted.get(key))
            for key in sorted(set(stored) | set(recounted), key=repr)
            if not _close(stored.get(key), recounted.get(key))]


def recount(target: Session | Connection) -> list[Difference]:
    """Recount every aggregate from the vote rows (with the windows' first days and the revenue factor as stored;
    while a next generation is filled, its sums of factors for the items filled so far too)
    and list where the stored aggregates differ. Empty when they are exact."""
    conn = _connection(target)
    d = Dialect(conn.dialect.name)
    days = _nonzero(conn.exec_driver_sql(
        f"SELECT d.item_id, d.day, d.seg, {d._sums()} FROM ({d.all_votes()}) d GROUP BY d.item_id, d.day, d.seg"), 3)  # nosec B608  # our own SQL
    pairs = {(r[0], r[1]): (r[2], as_date(r[3]), r[4], r[5])
             for r in conn.exec_driver_sql(d.pairs_select("1 = 1"))}
    spans = {span: as_date(since) for span, since in conn.execute(text("SELECT span, since FROM desk_spans"))}
    windows: dict[tuple[Any, ...], list[Any]] = {}
    for (item_id, day, seg), values in days.items():
        for span, since in spans.items():
            if day >= since:
                row = windows.setdefault((span, item_id, seg), [0] * len(WINDOW_SUMS) + [0, Decimal(0)])
                for i, value in enumerate(values):
                    row[i] += value
    for (item_id, _org), (_voters, latest, seg, revenue) in pairs.items():
        for span, since in spans.items():
            if latest >= since:
                row = windows.setdefault((span, item_id, seg), [0] * len(WINDOW_SUMS) + [0, Decimal(0)])
                row[-2] += 1
                row[-1] += Decimal(revenue or 0)
    pair_values = {k: (v[0], v[1].toordinal(), v[2], v[3] or 0) for k, v in pairs.items()}
    stored_pair_values = {(r[0], r[1]): (r[2], as_date(r[3]).toordinal(), r[4], r[5] or 0) for r in conn.exec_driver_sql(
        "SELECT item_id, organisation_id, voters, latest_day, seg, revenue FROM desk_item_orgs")}
    day_cols, org_cols = ", ".join(DAY_COUNTS), ", ".join(ORG_COUNTS)

    def kept(column: str) -> str:
        """A set of sums of factors where it is kept (the current generation's everywhere, the next one's up to the
        items filled), 0 elsewhere as in the recount (Dialect.set_factors)."""
        parity = next(n for n, cols in enumerate(FACTOR_SETS) if column in cols)
        return f"CASE WHEN (st.generation & 1) = {parity} OR w.item_id <= st.next_through THEN w.{column} ELSE 0.0 END"
    kept_sums = ", ".join([*(kept(c) if c[0] in "fg" else f"w.{c}" for c in WINDOW_SUMS), "w.orgs", "w.revenue"])
    day_values = {k: (v[0], v[1], v[2], v[6]) for k, v in days.items()}
    org_days = _nonzero(conn.exec_driver_sql(
        f"SELECT d.org, d.item_id, d.day, {', '.join(d._counts())} FROM ({d.all_votes()}) d "  # nosec B608  # our own SQL
        f"WHERE d.org IS NOT NULL GROUP BY d.org, d.item_id, d.day"), 3)
    return (
        _compare("desk_days", _nonzero(conn.exec_driver_sql(
            f"SELECT item_id, day, seg, {day_cols} FROM desk_days"), 3), day_values)  # nosec B608  # our own SQL
        + _compare("desk_org_days", _nonzero(conn.exec_driver_sql(
            f"SELECT organisation_id, item_id, day, {org_cols} FROM desk_org_days"), 3), org_days)  # nosec B608  # our own SQL
        + _compare("desk_item_orgs", stored_pair_values, pair_values)
        + _compare("desk_windows", _nonzero(conn.exec_driver_sql(
            f"SELECT w.span, w.item_id, w.seg, {kept_sums} FROM desk_windows w CROSS JOIN desk_state st"), 3),  # nosec B608  # our own SQL
            _nonzero(((*k, *v) for k, v in windows.items()), 3))
    )
