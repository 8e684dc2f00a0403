"""The seeded business schema of the test bed's ``shop`` database, and its faults.

Called by ``testbed.postgres.start`` (``seed``) once the server runs, and by e2e tests
(``inject_conversion_drop``) to break the business metrics after a chosen
"deployment time". Everything is generated inside PostgreSQL (``generate_series``),
in one transaction with ``setseed``: ~0.85 M rows in 10-20 seconds.

The data covers the 14 whole days before the seeding moment's day plus that day up to
the seeding moment (all times UTC). Each user has an engagement (the chance of being
active on a given day); an active user-day brings requests, sessions and feature uses
at times with a daily cycle (peak ~15:00, ~4x the quietest hour); weekends are 12%
quieter:

- ``users``                     25,000 accounts (country, plan);
- ``user_activity``             one row per request (``created_at``, ``user_id``,
                                ``activity_date``, endpoint, status, latency):
                                ~40k requests/day from ~5.8k daily actives;
- ``feature_usage``             ~8k uses/day of six features, plus ``smart_shuffle``,
                                launched 36 hours before seeding (``feature_launch_at``)
                                and ramping up over its first 12 hours;
- ``sessions``                  ~6.5k visits/day, ``converted`` for 3.5% of them;
- ``orders``                    one per converted session (96% ``paid``, 4% ``refunded``,
                                ~$35 median), ~$9k of revenue a day;
- ``experiments``, ``experiment_assignments``, ``experiment_conversions``: three A/B
  tests on 15,000 users each: ``checkout_redesign`` (B converts 12% vs A 10%, a real
  lift), ``search_ranking`` (no difference, 8% both) and ``onboarding_tips`` (equal
  rates but a 55/45 split where 50/50 was planned: a sample-ratio mismatch).

What tests assert is fixed by construction, whatever the date and time of seeding
(``tests/e2e/test_postgres.py`` seeds at chosen clocks to show it):

- the experiments' counts are exact (A 750 of 7,500 vs B 900 of 7,500, z = 3.9;
  600 of 7,500 both; 8,250 vs 6,750), drawn before anything that depends on the date;
- ``smart_shuffle`` has exactly 1,800 uses by exactly 1,200 users since its launch
  (1,694 uses by 1,160 users in the last 30 hours), at offsets from the launch;
- the established features take turns in a fixed cycle of twelve in time order, so in
  any window search has a third of their uses and playlists a quarter: search leads
  (about 3,000 to 4,100 uses in the 36 hours since the launch, depending on the
  weekday and hour) ahead of playlists and of smart_shuffle's 1,800;
- which sessions convert follows a low-discrepancy sequence in time order, so every
  period's conversion rate is 3.5% to within a few sessions, and "since deployment vs
  the previous equal period" is flat (ratios 0.99-1.01) until a fault is injected;
- daily actives differ between days only by the weekend factor (0.88) and sampling
  noise of about 1%.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import psycopg
from psycopg import sql

__all__ = ["FEATURE_LAUNCH_AGE", "TABLES", "inject_conversion_drop", "seed"]

#: Tables created by ``seed``, in creation order.
TABLES = (
    "users",
    "user_activity",
    "feature_usage",
    "sessions",
    "orders",
    "experiments",
    "experiment_assignments",
    "experiment_conversions",
)

#: How long before seeding the new feature ``smart_shuffle`` was launched.
FEATURE_LAUNCH_AGE = datetime.timedelta(hours=36)

_SEED = 0.4242  # setseed() takes a value in [-1, 1]

_PARAMS: dict[str, Any] = {
    "users": 25_000,
    "requests_per_active_day": 6.5,  # mean 1 + this
    "extra_sessions_per_active_day": 0.45,  # mean 1 + this
    "feature_uses_per_active_day": 2.0,
    "conversion_rate": 0.035,
    "launch_age": FEATURE_LAUNCH_AGE,
    "launch_uses": 1_800,
    "launch_users": 1_200,
    "experiment_users": 15_000,  # 60% of the users in each experiment
}

_SCHEMA = """
CREATE TABLE users (
    id          integer PRIMARY KEY,
    created_at  timestamptz NOT NULL,
    country     text NOT NULL,
    plan        text NOT NULL
);
CREATE TABLE user_activity (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       integer NOT NULL,
    created_at    timestamptz NOT NULL,
    activity_date date GENERATED ALWAYS AS ((created_at AT TIME ZONE 'UTC')::date) STORED,
    endpoint      text NOT NULL,
    status_code   smallint NOT NULL,
    latency_ms    integer NOT NULL
);
CREATE TABLE feature_usage (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    feature_name  text NOT NULL,
    user_id       integer NOT NULL,
    created_at    timestamptz NOT NULL
);
CREATE TABLE sessions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     integer NOT NULL,
    started_at  timestamptz NOT NULL,
    channel     text NOT NULL,
    converted   boolean NOT NULL
);
CREATE TABLE orders (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       integer NOT NULL,
    session_id    bigint NOT NULL,
    created_at    timestamptz NOT NULL,
    amount_cents  integer NOT NULL CHECK (amount_cents > 0),
    currency      text NOT NULL DEFAULT 'USD',
    status        text NOT NULL CHECK (status IN ('paid', 'refunded'))
);
CREATE TABLE experiments (
    name           text PRIMARY KEY,
    description    text NOT NULL,
    version        text NOT NULL,
    started_at     timestamptz NOT NULL,
    variants       text[] NOT NULL,
    planned_split  numeric[] NOT NULL
);
CREATE TABLE experiment_assignments (
    experiment   text NOT NULL,
    variant      text NOT NULL,
    user_id      integer NOT NULL,
    assigned_at  timestamptz NOT NULL,
    PRIMARY KEY (experiment, user_id)
);
CREATE TABLE experiment_conversions (
    experiment    text NOT NULL,
    user_id       integer NOT NULL,
    converted_at  timestamptz NOT NULL,
    value_cents   integer NOT NULL,
    PRIMARY KEY (experiment, user_id)
);
"""

# A time of day (as an interval) with a daily cycle: 35% spread evenly, 65% around
# 15:00 (sd 4.5 h), wrapped at midnight: the busiest hour gets ~4x the quietest one.
_TIME_OF_DAY = """
    (CASE WHEN random() < 0.35 THEN 24 * random()
          ELSE mod((39 + 4.5 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))
                   ::numeric, 24)::float8
     END) * interval '1 hour'
"""

# Each entry is one statement, run with ``_PARAMS`` and ``now`` (the seeding moment).
# Statements that draw from random() come first when their row count does not depend
# on the clock (users, experiments, the new feature's uses), so what they draw is the
# same whatever the date; the rest depend on the date only through which days are
# weekends and where ``now`` falls in its day, and every fact a test asserts holds by
# construction with a margin (see the module docstring).
_DATA = (
    """
    CREATE TEMP TABLE seed_days ON COMMIT DROP AS
    SELECT day, CASE WHEN extract(isodow FROM day) >= 6 THEN 0.88 ELSE 1 END AS factor
    FROM generate_series(date_trunc('day', %(now)s) - interval '14 days',
                         date_trunc('day', %(now)s), interval '1 day') AS day
    """,
    """
    INSERT INTO users (id, created_at, country, plan)
    SELECT id,
           %(now)s - interval '15 days' - random() * interval '700 days',
           (ARRAY['US','US','US','DE','GB','FR','BR','IN','JP','CA'])
               [1 + floor(random() * 10)::int],
           CASE WHEN random() < 0.22 THEN 'premium' ELSE 'free' END
    FROM generate_series(1, %(users)s) AS id
    """,
    # How likely each user is to show up on a weekday: most rarely, a few daily.
    """
    CREATE TEMP TABLE seed_users ON COMMIT DROP AS
    SELECT id, least(0.95, 0.02 + 0.75 * power(random(), 2.5)) AS engagement
    FROM users ORDER BY id
    """,
    """
    INSERT INTO experiments (name, description, version, started_at, variants, planned_split)
    VALUES
      ('checkout_redesign', 'One-page checkout', 'v1.0.0',
       date_trunc('hour', %(now)s) - interval '10 days', '{A,B}', '{0.5,0.5}'),
      ('search_ranking', 'Learned ranking for search results', 'v0.9.0',
       date_trunc('hour', %(now)s) - interval '12 days', '{A,B}', '{0.5,0.5}'),
      ('onboarding_tips', 'Tooltips during onboarding', 'v1.0.0',
       date_trunc('hour', %(now)s) - interval '7 days', '{A,B}', '{0.5,0.5}')
    """,
    """
    CREATE TEMP TABLE seed_experiments (name, b_share, rate_a, rate_b, value_cents)
    ON COMMIT DROP AS VALUES
      ('checkout_redesign', 0.50, 0.10, 0.12, 3500),
      ('search_ranking',    0.50, 0.08, 0.08, 1200),
      ('onboarding_tips',   0.45, 0.20, 0.20, 0)
    """,
    # Exactly experiment_share of the users take part in each experiment, exactly
    # b_share of them see B, and exactly rate_a / rate_b of each variant convert: which
    # users is random, how many is not.
    """
    INSERT INTO experiment_assignments (experiment, variant, user_id, assigned_at)
    SELECT name, CASE WHEN rank <= round(b_share * %(experiment_users)s) THEN 'B' ELSE 'A' END,
           id, started_at + random() * (%(now)s - started_at)
    FROM (
        SELECT e.name, p.b_share, e.started_at, u.id,
               row_number() OVER (PARTITION BY e.name ORDER BY random()) AS rank
        FROM experiments AS e JOIN seed_experiments AS p USING (name) CROSS JOIN users AS u
    ) AS ranked
    WHERE rank <= %(experiment_users)s
    ORDER BY name, id
    """,
    """
    INSERT INTO experiment_conversions (experiment, user_id, converted_at, value_cents)
    SELECT experiment, user_id, least(%(now)s, assigned_at + random() * interval '48 hours'),
           CASE WHEN value_cents = 0 THEN 0
                ELSE greatest(199, round(value_cents * (0.5 + random())))::int END
    FROM (
        SELECT a.experiment, a.user_id, a.assigned_at, p.value_cents,
               CASE a.variant WHEN 'A' THEN p.rate_a ELSE p.rate_b END AS rate,
               count(*) OVER (PARTITION BY a.experiment, a.variant) AS exposed,
               row_number() OVER (PARTITION BY a.experiment, a.variant ORDER BY random()) AS rank
        FROM experiment_assignments AS a JOIN seed_experiments AS p ON p.name = a.experiment
    ) AS ranked
    WHERE rank <= round(rate * exposed)
    ORDER BY experiment, user_id
    """,
    # The new feature: exactly launch_uses uses by exactly launch_users users, at times
    # after the launch whose density ramps up over the first 12 hours and then stays
    # flat to the seeding moment (inverse of F(t) = t^2/24 up to 12 h, then 6 + (t - 12),
    # over a total of 30); its counts in any window measured from the launch are fixed.
    """
    INSERT INTO feature_usage (feature_name, user_id, created_at)
    SELECT 'smart_shuffle', adopters.id,
           %(now)s - %(launch_age)s + interval '1 hour'
               * CASE WHEN area < 6 THEN sqrt(24 * area) ELSE 6 + area END
    FROM (
        SELECT n, 30 * random() AS area FROM generate_series(0, %(launch_uses)s - 1) AS n
    ) AS uses
    JOIN (
        SELECT id, row_number() OVER (ORDER BY random()) - 1 AS slot FROM users
    ) AS adopters ON adopters.slot = uses.n %% %(launch_users)s
    ORDER BY 3
    """,
    # One row per user and day the user was active, with that day's volumes.
    """
    CREATE TEMP TABLE seed_active ON COMMIT DROP AS
    SELECT d.day, u.id AS user_id,
           1 + floor(-ln(1 - random()) * %(requests_per_active_day)s)::int AS requests,
           1 + floor(-ln(1 - random()) * %(extra_sessions_per_active_day)s)::int AS sessions,
           floor(-ln(1 - random()) * %(feature_uses_per_active_day)s)::int AS feature_uses
    FROM seed_days AS d CROSS JOIN seed_users AS u
    WHERE random() < u.engagement * d.factor
    ORDER BY d.day, u.id
    """,
    f"""
    INSERT INTO user_activity (user_id, created_at, endpoint, status_code, latency_ms)
    SELECT user_id, ts, endpoint, status_code, latency_ms FROM (
        SELECT a.user_id,
               a.day + {_TIME_OF_DAY} AS ts,
               (ARRAY['/api/tracks','/api/tracks','/api/tracks','/api/search','/api/search',
                      '/api/playlists','/api/playlists','/api/recommendations','/api/profile',
                      '/api/checkout'])[1 + floor(random() * 10)::int] AS endpoint,
               CASE WHEN random() < 0.975 THEN 200
                    ELSE (ARRAY[400, 401, 404, 404, 500])[1 + floor(random() * 5)::int]
               END AS status_code,
               round(20 - 60 * ln(1 - random()))::int AS latency_ms
        FROM seed_active AS a, generate_series(1, a.requests)
    ) AS generated
    WHERE ts <= %(now)s
    ORDER BY ts
    """,
    # The established features take turns in a fixed cycle of twelve uses in time
    # order, so any run of consecutive uses holds each feature's share to within a
    # few uses: search always leads (4 in 12), then playlists (3 in 12).
    f"""
    INSERT INTO feature_usage (feature_name, user_id, created_at)
    SELECT (ARRAY['search','playlists','search','downloads','playlists','search',
                  'share','search','playlists','downloads','lyrics','export'])
               [1 + (row_number() OVER (ORDER BY ts) - 1) %% 12],
           user_id, ts
    FROM (
        SELECT a.user_id, a.day + {_TIME_OF_DAY} AS ts
        FROM seed_active AS a, generate_series(1, a.feature_uses)
    ) AS generated
    WHERE ts <= %(now)s
    ORDER BY ts
    """,
    # Which sessions convert is a low-discrepancy sequence in time order (the golden
    # ratio's multiples modulo 1 below conversion_rate), so every period's conversion
    # rate is conversion_rate to within a few sessions: no chance drop between periods.
    f"""
    INSERT INTO sessions (user_id, started_at, channel, converted)
    SELECT user_id, ts, channel,
           mod(row_number() OVER (ORDER BY ts) * 0.6180339887498948482, 1) < %(conversion_rate)s
    FROM (
        SELECT a.user_id,
               a.day + {_TIME_OF_DAY} AS ts,
               (ARRAY['organic','organic','organic','paid','paid','email','direct'])
                   [1 + floor(random() * 7)::int] AS channel
        FROM seed_active AS a, generate_series(1, a.sessions)
    ) AS generated
    WHERE ts <= %(now)s
    ORDER BY ts
    """,
    """
    INSERT INTO orders (user_id, session_id, created_at, amount_cents, status)
    SELECT user_id, id,
           least(%(now)s, started_at + interval '1 minute' + random() * interval '20 minutes'),
           greatest(199, round(exp(ln(3500) + 0.6 * sqrt(-2 * ln(1 - random()))
                                               * cos(2 * pi() * random()))))::int,
           CASE WHEN random() < 0.96 THEN 'paid' ELSE 'refunded' END
    FROM sessions
    WHERE converted
    ORDER BY id
    """,
)

_CONSTRAINTS = """
CREATE INDEX ON user_activity (created_at);
CREATE INDEX ON user_activity (activity_date, user_id);
CREATE INDEX ON feature_usage (created_at, feature_name);
CREATE INDEX ON sessions (started_at);
CREATE INDEX ON orders (created_at);
CREATE INDEX ON orders (session_id);
CREATE INDEX ON experiment_conversions (experiment, converted_at);
ALTER TABLE user_activity ADD FOREIGN KEY (user_id) REFERENCES users (id);
ALTER TABLE feature_usage ADD FOREIGN KEY (user_id) REFERENCES users (id);
ALTER TABLE sessions ADD FOREIGN KEY (user_id) REFERENCES users (id);
ALTER TABLE orders ADD FOREIGN KEY (user_id) REFERENCES users (id);
ALTER TABLE orders ADD FOREIGN KEY (session_id) REFERENCES sessions (id) ON DELETE CASCADE;
ALTER TABLE experiment_assignments ADD FOREIGN KEY (experiment) REFERENCES experiments (name);
ALTER TABLE experiment_assignments ADD FOREIGN KEY (user_id) REFERENCES users (id);
ALTER TABLE experiment_conversions
    ADD FOREIGN KEY (experiment, user_id) REFERENCES experiment_assignments (experiment, user_id);
"""


def seed(dsn: str, now: datetime.datetime | None = None) -> dict[str, Any]:
    """Create and fill the business schema in the (empty) database at ``dsn``.

    The data ends at ``now``, the seeding moment: the server's clock unless given (tests
    seed at chosen dates and times to show that the facts hold whatever the clock says).
    Returns a JSON-ready summary: the seeding moment, the new feature's launch time,
    the row count of every table and the seconds it took.
    """
    if now is not None and now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    began = time.monotonic()
    with psycopg.connect(dsn) as conn:
        conn.execute("SET LOCAL TimeZone = 'UTC'")
        conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")  # keeps setseed's order
        if now is None:
            row = conn.execute("SELECT now()").fetchone()
            assert row is not None
            now = row[0]
        assert now is not None
        seeded_at = now.astimezone(datetime.UTC)
        conn.execute("SELECT setseed(%s)", (_SEED,))
        conn.execute(_SCHEMA)
        for statement in _DATA:
            conn.execute(statement, {**_PARAMS, "now": seeded_at})
        conn.execute(_CONSTRAINTS)
        counts = {table: _count(conn, table) for table in TABLES}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")
    return {
        "seeded_at": seeded_at.isoformat(),
        "feature_launch_at": (seeded_at - FEATURE_LAUNCH_AGE).isoformat(),
        "row_counts": counts,
        "seconds": round(time.monotonic() - began, 2),
    }


def inject_conversion_drop(dsn: str, since: datetime.datetime, factor: float) -> int:
    """Keep only ``factor`` of the conversions of sessions started at or after ``since``.

    The other converted sessions become unconverted and lose their orders, so the
    conversion rate and the revenue after ``since`` both fall to about ``factor``
    times their level. Which sessions are hit is fixed (a hash of the session id), so
    repeated runs give the same numbers. ``dsn`` must be able to write (the admin
    DSN). Returns how many conversions were removed.
    """
    if not 0.0 <= factor <= 1.0:
        raise ValueError(f"factor must be within [0, 1], got {factor!r}")
    if since.tzinfo is None:
        raise ValueError("since must be timezone-aware")
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(
            """
            WITH dropped AS (
                UPDATE sessions SET converted = false
                WHERE started_at >= %(since)s AND converted
                  AND (hashint8(id) & 2147483647)::float8 / 2147483648 >= %(factor)s
                RETURNING id
            ), deleted AS (
                DELETE FROM orders WHERE session_id IN (SELECT id FROM dropped)
            )
            SELECT count(*) FROM dropped
            """,
            {"since": since, "factor": factor},
        )
        row = cur.fetchone()
    return int(row[0]) if row is not None else 0


def _count(conn: psycopg.Connection[Any], table: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
    row = conn.execute(query).fetchone()
    return int(row[0]) if row is not None else 0
