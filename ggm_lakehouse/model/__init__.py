"""The model layer: what the platform is told, as declarations any layer above may read.

* :mod:`~ggm_lakehouse.model.sources`: the sources, their Airflow connections, owners, schedules and pools
  (``ggm_lakehouse/model/sources.yaml``);
* :mod:`~ggm_lakehouse.model.mappings`: the silver mappings (``ggm_mappings/*.yaml``);
* :mod:`~ggm_lakehouse.model.mart_definitions`: the gold marts (``gold_marts/*.yaml``);
* :mod:`~ggm_lakehouse.model.shares_config`: the shares and recipients (``config/shares.yaml``).

Model modules read and validate files; they import only core (``ggm_lakehouse.config``) and never
an engine (connectors, jobs, sharing_server, dashboard), so the catalog, the lineage, the DAG
factory and the dashboard read the declarations without loading Spark or a connector.
See docs/architecture.md ("Layers").
"""
