"""Build: silver → gold policy marts.

Each mart is declared in one reviewed file, ``gold_marts/<mart>.yaml``: the silver tables it
reads, one Spark SQL query returning one row per counted unit (a client, a melding, a booking),
its dimensions and its measures. The engine here does the rest the same way for every mart:

* silver is read *as of* the logical date (the SCD2 versions valid on that day), so rebuilding an
  earlier date gives the figures of that date;
* cells and totals come from one GROUPING SETS aggregation over the area hierarchy (gemeente,
  wijk, buurt) and every dimension that publishes a 'Totaal';
* marts derived from persons hide every cell whose person count is below the threshold (default
  5, env ``GGM_SUPPRESSION_THRESHOLD``), then hide further cells until no published total lets a
  hidden cell be recomputed (secondary suppression);
* area marts carry CBS kerncijfers as denominators (inwoners, huishoudens, per 1,000 inwoners);
* ``gold/mart_status`` records each mart's freshness and the silver versions it was built from.

A mart's partition for the logical date is replaced only when its content changed, so
re-running a day leaves gold untouched.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from datetime import date, datetime, time
from typing import Callable

from ggm_lakehouse.lake import LakeTable

DEFAULT_SUPPRESSION_THRESHOLD = 5
AGE_BANDS = ((0, 14, "0-14"), (15, 24, "15-24"), (25, 44, "25-44"), (45, 64, "45-64"), (65, 200, "65+"))


class GoldError(RuntimeError):
    """A mart cannot be built; the message names the mart and the cause."""


def suppression_threshold() -> int:
    """Smallest count that may be published (configurable, default 5)."""
    value = int(os.environ.get("GGM_SUPPRESSION_THRESHOLD", DEFAULT_SUPPRESSION_THRESHOLD))
    if value < 1:
        raise GoldError("GGM_SUPPRESSION_THRESHOLD must be at least 1")
    return value


def silver_as_of(spark, table: str, peildatum: date):
    """The versions of a silver table valid on ``peildatum`` (one row per object).

    A table whose source has not delivered yet but is allowed to skip days (a mapping with
    ``on_missing_batch: keep``, such as a weekly partner file) reads as empty: no deliveries
    means nothing to count, not a broken mart.
    """
    from pyspark.sql import functions as F

    source = LakeTable("silver", table)
    if not source.exists(spark):
        mapping = _awaited_mapping(spark, table)
        if mapping is None:
            raise GoldError(f"silver table {table} does not exist at {source.location}")
        return _empty_silver_frame(spark, mapping)
    moment = F.lit(datetime.combine(peildatum, time.min)).cast("timestamp")
    frame = source.read(spark)
    return frame.where(
        (F.col("DWH_DATUMTIJDGELDIGVANAF") <= moment)
        & (F.col("DWH_DATUMTIJDGELDIGTOTMET").isNull() | (F.col("DWH_DATUMTIJDGELDIGTOTMET") > moment))
    )


@lru_cache(maxsize=4)
def _mappings(directory) -> tuple:
    """The silver mappings of ``directory``, parsed once per process (every mart input asks)."""
    from jobs.mappings import load_all

    return tuple(load_all(directory))


def _awaited_mapping(spark, table: str):
    """The mapping of ``table`` when it may legitimately not exist yet: its source may skip days
    (``on_missing_batch: keep``) and the same source system already delivered other tables."""
    from jobs.mappings import mappings_dir

    mappings = _mappings(mappings_dir())
    mapping = next((m for m in mappings if m.target == table and m.on_missing_batch == "keep"), None)
    if mapping is None:
        return None
    siblings = [m.target for m in mappings if m.bronsysteem == mapping.bronsysteem and m.target != table]
    return mapping if any(LakeTable("silver", t).exists(spark) for t in siblings) else None


def _empty_silver_frame(spark, mapping):
    """An empty frame with the columns the silver table will have once its first delivery lands."""
    from pyspark.sql import types as T

    fields = [T.StructField(mapping.surrogate_key, T.LongType())]
    for column in mapping.columns:
        kind = "bigint" if column.key_of else (column.type or "string")
        fields.append(T.StructField(column.name, T._parse_datatype_string(kind)))
    fields += [T.StructField("DWH_BRONSYSTEEM", T.StringType()), T.StructField("DWH_DATUMTIJDGELADEN", T.TimestampType()),
               T.StructField("DWH_DATUMTIJDGELDIGVANAF", T.TimestampType()),
               T.StructField("DWH_DATUMTIJDGELDIGTOTMET", T.TimestampType())]
    return spark.createDataFrame([], T.StructType(fields))


def _exists_or_awaited(spark, table: str) -> bool:
    return LakeTable("silver", table).exists(spark) or _awaited_mapping(spark, table) is not None


def suppress_small_cells(frame, count_column: str, threshold: int):
    """Hide counts below ``threshold``: the count becomes null and ``onderdrukt`` true."""
    from pyspark.sql import functions as F

    small = F.col(count_column) < threshold
    return frame.withColumn("onderdrukt", small).withColumn(
        count_column, F.when(small, F.lit(None).cast("int")).otherwise(F.col(count_column).cast("int"))
    )


def age_band(age_column):
    """CBS age band label for an age in years."""
    from pyspark.sql import functions as F

    expr = None
    for low, high, label in AGE_BANDS:
        condition = age_column.between(low, high)
        expr = F.when(condition, label) if expr is None else expr.when(condition, label)
    return expr.otherwise("onbekend")


def residents_with_household(spark, peildatum: date):
    """Residents on ``peildatum`` with age, address, buurt/wijk and the type of their household.

    A household is everyone registered at the same address (a "woonhuishouden", as CBS counts
    them). Its type follows from adults, minors and whether two adults are each other's partner.
    """
    from pyspark.sql import functions as F

    ingeschreven = silver_as_of(spark, "INGESCHREVENPERSOON", peildatum).where("INGEZETENE")
    personen = silver_as_of(spark, "NATUURLIJKPERSOON", peildatum).where("NOT coalesce(INDICATIEOVERLEDEN, false)")
    adressen = silver_as_of(spark, "NUMMERAANDUIDING", peildatum)
    buurten = silver_as_of(spark, "BUURT", peildatum)
    wijken = silver_as_of(spark, "WIJK", peildatum)

    peil = F.lit(peildatum)
    residents = (
        ingeschreven.alias("i")
        .join(personen.alias("p"), F.col("i.NATUURLIJKPERSOON_ID") == F.col("p.NATUURLIJKPERSOON_ID"))
        .select(
            F.col("p.NATUURLIJKPERSOON_ID").alias("NATUURLIJKPERSOON_ID"),
            F.col("p.BURGERSERVICENUMMER").alias("pseudonym"),
            F.col("i.PARTNERID").alias("partner"),
            F.col("i.HEEFT_ALS_ADRES_NUMMERAANDUIDING_ID").alias("adres"),
            F.floor(F.months_between(peil, F.col("p.DATUMGEBOORTE")) / 12).cast("int").alias("leeftijd"),
        )
    )
    at_address = residents.alias("a").join(
        residents.select(F.col("adres").alias("b_adres"), F.col("pseudonym").alias("b_pseudonym")).alias("b"),
        (F.col("a.adres") == F.col("b_adres")) & (F.col("a.partner") == F.col("b_pseudonym")),
        "left",
    )
    per_household = at_address.groupBy("adres").agg(
        F.count("*").alias("personen"),
        F.sum(F.when(F.col("leeftijd") >= 18, 1).otherwise(0)).alias("volwassenen"),
        F.sum(F.when(F.col("leeftijd") < 18, 1).otherwise(0)).alias("minderjarigen"),
        F.max(F.col("b_pseudonym").isNotNull().cast("int")).alias("met_partner"),
    )
    huishoudtype = (
        F.when(F.col("personen") == 1, "eenpersoonshuishouden")
        .when((F.col("met_partner") == 1) & (F.col("minderjarigen") == 0), "paar zonder kinderen")
        .when(F.col("met_partner") == 1, "paar met kinderen")
        .when((F.col("volwassenen") == 1) & (F.col("minderjarigen") > 0), "eenouderhuishouden")
        .otherwise("overig meerpersoonshuishouden")
    )
    per_household = per_household.withColumn("huishoudtype", huishoudtype)
    area = (
        adressen.select(F.col("NUMMERAANDUIDING_ID").alias("adres"), F.col("LIGT_IN_BUURT_ID"))
        .join(buurten.select("BUURT_ID", "CODE", "NAAM", "LIGT_IN_WIJK_ID"), F.col("LIGT_IN_BUURT_ID") == F.col("BUURT_ID"), "left")
        .join(wijken.select("WIJK_ID", "WIJKCODE", "WIJKNAAM"), F.col("LIGT_IN_WIJK_ID") == F.col("WIJK_ID"), "left")
        .select(
            "adres",
            F.coalesce("WIJKCODE", F.lit("onbekend")).alias("wijkcode"),
            F.coalesce("WIJKNAAM", F.lit("onbekend")).alias("wijknaam"),
            F.coalesce("CODE", F.lit("onbekend")).alias("buurtcode"),
            F.coalesce("NAAM", F.lit("onbekend")).alias("buurtnaam"),
        )
    )
    return (
        residents.join(per_household.select("adres", "huishoudtype"), "adres", "left")
        .join(area, "adres", "left")
        .withColumn("huishouden", F.col("adres"))
    )


def build_inwoners_per_buurt(spark, peildatum: date):
    """Residents per wijk and buurt by age band and household type, with small-cell suppression."""
    from pyspark.sql import functions as F

    residents = residents_with_household(spark, peildatum)
    counts = (
        residents.withColumn("leeftijdsklasse", age_band(F.col("leeftijd")))
        .groupBy("wijkcode", "wijknaam", "buurtcode", "buurtnaam", "leeftijdsklasse", "huishoudtype")
        .agg(F.count("*").alias("aantal_inwoners"))
    )
    counts = suppress_small_cells(counts, "aantal_inwoners", suppression_threshold())
    return counts.select(
        F.lit(peildatum).alias("peildatum"),
        "wijkcode",
        "wijknaam",
        "buurtcode",
        "buurtnaam",
        "leeftijdsklasse",
        "huishoudtype",
        "aantal_inwoners",
        "onderdrukt",
    ).orderBy("wijkcode", "buurtcode", "leeftijdsklasse", "huishoudtype")




# --------------------------------------------------------------------------------------------
# Declarative marts: one reviewed YAML file per mart in gold_marts/
# --------------------------------------------------------------------------------------------

DOMAINS = ("demografie", "sociaal_domein", "financien", "veiligheid", "subsidies", "bedrijfsvoering", "schuldhulp")
AGGREGATES = {
    "count": "count({van})",
    "count_distinct": "count(DISTINCT {van})",
    "sum": "sum({van})",
    "avg": "round(avg({van}), 2)",
    "median": "round(median({van}), 2)",
    "min": "min({van})",
    "max": "max({van})",
}
TOTAL = "Totaal"
UNKNOWN = "onbekend"
AREA_LEVELS = ("gemeente", "wijk", "buurt")
# The engine's own views and the silver tables they read: a mart that uses one depends on these.
HELPER_VIEWS = {
    "INWONERS": ("INGESCHREVENPERSOON", "NATUURLIJKPERSOON", "NUMMERAANDUIDING", "BUURT", "WIJK"),
    "PEILDATUM": (),
}
AREA_INPUTS = ("BUURT", "WIJK", "CBS_KERNCIJFERS")
STATUS_TABLE = "mart_status"
_DEFINITION_KEYS = {"mart", "domein", "titel", "beschrijving", "eigenaar", "bronnen", "eenheden", "gebied",
                    "dimensies", "maten", "personen", "per_1000_inwoners"}
_NAME = __import__("re").compile(r"^[a-z][a-z0-9_]*$")


def marts_dir():
    """Where the mart definitions live: ``GGM_GOLD_MARTS_DIR`` or ``<checkout>/gold_marts``."""
    from pathlib import Path

    from ggm_lakehouse.config import project_root

    return Path(os.environ.get("GGM_GOLD_MARTS_DIR", project_root() / "gold_marts"))


@dataclass(frozen=True)
class Dimension:
    """A cell dimension of a mart; ``totaal`` publishes a 'Totaal' row across its values."""

    kolom: str
    totaal: bool = True


@dataclass(frozen=True)
class Measure:
    """One published figure per cell: ``functie`` over unit column ``van``."""

    kolom: str
    functie: str
    van: str | None = None

    def sql(self) -> str:
        return AGGREGATES[self.functie].format(van=f"`{self.van}`" if self.van else "1") + f" AS `{self.kolom}`"


@dataclass(frozen=True)
class MartDefinition:
    """A gold mart as its reviewed definition file states it (``gold_marts/<mart>.yaml``)."""

    mart: str
    domein: str
    titel: str
    beschrijving: str
    eigenaar: str
    bronnen: tuple[str, ...]
    eenheden: str
    gebied: str | None
    dimensies: tuple[Dimension, ...]
    maten: tuple[Measure, ...]
    personen: str | None
    per_1000_inwoners: tuple[str, ...]
    path: str
    sha256: str
    # Further person counts that are suppressed on their own (blanked in a published cell when small).
    ook_personen: tuple[str, ...] = ()

    @property
    def __doc__(self) -> str:  # the catalog shows a mart's description like a builder's docstring
        return self.beschrijving

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every silver table the mart reads: the declared ones, those behind helper views, and the area tables."""
        import re

        tables = [t for t in self.bronnen if t not in HELPER_VIEWS]
        for view, needs in HELPER_VIEWS.items():
            if view in self.bronnen or re.search(rf"\b{view}\b", self.eenheden):
                tables += needs
        if self.gebied:
            tables += AREA_INPUTS
        return tuple(dict.fromkeys(tables))

    def __call__(self, spark, peildatum: date):
        return build_mart(spark, self, peildatum)


def _definition_error(path, message: str) -> GoldError:
    return GoldError(f"gold mart definition {path}: {message}")


def load_mart_definition(path) -> MartDefinition:
    """Read and check one definition file; errors name the file and the key."""
    import hashlib

    import yaml

    text = path.read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise _definition_error(path, "expected a mapping at the top level")
    unknown = set(raw) - _DEFINITION_KEYS
    if unknown:
        raise _definition_error(path, f"unknown keys {sorted(unknown)}; allowed: {sorted(_DEFINITION_KEYS)}")
    for key in ("mart", "domein", "titel", "beschrijving", "bronnen", "eenheden", "maten"):
        if not raw.get(key):
            raise _definition_error(path, f"'{key}' is required")
    mart = str(raw["mart"])
    if not _NAME.match(mart) or mart == STATUS_TABLE:
        raise _definition_error(path, f"mart name {mart!r} must be snake_case and not {STATUS_TABLE!r}")
    if path.stem != mart:
        raise _definition_error(path, f"file name must be {mart}.yaml")
    if raw["domein"] not in DOMAINS:
        raise _definition_error(path, f"domein {raw['domein']!r} is not one of {list(DOMAINS)}")
    gebied = raw.get("gebied")
    gebied = None if gebied in (None, "none", "geen") else gebied
    if gebied not in (None, "buurt", "wijk"):
        raise _definition_error(path, f"gebied must be buurt, wijk or none, not {gebied!r}")
    dimensies = []
    for item in raw.get("dimensies") or []:
        if not isinstance(item, dict) or not item.get("kolom") or set(item) - {"kolom", "totaal"}:
            raise _definition_error(path, f"dimensie {item!r} needs 'kolom' and optionally 'totaal'")
        dimensies.append(Dimension(str(item["kolom"]), bool(item.get("totaal", True))))
    maten = []
    for item in raw["maten"]:
        if not isinstance(item, dict) or set(item) - {"kolom", "functie", "van"} or not item.get("kolom"):
            raise _definition_error(path, f"maat {item!r} needs 'kolom', 'functie' and (except for count) 'van'")
        if item.get("functie") not in AGGREGATES:
            raise _definition_error(path, f"maat {item['kolom']}: functie must be one of {sorted(AGGREGATES)}")
        if item["functie"] != "count" and not item.get("van"):
            raise _definition_error(path, f"maat {item['kolom']}: 'van' names the unit column to aggregate")
        maten.append(Measure(str(item["kolom"]), item["functie"], item.get("van")))
    names = [d.kolom for d in dimensies] + [m.kolom for m in maten]
    reserved = {"peildatum", "gebiedsniveau", "gebiedscode", "gebiedsnaam", "wijkcode", "buurtcode", "inwoners",
                "huishoudens", "onderdrukt", "onderdrukking"}
    clashes = sorted(set(names) & reserved) + sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise _definition_error(path, f"column names {clashes} are reserved or repeated")
    measure_names = {m.kolom for m in maten}
    # personen: one count, or a list whose first count decides whether a cell is hidden and whose
    # further counts are hidden on their own (a small sub-count inside a published cell).
    personen_list = raw.get("personen")
    personen_list = [] if personen_list is None else [personen_list] if isinstance(personen_list, str) else list(personen_list)
    for personen in personen_list:
        if personen not in measure_names:
            raise _definition_error(path, f"personen {personen!r} must name one of the maten")
        if next(m for m in maten if m.kolom == personen).functie not in ("count", "count_distinct"):
            raise _definition_error(path, f"personen {personen!r} must be a count or count_distinct")
    personen = personen_list[0] if personen_list else None
    per_1000 = tuple(raw.get("per_1000_inwoners") or ())
    if per_1000 and not gebied:
        raise _definition_error(path, "per_1000_inwoners needs a gebied (inwoners are per area)")
    if set(per_1000) - measure_names:
        raise _definition_error(path, f"per_1000_inwoners {sorted(set(per_1000) - measure_names)} are not maten")
    return MartDefinition(
        mart=mart, domein=raw["domein"], titel=str(raw["titel"]), beschrijving=" ".join(str(raw["beschrijving"]).split()),
        eigenaar=str(raw.get("eigenaar") or ""), bronnen=tuple(str(b).upper() for b in raw["bronnen"]),
        eenheden=str(raw["eenheden"]), gebied=gebied, dimensies=tuple(dimensies), maten=tuple(maten),
        personen=personen, per_1000_inwoners=per_1000, path=str(path),
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), ook_personen=tuple(personen_list[1:]),
    )


def load_mart_definitions(directory=None) -> dict[str, MartDefinition]:
    """Every mart definition in ``directory`` (default: ``marts_dir()``), by mart name."""
    directory = directory or marts_dir()
    definitions = {}
    for path in sorted(directory.glob("*.yaml")):
        definition = load_mart_definition(path)
        definitions[definition.mart] = definition
    return definitions


def register_views(spark, tables, peildatum: date) -> None:
    """Register each silver table as a temp view of its GGM name holding the versions valid on ``peildatum``,
    plus the helper views INWONERS and PEILDATUM."""
    for table in tables:
        silver_as_of(spark, table, peildatum).createOrReplaceTempView(table)
    spark.createDataFrame([(peildatum,)], "peildatum DATE").createOrReplaceTempView("PEILDATUM")
    if all(LakeTable("silver", t).exists(spark) for t in HELPER_VIEWS["INWONERS"]):
        residents_with_household(spark, peildatum).drop("partner").createOrReplaceTempView("INWONERS")


def _area_lookup(spark, peildatum: date):
    """buurtcode → wijk and names, and the gemeente's code and name (from the buurtcodes and CBS)."""
    from pyspark.sql import functions as F

    buurten = silver_as_of(spark, "BUURT", peildatum).alias("b").join(
        silver_as_of(spark, "WIJK", peildatum).alias("w"), F.col("b.LIGT_IN_WIJK_ID") == F.col("w.WIJK_ID"), "left"
    ).select(
        F.col("b.CODE").alias("buurtcode"), F.col("b.NAAM").alias("buurtnaam"),
        F.coalesce(F.col("w.WIJKCODE"), F.lit(UNKNOWN)).alias("wijkcode"),
        F.coalesce(F.col("w.WIJKNAAM"), F.lit(UNKNOWN)).alias("wijknaam"),
    ).collect()
    names = {("buurt", r["buurtcode"]): r["buurtnaam"] for r in buurten}
    names.update({("wijk", r["wijkcode"]): r["wijknaam"] for r in buurten})
    parents = {r["buurtcode"]: r["wijkcode"] for r in buurten}
    codes = sorted(r["buurtcode"] for r in buurten if r["buurtcode"])
    gemeentecode = f"GM{codes[0][2:6]}" if codes and codes[0].startswith("BU") else "gemeente"
    cbs = {}
    if LakeTable("silver", "CBS_KERNCIJFERS").exists(spark):
        for row in silver_as_of(spark, "CBS_KERNCIJFERS", peildatum).select(
            "GEBIEDSCODE", "GEBIEDSSOORT", "GEMEENTENAAM", "AANTALINWONERS", "AANTALHUISHOUDENS"
        ).collect():
            cbs[row["GEBIEDSCODE"]] = row
    gemeentenaam = cbs[gemeentecode]["GEMEENTENAAM"] if gemeentecode in cbs else "Gemeente"
    names[("gemeente", gemeentecode)] = gemeentenaam or "Gemeente"
    return parents, names, gemeentecode, cbs


def _aggregate_sql(definition: MartDefinition) -> str:
    """GROUPING SETS over the area hierarchy and every dimension that publishes totals."""
    from itertools import product

    trend = [d.kolom for d in definition.dimensies if not d.totaal]
    totalled = [d.kolom for d in definition.dimensies if d.totaal]
    area_sets = {None: [[]], "wijk": [[], ["wijkcode"]], "buurt": [[], ["wijkcode"], ["wijkcode", "buurtcode"]]}
    area_sets = area_sets[definition.gebied]
    sets = []
    for area in area_sets:
        for choice in product([True, False], repeat=len(totalled)):
            sets.append(area + trend + [c for c, keep in zip(totalled, choice) if keep])
    area_columns = {None: [], "wijk": ["wijkcode"], "buurt": ["wijkcode", "buurtcode"]}[definition.gebied]
    keys = area_columns + trend + totalled
    grouping = ", ".join("(" + ", ".join(f"`{c}`" for c in s) + ")" for s in sets)
    selected = [f"`{k}`" for k in keys] + [f"grouping(`{k}`) AS `_g_{k}`" for k in keys]
    selected += [m.sql() for m in definition.maten]
    return f"SELECT {', '.join(selected)} FROM _units GROUP BY GROUPING SETS ({grouping})"


def secondary_suppression(relations: list[tuple], primary: set, person_count: dict) -> dict:
    """Hide further cells until no published total reveals a hidden cell.

    ``relations`` are (total cell, [component cells]) groups in which the total is (at most) the
    sum of its components. A group with exactly one hidden member would let anyone recompute it
    (total minus the published components, or the sum of the components), so another member is
    hidden: the smallest published component by person count (ties by key, for a deterministic
    result), or the total when no component is left. Repeats until every group is safe.
    Returns each hidden cell's reason: 'primair' or 'secundair'.
    """
    reasons = {cell: "primair" for cell in primary}
    membership: dict = {}
    for index, (total, components) in enumerate(relations):
        for cell in (total, *components):
            membership.setdefault(cell, []).append(index)
    pending = set(range(len(relations)))
    while pending:
        index = min(pending)
        pending.discard(index)
        total, components = relations[index]
        members = [total, *components]
        hidden = [c for c in members if c in reasons]
        if len(hidden) != 1:
            continue
        candidates = sorted((c for c in components if c not in reasons), key=lambda c: (person_count.get(c) or 0, repr(c)))
        extra = candidates[0] if candidates else (total if total not in reasons else None)
        if extra is None:
            continue
        reasons[extra] = "secundair"
        pending.update(membership.get(extra, ()))
    return reasons


def _relations(keys: list[tuple], key_names: list[str], definition: MartDefinition, parents: dict) -> list[tuple]:
    """Each published total with the cells it sums, along every totalled dimension and the area hierarchy."""
    positions = {name: i for i, name in enumerate(key_names)}
    existing = set(keys)
    groups: dict = {}

    def add(parent, child):
        if parent in existing:
            groups.setdefault(parent, {}).setdefault(axis, []).append(child)

    for key in keys:
        for dimension in definition.dimensies:
            if not dimension.totaal:
                continue
            axis = dimension.kolom
            i = positions[axis]
            if key[i] != TOTAL:
                add(key[:i] + (TOTAL,) + key[i + 1:], key)
        if definition.gebied:
            axis = "gebied"
            level, code = key[0], key[1]
            if level == "buurt":
                add(("wijk", parents.get(code, UNKNOWN)) + key[2:], key)
            elif level == "wijk":
                add(("gemeente", None) + key[2:], key)
    return [(parent, children) for parent, axes in groups.items() for children in axes.values()]


def build_mart(spark, definition: MartDefinition, peildatum: date):
    """The mart's rows for ``peildatum``: cells and totals, suppressed, with CBS denominators."""
    from pyspark.sql import types as T

    missing = [t for t in definition.inputs if not _exists_or_awaited(spark, t)]
    if missing:
        raise GoldError(f"mart {definition.mart}: silver tables {missing} do not exist yet")
    register_views(spark, definition.inputs, peildatum)
    try:
        units = spark.sql(definition.eenheden)
    except Exception as exc:
        raise GoldError(f"mart {definition.mart} ({definition.path}): the eenheden query fails: {exc}") from exc
    area_column = {None: None, "wijk": "wijkcode", "buurt": "buurtcode"}[definition.gebied]
    needed = [d.kolom for d in definition.dimensies] + [m.van for m in definition.maten if m.van]
    needed += [area_column] if area_column else []
    absent = sorted(set(needed) - set(units.columns))
    if absent:
        raise GoldError(f"mart {definition.mart} ({definition.path}): the eenheden query returns no column(s) {absent}")

    parents, names, gemeentecode, cbs = _area_lookup(spark, peildatum) if definition.gebied else ({}, {}, None, {})
    from pyspark.sql import functions as F

    prepared = units
    for dimension in definition.dimensies:
        prepared = prepared.withColumn(dimension.kolom, F.coalesce(F.col(dimension.kolom).cast("string"), F.lit(UNKNOWN)))
    if definition.gebied == "buurt":
        lookup = spark.createDataFrame(sorted(parents.items()), "_buurt STRING, _wijk STRING")
        prepared = (
            prepared.withColumn("buurtcode", F.coalesce(F.col("buurtcode"), F.lit(UNKNOWN)))
            .join(F.broadcast(lookup), F.col("buurtcode") == F.col("_buurt"), "left")
            .withColumn("wijkcode", F.coalesce(F.col("_wijk"), F.lit(UNKNOWN)))
            .withColumn("buurtcode", F.when(F.col("_buurt").isNull(), F.lit(UNKNOWN)).otherwise(F.col("buurtcode")))
            .drop("_buurt", "_wijk")
        )
    elif definition.gebied == "wijk":
        known = set(parents.values())
        prepared = prepared.withColumn(
            "wijkcode", F.when(F.col("wijkcode").isin(*sorted(known)), F.col("wijkcode")).otherwise(F.lit(UNKNOWN))
        )
    prepared.createOrReplaceTempView("_units")
    aggregate = spark.sql(_aggregate_sql(definition))
    aggregated = aggregate.collect()

    dims = [d.kolom for d in definition.dimensies]
    measure_names = [m.kolom for m in definition.maten]
    cells: dict = {}
    for row in aggregated:
        if definition.gebied == "buurt":
            area = ("gemeente", None) if row["_g_wijkcode"] else ("wijk", row["wijkcode"]) if row["_g_buurtcode"] else ("buurt", row["buurtcode"])
        elif definition.gebied == "wijk":
            area = ("gemeente", None) if row["_g_wijkcode"] else ("wijk", row["wijkcode"])
        else:
            area = ()
        key = area + tuple(TOTAL if row[f"_g_{d}"] else row[d] for d in dims)
        cells[key] = {m: row[m] for m in measure_names}
    keys = sorted(cells, key=repr)
    key_names = (["gebiedsniveau", "gebiedscode"] if definition.gebied else []) + dims
    threshold = suppression_threshold()
    reasons: dict = {}
    hidden_measures: dict = {}  # further person counts hidden inside published cells
    if definition.personen:
        relations = _relations(keys, key_names, definition, parents)
        counts = {k: cells[k][definition.personen] or 0 for k in keys}
        primary = {k for k in keys if counts[k] < threshold}
        reasons = secondary_suppression(relations, primary, counts)
        for measure in definition.ook_personen:
            sub_counts = {k: cells[k][measure] or 0 for k in keys}
            # Zero is published (it reveals no one); a small positive count is hidden, with the same
            # secondary rule so that the measure's own totals cannot give it away.
            sub_primary = set(reasons) | {k for k in keys if 0 < sub_counts[k] < threshold}
            for key in secondary_suppression(relations, sub_primary, sub_counts):
                hidden_measures.setdefault(key, set()).add(measure)

    measure_types = {f.name: f.dataType for f in aggregate.schema.fields}
    fields = [T.StructField("peildatum", T.DateType(), False)]
    if definition.gebied:
        fields += [T.StructField(n, T.StringType()) for n in ("gebiedsniveau", "gebiedscode", "gebiedsnaam", "wijkcode")]
    fields += [T.StructField(d, T.StringType()) for d in dims]
    fields += [T.StructField(m, measure_types[m]) for m in measure_names]
    if definition.gebied:
        fields += [T.StructField("inwoners", T.LongType()), T.StructField("huishoudens", T.LongType())]
        fields += [T.StructField(f"{m}_per_1000_inwoners", T.DoubleType()) for m in definition.per_1000_inwoners]
    fields += [T.StructField("onderdrukt", T.BooleanType(), False), T.StructField("onderdrukking", T.StringType())]

    rows = []
    for key in keys:
        reason = reasons.get(key)
        values = {m: (None if reason or m in hidden_measures.get(key, ()) else cells[key][m]) for m in measure_names}
        record = [peildatum]
        if definition.gebied:
            level, code = key[0], key[1]
            code = gemeentecode if level == "gemeente" else code
            wijk = None if level == "gemeente" else code if level == "wijk" else parents.get(code, UNKNOWN)
            record += [level, code, names.get((level, code), UNKNOWN if code == UNKNOWN else code), wijk]
        record += list(key[2:] if definition.gebied else key)
        record += [values[m] for m in measure_names]
        if definition.gebied:
            figures = cbs.get(code)
            inwoners = figures["AANTALINWONERS"] if figures else None
            record += [inwoners, figures["AANTALHUISHOUDENS"] if figures else None]
            for m in definition.per_1000_inwoners:
                value = values[m]
                record.append(round(float(value) * 1000 / inwoners, 1) if value is not None and inwoners else None)
        record += [reason is not None, reason]
        rows.append(tuple(record))
    schema = T.StructType(fields)
    order = [f.name for f in fields if f.name in ("gebiedsniveau", "gebiedscode", *dims)]
    frame = spark.createDataFrame(rows, schema)
    return frame.orderBy(*order) if order else frame


# --------------------------------------------------------------------------------------------
# The registry: hand-written marts and the declared ones
# --------------------------------------------------------------------------------------------

_LEGACY_MARTS: dict[str, tuple[Callable, str, tuple[str, ...]]] = {
    "inwoners_per_buurt": (
        build_inwoners_per_buurt, "demografie",
        ("INGESCHREVENPERSOON", "NATUURLIJKPERSOON", "NUMMERAANDUIDING", "BUURT", "WIJK"),
    ),
}
DEFINITIONS: dict[str, MartDefinition] = load_mart_definitions()
_overlap = set(DEFINITIONS) & set(_LEGACY_MARTS)
if _overlap:
    raise GoldError(f"gold marts {sorted(_overlap)} are defined both in code and in {marts_dir()}")

MARTS: dict[str, Callable] = {**{n: b for n, (b, _, _) in _LEGACY_MARTS.items()}, **DEFINITIONS}
# The silver tables each mart reads: the gold DAG of its domein waits for exactly these.
MART_INPUTS: dict[str, tuple[str, ...]] = {
    **{n: inputs for n, (_, _, inputs) in _LEGACY_MARTS.items()},
    **{n: d.inputs for n, d in DEFINITIONS.items()},
}
MART_DOMAINS: dict[str, str] = {
    **{n: domein for n, (_, domein, _) in _LEGACY_MARTS.items()},
    **{n: d.domein for n, d in DEFINITIONS.items()},
}


def marts_of_domain(domein: str) -> list[str]:
    """The marts one gold DAG builds."""
    return sorted(n for n, d in MART_DOMAINS.items() if d == domein)


def _content_hash(frame) -> str:
    from pyspark.sql import functions as F

    row_hashes = frame.select(F.sha2(F.to_json(F.struct(*frame.columns)), 256).alias("h"))
    ordered = row_hashes.orderBy("h").agg(F.sha2(F.concat_ws("", F.collect_list("h")), 256).alias("t")).collect()
    return ordered[0]["t"] or ""


def write_mart_partition(spark, name: str, frame, peildatum: date) -> bool:
    """Replace the ``peildatum`` partition of gold table ``name`` if its content changed."""
    from pyspark.sql import functions as F

    target = LakeTable("gold", name)
    frame = frame.cache()
    if target.exists(spark):
        existing = target.read(spark).where(F.col("peildatum") == F.lit(peildatum))
        if existing.columns == frame.columns and _content_hash(existing) == _content_hash(frame):
            frame.unpersist()
            return False
        target.save(
            spark,
            frame.write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", f"peildatum = DATE'{peildatum.isoformat()}'"),
        )
    else:
        target.save(
            spark, frame.write.format("delta").partitionBy("peildatum").option("delta.enableChangeDataFeed", "true")
        )
    frame.unpersist()
    return True




def silver_versions(spark, tables) -> dict[str, tuple[int, datetime]]:
    """Delta version and commit time of each silver table's newest commit (tables not delivered yet are left out)."""
    versions = {}
    for table in tables:
        if not LakeTable("silver", table).exists(spark):
            continue
        last = LakeTable("silver", table).last_commit(spark)
        if last:
            versions[table] = last
    return versions


def write_mart_status(spark, name: str, domein: str, peildatum: date, inputs, definition_sha256: str | None) -> dict:
    """Record the mart's freshness and the silver versions it was built from (one row per mart and peildatum).

    The row is replaced only when something it states changed, so a rerun of the same day leaves it
    (and its ``gebouwd_op``) as it was.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    mart_rows = LakeTable("gold", name).read(spark).where(F.col("peildatum") == F.lit(peildatum))
    counts = mart_rows.agg(
        F.count(F.lit(1)).alias("rijen"),
        F.sum(F.when(F.col("onderdrukt") & (F.coalesce(F.col("onderdrukking"), F.lit("primair")) == "primair"), 1).otherwise(0)).alias("primair")
        if "onderdrukking" in mart_rows.columns else F.sum(F.col("onderdrukt").cast("int")).alias("primair"),
        F.sum(F.when(F.col("onderdrukking") == "secundair", 1).otherwise(0)).alias("secundair")
        if "onderdrukking" in mart_rows.columns else F.lit(0).alias("secundair"),
    ).collect()[0]
    versions = silver_versions(spark, inputs)
    status = {
        "mart": name,
        "domein": domein,
        "peildatum": peildatum,
        "bronversies": {t: v for t, (v, _) in sorted(versions.items())},
        "bron_bijgewerkt": min((stamp for _, stamp in versions.values()), default=None),
        "rijen": int(counts["rijen"] or 0),
        "onderdrukte_cellen_primair": int(counts["primair"] or 0),
        "onderdrukte_cellen_secundair": int(counts["secundair"] or 0),
        "drempel": suppression_threshold(),
        "definitie_sha256": definition_sha256,
    }
    schema = T.StructType([
        T.StructField("mart", T.StringType(), False), T.StructField("domein", T.StringType()),
        T.StructField("peildatum", T.DateType(), False), T.StructField("gebouwd_op", T.TimestampType()),
        T.StructField("bronversies", T.MapType(T.StringType(), T.LongType())),
        T.StructField("bron_bijgewerkt", T.TimestampType()), T.StructField("rijen", T.LongType()),
        T.StructField("onderdrukte_cellen_primair", T.LongType()),
        T.StructField("onderdrukte_cellen_secundair", T.LongType()), T.StructField("drempel", T.IntegerType()),
        T.StructField("definitie_sha256", T.StringType()),
    ])
    target = LakeTable("gold", STATUS_TABLE)
    where = f"mart = '{name}' AND peildatum = DATE'{peildatum.isoformat()}'"
    if target.exists(spark):
        existing = target.read(spark).where(where).collect()
        if existing:
            old = existing[0].asDict()
            if all(old.get(k) == v for k, v in status.items()):
                return {**status, "gebouwd_op": old["gebouwd_op"], "changed": False}
    now = datetime.now().replace(microsecond=0)
    row = {**status, "gebouwd_op": now}
    frame = spark.createDataFrame([tuple(row[f.name] for f in schema.fields)], schema)
    if target.exists(spark):
        target.save(spark, frame.write.format("delta").mode("overwrite").option("replaceWhere", where))
    else:
        target.save(spark, frame.write.format("delta"))
    return {**row, "changed": True}


def run(spark, logical_date: date, marts: list[str] | None = None, domain: str | None = None) -> dict:
    """Build every mart (or the named ones, or one domein's) for ``logical_date``; returns a report.

    A mart whose silver inputs do not all exist yet is reported as waiting, not built: a domein's
    marts need different sources and the first days of a new source are normal.
    """
    report = {}
    selected = [n for n in sorted(MARTS) if (not marts or n in marts) and (not domain or MART_DOMAINS[n] == domain)]
    if marts and set(marts) - set(MARTS):
        raise GoldError(f"unknown gold marts {sorted(set(marts) - set(MARTS))}; known: {sorted(MARTS)}")
    for name in selected:
        missing = [t for t in MART_INPUTS[name] if not _exists_or_awaited(spark, t)]
        if missing:
            report[name] = {"waiting_for": missing, "written": False, "rows": 0, "suppressed_cells": 0}
            continue
        frame = MARTS[name](spark, logical_date)
        written = write_mart_partition(spark, name, frame, logical_date)
        definition = DEFINITIONS.get(name)
        status = write_mart_status(spark, name, MART_DOMAINS[name], logical_date, MART_INPUTS[name],
                                   definition.sha256 if definition else None)
        report[name] = {
            "rows": status["rijen"],
            "suppressed_cells": status["onderdrukte_cellen_primair"] + status["onderdrukte_cellen_secundair"],
            "suppressed_secondary": status["onderdrukte_cellen_secundair"],
            "written": written,
            "silver_versions": status["bronversies"],
            "freshness": status["bron_bijgewerkt"].isoformat() if status["bron_bijgewerkt"] else None,
        }
    return {"stage": "gold", "logical_date": logical_date.isoformat(), "tables": report}
