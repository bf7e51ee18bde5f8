"""GGM Lakehouse: core configuration, pseudonymisation, CLI and pipeline runner."""
