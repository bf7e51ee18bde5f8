"""SQL source connector against a real PostgreSQL server on loopback, the embedded SQLite demo and silver.

* a module-scoped PostgreSQL 15 server (tests/pg_server.py) holds a Suite4-like sociaal-domein
  database (schema ``sociaal``: ``wmo_aanvraag``, ``client``, the append-only ``berichtenlog``) that
  the connector reads as a read-only role;
* incremental extraction on a modification column: the first run lands everything up to the end
  of the logical day, the next day only the rows changed in its window (time zone included);
  a re-run of a date lands byte-identical parts; key-range mode re-reads the same range on a rerun;
* values are JSON-safe (NULL, NUMERIC as exact strings, timestamp/timestamptz/date, bytea, boolean);
* a wrong password and an unreachable server give typed errors that never show the password;
  the session is read-only even for an account that could write;
* the Suite4 demo database (SQLite) through the connector's default configuration, bronze and the
  AOM_AANVRAAGWMOJEUGD silver mapping with SCD2 versions and pseudonymised client keys.
"""
from __future__ import annotations

import hashlib
import json
import socket
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from connectors.base import ExtractWindow
from connectors.errors import SourceAuthError, SourceConfigError, SourceError, SourceUnavailableError
from connectors.sql import SqlAuthError, SqlConnector, Suite4Connector, json_value, url_from_connection
from ggm_lakehouse.landing import iter_batch_records
from pg_server import PostgresNotAvailable, start_postgres
from ggm_lakehouse.pipeline import connector_from_connection

DAY1 = date(2026, 3, 10)  # CET (UTC+1): the logical day is [DAY1 01:00, DAY1+1 01:00) in local time
DAY2 = DAY1 + timedelta(days=1)
READER = "ggm_reader"
READER_PASSWORD = "Lees-Alleen-7f3a9c"
WRITER_PASSWORD = "Schrijver-2b8e4d"
BSNS = ["111222333", "123456782", "999993653", "999990627", "999991036"]


def local(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pg():
    try:
        with start_postgres() as server:
            yield server
    except PostgresNotAvailable as missing:
        pytest.fail(str(missing))


@pytest.fixture(scope="module")
def suite4_db(pg):
    """The Suite4-like database with a read-only role (SELECT only) and a writer role (full rights)."""
    pg.execute("CREATE DATABASE suite4")
    pg.execute(
        f"CREATE ROLE {READER} LOGIN PASSWORD '{READER_PASSWORD}'",
        f"CREATE ROLE ggm_writer LOGIN PASSWORD '{WRITER_PASSWORD}'",
    )
    pg.execute(
        "CREATE SCHEMA sociaal",
        """CREATE TABLE sociaal.client (
               client_id integer PRIMARY KEY, bsn char(9) NOT NULL, wijkteam text)""",
        """CREATE TABLE sociaal.wmo_aanvraag (
               id bigint PRIMARY KEY,
               zaaknummer text NOT NULL UNIQUE,
               client_id integer NOT NULL REFERENCES sociaal.client,
               product text NOT NULL,
               status text NOT NULL,
               ontvangen_op date NOT NULL,
               eigen_bijdrage numeric(10, 2),
               spoed boolean NOT NULL DEFAULT false,
               bijlage bytea,
               geregistreerd_op timestamptz NOT NULL,
               gewijzigd_op timestamp NOT NULL)""",
        """CREATE TABLE sociaal.berichtenlog (
               volgnummer bigint PRIMARY KEY, berichttype text NOT NULL, ontvangen timestamp NOT NULL)""",
        # A function that writes: a SELECT calling it must still not change anything.
        """CREATE FUNCTION sociaal.wis_client(nummer integer) RETURNS integer LANGUAGE sql AS
               $$ DELETE FROM sociaal.client WHERE client_id = nummer RETURNING client_id $$""",
        f"GRANT USAGE ON SCHEMA sociaal TO {READER}, ggm_writer",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA sociaal TO {READER}",
        "GRANT ALL ON ALL TABLES IN SCHEMA sociaal TO ggm_writer",
        database="suite4",
    )
    pg.execute(*[f"INSERT INTO sociaal.client VALUES ({n}, '{bsn}', 'Wijkteam {'Noord' if n % 2 else 'Zuid'}')"
                 for n, bsn in enumerate(BSNS, start=1)], database="suite4")
    return pg


def execute(pg, *statements: str, **params) -> None:
    engine = sa.create_engine(pg.url(database="suite4"))
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement), params)
    finally:
        engine.dispose()


def connector(pg, tables: dict, **config) -> SqlConnector:
    return SqlConnector({
        "url": sa.engine.URL.create("postgresql+psycopg", username=READER, host=pg.host, port=pg.port,
                                    database="suite4").render_as_string(),
        "password": READER_PASSWORD,
        "tables": tables,
        **config,
    })


AANVRAGEN = {"aanvragen": {"table": "wmo_aanvraag", "schema": "sociaal", "incremental": {"column": "gewijzigd_op"}}}


def records(batch) -> list[dict]:
    return list(iter_batch_records(batch))


def part_digests(batch) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in batch.part_paths]


@pytest.fixture(scope="module")
def filled(suite4_db):
    """Five aanvragen: four changed on DAY1 (one at 00:30 on DAY2 local, still DAY1's UTC day), one before."""
    insert = ("INSERT INTO sociaal.wmo_aanvraag (id, zaaknummer, client_id, product, status, ontvangen_op, "
              "eigen_bijdrage, spoed, bijlage, geregistreerd_op, gewijzigd_op) VALUES "
              "(:id, :zaak, :client, :product, :status, :ontvangen, :bijdrage, :spoed, :bijlage, :geregistreerd, :gewijzigd)")
    rows = [
        (1, 1, "Hulp bij het huishouden", "Afgehandeld", date(2026, 2, 2), Decimal("21.00"), local(DAY1 - timedelta(days=20), 9)),
        (2, 2, "Begeleiding individueel", "Onderzoek", date(2026, 3, 2), None, local(DAY1, 10, 15)),
        (3, 3, "Woonvoorziening", "Aangemeld", DAY1, Decimal("1234567.89"), local(DAY1, 16, 45)),
        (4, 4, "Rolstoelvoorziening", "Aangemeld", DAY1, Decimal("0.50"), local(DAY2, 0, 30)),
        (5, 5, "Jeugdhulp ambulant", "Aangemeld", DAY1, None, local(DAY1, 1, 0)),
    ]
    engine = sa.create_engine(suite4_db.url(database="suite4"))
    with engine.begin() as conn:
        for ident, client, product, status, ontvangen, bijdrage, gewijzigd in rows:
            conn.execute(sa.text(insert), {
                "id": ident, "zaak": f"SD-2026-{ident:06d}", "client": client, "product": product, "status": status,
                "ontvangen": ontvangen, "bijdrage": bijdrage, "spoed": ident == 3,
                "bijlage": b"\x00\xffPDF" if ident == 2 else None,
                "geregistreerd": datetime.fromisoformat(f"{ontvangen.isoformat()}T08:00:00+01:00"),
                "gewijzigd": gewijzigd,
            })
    engine.dispose()
    return suite4_db


# --------------------------------------------------------------------------- incremental extraction


def test_first_run_lands_everything_up_to_the_end_of_the_day_then_only_changed_rows(filled, tmp_path):
    sql = connector(filled, AANVRAGEN, batch_size=2)
    day1 = sql.extract(ExtractWindow.for_day(DAY1, "day1"), tmp_path)[0]

    # Five rows with batch_size 2: three parts, ordered by modification time then key.
    assert [p["record_count"] for p in day1.manifest["parts"]] == [2, 2, 1]
    assert [r["id"] for r in records(day1)] == [1, 5, 2, 3, 4]
    assert day1.manifest["record_path"] == "records" and day1.manifest["source"] == "sql"
    watermark = day1.manifest["extra"]["watermark"]
    # The UTC logical day ends at 01:00 local time in March (CET).
    assert watermark == {"version": 1, "mode": "column", "column": "gewijzigd_op", "lower": None,
                         "upper": {"type": "datetime", "value": "2026-03-11T01:00:00"}}
    assert READER_PASSWORD not in (day1.path / "_MANIFEST.json").read_text()

    # Day 2: one update inside the window, one insert, one update after the window (DAY2+1 local).
    execute(filled,
            "UPDATE sociaal.wmo_aanvraag SET status = 'Onderzoek', gewijzigd_op = :t1 WHERE id = 3",
            "UPDATE sociaal.wmo_aanvraag SET status = 'Afgehandeld', gewijzigd_op = :t3 WHERE id = 2",
            "INSERT INTO sociaal.wmo_aanvraag (id, zaaknummer, client_id, product, status, ontvangen_op, "
            "geregistreerd_op, gewijzigd_op) VALUES (6, 'SD-2026-000006', 1, 'Vervoersvoorziening', 'Aangemeld', "
            ":d2, :t2z, :t2)",
            t1=local(DAY2, 9, 5), t2=local(DAY2, 14, 0), t2z=datetime.fromisoformat("2026-03-11T13:00:00+00:00"),
            t3=local(DAY2 + timedelta(days=1), 1, 0), d2=DAY2)
    try:
        day2 = sql.extract(ExtractWindow.for_day(DAY2, "day2"), tmp_path)[0]
        changed = records(day2)
        assert [(r["id"], r["status"]) for r in changed] == [(3, "Onderzoek"), (6, "Aangemeld")]
        assert day2.manifest["extra"]["watermark"]["lower"] == watermark["upper"]
        assert day2.manifest["parts"][0]["request"]["params"]["lower"] == "2026-03-11T01:00:00"

        # Re-running day 2 (new attempt) lands byte-identical parts; the later change stays out.
        rerun = sql.extract(ExtractWindow.for_day(DAY2, "day2-rerun"), tmp_path)[0]
        assert part_digests(rerun) == part_digests(day2)
        assert rerun.manifest["extra"]["watermark"] == day2.manifest["extra"]["watermark"]
        # So does re-running day 1 after day 2 exists: its window is fixed by what precedes it.
        again = sql.extract(ExtractWindow.for_day(DAY1, "day1-rerun"), tmp_path)[0]
        assert [r["id"] for r in records(again)] == [1, 5, 4]  # 2 and 3 changed again later: they moved on

        # The change at 01:00 local on DAY2+1 is exactly the start of the next UTC day: it belongs there.
        day3 = sql.extract(ExtractWindow.for_day(DAY2 + timedelta(days=1), "day3"), tmp_path)[0]
        assert [r["id"] for r in records(day3)] == [2]
        # A day without changes lands a complete batch without records (one empty part documents the question).
        day4 = sql.extract(ExtractWindow.for_day(DAY2 + timedelta(days=2), "day4"), tmp_path)[0]
        assert day4.record_count == 0 and json.loads(day4.part_paths[0].read_bytes()) == {"records": []}
    finally:
        execute(filled, "DELETE FROM sociaal.wmo_aanvraag WHERE id = 6",
                "UPDATE sociaal.wmo_aanvraag SET status = 'Aangemeld', gewijzigd_op = :t WHERE id = 3",
                "UPDATE sociaal.wmo_aanvraag SET status = 'Onderzoek', gewijzigd_op = :t2 WHERE id = 2",
                t=local(DAY1, 16, 45), t2=local(DAY1, 10, 15))


def test_values_are_json_safe_and_exact(filled, tmp_path):
    batch = connector(filled, AANVRAGEN).extract(ExtractWindow.for_day(DAY1, "types"), tmp_path)[0]
    by_id = {r["id"]: r for r in records(batch)}
    assert by_id[3]["eigen_bijdrage"] == "1234567.89"  # NUMERIC stays exact, as a string
    assert by_id[1]["eigen_bijdrage"] == "21.00"
    assert by_id[2]["eigen_bijdrage"] is None and by_id[2]["bijlage"] == "AP9QREY="  # base64 of b"\x00\xffPDF"
    assert by_id[3]["spoed"] is True and by_id[2]["spoed"] is False
    assert by_id[3]["ontvangen_op"] == "2026-03-10"
    assert by_id[3]["gewijzigd_op"] == "2026-03-10T16:45:00"  # naive: as the application stored it
    assert by_id[3]["geregistreerd_op"] == "2026-03-10T07:00:00+00:00"  # timestamptz: in UTC
    assert json_value(float("nan")) == "nan" and json_value(Decimal("1E+2")) == "1E+2"


def test_query_dataset_joins_tables_and_reads_incrementally(filled, tmp_path):
    query = """SELECT a.id, a.zaaknummer, c.bsn, a.product, a.gewijzigd_op
               FROM sociaal.wmo_aanvraag a JOIN sociaal.client c ON c.client_id = a.client_id"""
    sql = connector(filled, {"aanvragen_met_bsn": {"query": query, "key": ["id"],
                                                    "incremental": {"column": "gewijzigd_op"}}})
    batch = sql.extract(ExtractWindow.for_day(DAY1, "query"), tmp_path)[0]
    rows = records(batch)
    assert [(r["id"], r["bsn"]) for r in rows] == [(1, BSNS[0]), (5, BSNS[4]), (2, BSNS[1]), (3, BSNS[2]), (4, BSNS[3])]
    assert batch.manifest["endpoint"] == "SELECT query"
    with pytest.raises(SourceConfigError, match="one SELECT statement"):
        connector(filled, {"x": {"query": "DELETE FROM sociaal.client", "key": ["client_id"]}})


def test_key_range_mode_rereads_the_recorded_range(filled, tmp_path):
    tables = {"berichten": {"table": "berichtenlog", "schema": "sociaal", "incremental": {"key": "volgnummer"}}}
    sql = connector(filled, tables)
    execute(filled, *[f"INSERT INTO sociaal.berichtenlog VALUES ({n}, 'WMO301', '2026-03-10 09:0{n}:00')"
                      for n in (1, 2, 3)])
    try:
        first = sql.extract(ExtractWindow.for_day(DAY1, "k1"), tmp_path)[0]
        assert [r["volgnummer"] for r in records(first)] == [1, 2, 3]
        assert first.manifest["extra"]["watermark"]["upper"] == {"type": "int", "value": 3}

        execute(filled, *[f"INSERT INTO sociaal.berichtenlog VALUES ({n}, 'WMO305', '2026-03-11 10:00:00')"
                          for n in (4, 5)])
        rerun = sql.extract(ExtractWindow.for_day(DAY1, "k1-rerun"), tmp_path)[0]
        assert part_digests(rerun) == part_digests(first)  # the recorded range 1..3, not the new maximum

        second = sql.extract(ExtractWindow.for_day(DAY2, "k2"), tmp_path)[0]
        assert [r["volgnummer"] for r in records(second)] == [4, 5]
        execute(filled, "INSERT INTO sociaal.berichtenlog VALUES (6, 'WMO307', '2026-03-12 08:00:00')")
        assert [r["volgnummer"] for r in records(sql.extract(ExtractWindow.for_day(DAY2, "k2-rerun"), tmp_path)[0])] == [4, 5]
        assert [r["volgnummer"] for r in records(sql.extract(ExtractWindow.for_day(DAY2 + timedelta(days=1), "k3"),
                                                             tmp_path)[0])] == [6]
    finally:
        execute(filled, "DELETE FROM sociaal.berichtenlog")


def test_full_mode_reads_the_whole_table_ordered_by_the_primary_key(filled, tmp_path):
    batch = connector(filled, {"clienten": {"table": "client", "schema": "sociaal"}}).extract(
        ExtractWindow.for_day(DAY1, "full"), tmp_path)[0]
    assert [r["client_id"] for r in records(batch)] == [1, 2, 3, 4, 5]
    assert batch.manifest["extra"] == {"watermark": {"version": 1, "mode": "full"}, "key": ["client_id"],
                                       "source_timezone": "Europe/Amsterdam"}


# --------------------------------------------------------------------------- errors and read-only


def test_wrong_password_is_a_clear_auth_error_without_the_password(filled, tmp_path):
    wrong = "Fout-Wachtwoord-123"
    sql = connector(filled, AANVRAGEN, password=wrong)
    with pytest.raises(SqlAuthError) as error:
        sql.extract(ExtractWindow.for_day(DAY1, "auth"), tmp_path)
    assert isinstance(error.value, SourceAuthError)
    message = str(error.value)
    assert message.startswith("sql: CONNECT postgresql+psycopg://ggm_reader@127.0.0.1:")
    assert "refused the login" in message
    assert "password authentication failed" in message
    assert wrong not in message and wrong not in repr(sql) and READER_PASSWORD not in repr(connector(filled, AANVRAGEN))
    # Also when the password is inside the URL itself.
    inline = SqlConnector({"url": filled.url(READER, wrong, "suite4"), "tables": AANVRAGEN})
    with pytest.raises(SqlAuthError) as inline_error:
        inline.extract(ExtractWindow.for_day(DAY1, "auth2"), tmp_path)
    assert wrong not in str(inline_error.value) and wrong not in repr(inline)
    assert not (tmp_path / "sql" / "aanvragen" / "logical_date=2026-03-10" / "run_id=auth" / "_MANIFEST.json").exists()


def test_unreachable_server_is_a_source_unavailable_error(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    sql = SqlConnector({"url": f"postgresql+psycopg://{READER}@127.0.0.1:{closed_port}/suite4",
                        "password": READER_PASSWORD, "tables": AANVRAGEN, "connect_timeout": 5})
    with pytest.raises(SourceUnavailableError) as error:
        sql.extract(ExtractWindow.for_day(DAY1, "down"), tmp_path)
    assert f"127.0.0.1:{closed_port}" in str(error.value) and READER_PASSWORD not in str(error.value)


def test_session_is_read_only_even_for_an_account_that_may_write(filled, tmp_path):
    # A SELECT calling a writing function passes the "one SELECT" check; the read-only session refuses it.
    query = "SELECT sociaal.wis_client(5) AS client_id"
    sql = SqlConnector({"url": filled.url("ggm_writer", WRITER_PASSWORD, "suite4"),
                        "tables": {"sneaky": {"query": query, "key": ["client_id"]}}})
    with pytest.raises(SourceError, match="read-only transaction"):
        sql.extract(ExtractWindow.for_day(DAY1, "ro"), tmp_path)
    engine = sa.create_engine(filled.url(database="suite4"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sociaal.client")).scalar() == 5
    engine.dispose()


@pytest.mark.parametrize("query", [
    "SELECT sociaal.wis_proef(2) AS id",
    # Turning the transaction read-write from inside the query comes too late.
    "SELECT set_config('transaction_read_only', 'off', true) AS uit, sociaal.wis_proef(3) AS id",
], ids=["writing-function", "set-config-first"])
def test_connect_args_cannot_make_the_session_writable(filled, tmp_path, query):
    # connect_args may carry the account's own libpq options; they replace the session default
    # (default_transaction_read_only), so the transaction itself must be made read-only.
    execute(filled,
            "CREATE TABLE IF NOT EXISTS sociaal.schrijfproef (id integer PRIMARY KEY)",
            "INSERT INTO sociaal.schrijfproef VALUES (1), (2), (3) ON CONFLICT DO NOTHING",
            """CREATE OR REPLACE FUNCTION sociaal.wis_proef(nummer integer) RETURNS integer LANGUAGE sql AS
                   $$ DELETE FROM sociaal.schrijfproef WHERE id = nummer RETURNING id $$""",
            "GRANT ALL ON sociaal.schrijfproef TO ggm_writer")
    sql = SqlConnector({"url": filled.url("ggm_writer", WRITER_PASSWORD, "suite4"),
                        "connect_args": {"options": "-c search_path=sociaal,public"},
                        "tables": {"sneaky": {"query": query, "key": ["id"]}}})
    with pytest.raises(SourceError, match="read-only transaction|read-write mode must be set before any query"):
        sql.extract(ExtractWindow.for_day(DAY1, "ro-args"), tmp_path)
    engine = sa.create_engine(filled.url(database="suite4"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sociaal.schrijfproef")).scalar() == 3
    engine.dispose()


def _sqlite_source(path) -> None:
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE client (id integer PRIMARY KEY, naam text NOT NULL)")
        db.executemany("INSERT INTO client VALUES (?, ?)", [(1, "Jansen"), (2, "de Vries"), (3, "Bakker")])
    db.close()


@pytest.mark.parametrize("url", [
    "sqlite:///{path}",
    "sqlite:///file:{path}?mode=rwc&uri=true",  # a URI that asks for read-write (and create)
    "sqlite:///file:{path}?uri=true",
], ids=["path", "uri-mode-rwc", "uri-without-mode"])
def test_sqlite_sessions_refuse_writes_whatever_the_url_asks(tmp_path, url):
    import sqlite3

    path = tmp_path / "bron.sqlite"
    _sqlite_source(path)
    sql = SqlConnector({"url": url.format(path=path), "tables": {"clienten": {"table": "client"}}})
    # The session extract uses: a statement that writes is refused by SQLite itself.
    with sql._session() as connection:
        for statement in ("DELETE FROM client", "UPDATE client SET naam = 'x'", "CREATE TABLE lek (a)"):
            with pytest.raises(sa.exc.OperationalError, match="readonly database"):
                connection.execute(sa.text(statement))
    batch = sql.extract(ExtractWindow.for_day(DAY1, "sqlite-ro"), tmp_path / "landing")[0]
    assert batch.record_count == 3
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM client").fetchone() == (3,)
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'lek'").fetchall() == []
    db.close()


def test_crafted_query_cannot_write_to_a_sqlite_source(tmp_path):
    import sqlite3

    path = tmp_path / "bron.sqlite"
    _sqlite_source(path)
    # Starts with WITH and has no ';', so it passes the early check; the database still refuses to write.
    sql = SqlConnector({"url": f"sqlite:///file:{path}?mode=rw&uri=true",
                        "tables": {"sneaky": {"query": "WITH x AS (SELECT 1) DELETE FROM client", "key": ["id"]}}})
    with pytest.raises(SourceError):
        sql.extract(ExtractWindow.for_day(DAY1, "sqlite-crafted"), tmp_path / "landing")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM client").fetchone() == (3,)
    db.close()


@pytest.mark.parametrize("url, dialect", [
    ("mssql+pyodbc://ggm_lezer@sql01:1433/Suite4?ApplicationIntent=ReadOnly", "mssql"),
    ("mssql+pymssql://ggm_lezer@sql01:1433/Suite4", "mssql"),
    ("mysql+pymysql://ggm_lezer@db01/suite4", "mysql"),
], ids=["mssql-odbc", "mssql-pymssql", "mysql"])
def test_dialects_without_a_read_only_guarantee_are_refused_at_configuration(url, dialect, monkeypatch):
    with pytest.raises(SourceConfigError) as refused:
        SqlConnector({"url": url, "password": "geheim-wachtwoord", "tables": AANVRAGEN})
    message = str(refused.value)
    assert f"database dialect {dialect!r} is refused" in message
    assert "read-only on the database side (postgresql, oracle, sqlite)" in message
    assert "What to do: read the data from a PostgreSQL or Oracle copy" in message and "drop zone" in message
    assert ("ApplicationIntent=ReadOnly only routes to a secondary" in message) == (dialect == "mssql")
    assert "geheim-wachtwoord" not in message
    # Through an Airflow connection too: the URL is built, then refused with the same message.
    monkeypatch.setenv("AIRFLOW_CONN_GGM_SQL_MSSQL", json.dumps({
        "conn_type": "mssql", "host": "sql01", "port": 1433, "schema": "Suite4", "login": "ggm_lezer",
        "password": "geheim-wachtwoord", "extra": {"tables": AANVRAGEN, "ApplicationIntent": "ReadOnly"}}))
    with pytest.raises(SourceConfigError, match="database dialect 'mssql' is refused"):
        connector_from_connection(SqlConnector, "ggm_sql_mssql")


def test_unknown_table_is_a_configuration_error(filled, tmp_path):
    sql = connector(filled, {"x": {"table": "bestaat_niet", "schema": "sociaal", "key": ["id"]}})
    with pytest.raises(SourceConfigError, match="bestaat_niet"):
        sql.extract(ExtractWindow.for_day(DAY1, "missing"), tmp_path)


# --------------------------------------------------------------------------- Airflow connections


def test_airflow_connection_maps_to_a_url_and_a_secret_password(filled, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GGM_SQL_TEST", json.dumps({
        "conn_type": "postgres", "host": filled.host, "port": filled.port, "schema": "suite4",
        "login": READER, "password": READER_PASSWORD,
        "extra": {"tables": AANVRAGEN, "source_timezone": "Europe/Amsterdam", "sslmode": "disable"},
    }))
    sql = connector_from_connection(SqlConnector, "ggm_sql_test")
    assert sql.config["url"] == f"postgresql+psycopg://{READER}@127.0.0.1:{filled.port}/suite4?sslmode=disable"
    assert sql.config["password"] == READER_PASSWORD and READER_PASSWORD not in repr(sql)
    batch = sql.extract(ExtractWindow.for_day(DAY1, "airflow"), tmp_path)[0]
    assert batch.record_count == 5


def test_connection_urls_for_production_databases():
    assert url_from_connection("oracle", "db.gemeente.nl", 1521, None, "GGM_LEZER",
                               {"service_name": "SUITE4PRD"}) == "oracle+oracledb://GGM_LEZER@db.gemeente.nl:1521?service_name=SUITE4PRD"
    assert url_from_connection("mssql", "sql01", 1433, "Suite4", "ggm_lezer", {"ApplicationIntent": "ReadOnly"}) == (
        "mssql+pyodbc://ggm_lezer@sql01:1433/Suite4?ApplicationIntent=ReadOnly&driver=ODBC+Driver+18+for+SQL+Server")
    assert url_from_connection("mssql", "sql01", 1433, "Suite4", "ggm_lezer",
                               {"sqlalchemy_scheme": "mssql+pymssql"}) == "mssql+pymssql://ggm_lezer@sql01:1433/Suite4"
    assert url_from_connection("sqlite", "/data/suite4.sqlite", None, None, None) == "sqlite:////data/suite4.sqlite"
    assert url_from_connection(None, "postgresql+psycopg://lezer:geheim@db:5432/suite4", None, None, None,
                               {"sslmode": "require"}) == "postgresql+psycopg://lezer@db:5432/suite4?sslmode=require"
    with pytest.raises(SourceConfigError, match="unsupported Airflow connection type 'ftp'"):
        url_from_connection("ftp", "host", None, None, None)


# --------------------------------------------------------------------------- Suite4 demo (SQLite) and silver


def test_suite4_demo_database_is_deterministic_and_read_through_the_default_config(data_root, tmp_path):
    from demo_gemeente.generator import DemoWorld
    from demo_gemeente.suite4 import suite4_rows, write_suite4_database
    from connectors.sql import suite4_demo_database_path

    world = DemoWorld(1000, seed=5)
    muni = world.at(DAY1)
    first = write_suite4_database(muni, tmp_path / "a" / "suite4.sqlite", DAY1)
    second = write_suite4_database(muni, tmp_path / "b" / "suite4.sqlite", DAY1)
    assert first.read_bytes() == second.read_bytes()
    rows = suite4_rows(muni, DAY1)
    assert rows and {r[3] for r in rows} <= {"WMO", "JW"} and {r[2] for r in rows} <= set(muni.persons)

    # Missing database: a clear error, and SQLite must not create an empty file.
    missing = Suite4Connector()
    with pytest.raises(SourceUnavailableError, match="does not exist"):
        missing.extract(ExtractWindow.for_day(DAY1, "none"), tmp_path / "landing")
    assert not suite4_demo_database_path().exists()

    write_suite4_database(muni, suite4_demo_database_path(), DAY1)
    batch = Suite4Connector().extract(ExtractWindow.for_day(DAY1, "demo"), tmp_path / "landing")[0]
    assert batch.source == "suite4" and batch.dataset == "aanvragen"
    landed = records(batch)
    assert sorted(r["id"] for r in landed) == [r[0] for r in rows]
    assert all(r["gewijzigd_op"] < "2026-03-11 01:00:00" for r in landed)


def _day_with_changes(world, after: date) -> tuple[date, list[tuple]]:
    """The first day after ``after`` on which an existing aanvraag changed, and every row changed since ``after``."""
    from demo_gemeente.suite4 import suite4_rows

    before = {r[0]: r for r in suite4_rows(world.at(after), after)}
    for offset in range(1, 15):
        day = after + timedelta(days=offset)
        changed = [r for r in suite4_rows(world.at(day), day) if before.get(r[0]) != r]
        if any(r[0] in before for r in changed):
            return day, changed
    raise AssertionError("no Suite4 changes in two weeks")


def test_suite4_bronze_and_silver_give_aanvragen_with_history(spark, data_root, ggm_tables):
    from demo_gemeente.generator import DemoWorld
    from demo_gemeente.suite4 import write_suite4_database
    from connectors.sql import suite4_demo_database_path
    from ggm_lakehouse.config import landing_root, table_path
    from ggm_lakehouse.pseudonym import load_key, pseudonymise
    from jobs import bronze, silver
    from jobs.silver import surrogate_key_value

    world = DemoWorld(1000, seed=5)
    day1 = DAY1 + timedelta(days=7)
    day2, changed = _day_with_changes(world, day1)
    for day in (day1, day2):
        write_suite4_database(world.at(day), suite4_demo_database_path(), day)
        batch = Suite4Connector().extract(ExtractWindow.for_day(day, f"suite4-{day}"), landing_root())[0]
        landed = bronze.run(spark, day, f"suite4-{day}", source="suite4")["tables"]
        assert landed["suite4_aanvragen"]["rows"] == batch.record_count
        report = silver.run(spark, day, f"suite4-{day}", tables=["AOM_AANVRAAGWMOJEUGD"])["tables"]
        assert report["AOM_AANVRAAGWMOJEUGD"]["quarantined"] == {}, report
    # Day 2's batch holds exactly the aanvragen whose row changed that day.
    assert sorted(r["zaaknummer"] for r in records(batch)) == sorted(r[1] for r in changed)

    frame = spark.read.format("delta").load(str(table_path("silver", "AOM_AANVRAAGWMOJEUGD")))
    known = set(ggm_tables["AOM_AANVRAAGWMOJEUGD"]["columns"])
    assert {c for c in frame.columns if not c.startswith("DWH_")} <= known
    rows = frame.collect()
    key = load_key()
    # Every changed row was changed after day 1 (nothing of day 1's rows moves without a new gewijzigd_op).
    assert all(day1.isoformat() < r[18][:10] <= day2.isoformat() for r in changed)
    moved = next(r for r in changed if r[8] <= day1.isoformat())
    aanvraag_id = surrogate_key_value("AOM_AANVRAAGWMOJEUGD", moved[1])
    versions = sorted((r for r in rows if r["AANVRAAGOFMELDING_ID"] == aanvraag_id),
                      key=lambda r: r["DWH_DATUMTIJDGELDIGVANAF"])
    assert len(versions) == 2
    assert versions[0]["DWH_DATUMTIJDGELDIGTOTMET"].date() == day2 and versions[1]["DWH_DATUMTIJDGELDIGTOTMET"] is None
    assert versions[1]["HEEFT_CLIENT_ID"] == surrogate_key_value("CLIENT", pseudonymise(moved[2], key))
    assert versions[1]["DATUMSTARTAANVRAAG"] == date.fromisoformat(moved[8])
    assert versions[1]["MAXIMALEDOORLOOPTIJD"].date() == date.fromisoformat(moved[9])
    # No clear BSN anywhere in silver.
    bsns = {r[2] for r in changed}
    assert not any(str(v) in bsns for r in rows for v in r.asDict().values())
    # An aanvraag that did not change keeps one open version (incremental load closes nothing).
    changed_ids = {surrogate_key_value("AOM_AANVRAAGWMOJEUGD", r[1]) for r in changed}
    untouched = [r for r in rows if r["AANVRAAGOFMELDING_ID"] not in changed_ids]
    assert untouched and all(r["DWH_DATUMTIJDGELDIGTOTMET"] is None for r in untouched)
