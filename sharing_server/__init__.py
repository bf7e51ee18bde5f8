"""Delta Sharing protocol server for the gold layer.

Public entry points:

* :func:`sharing_server.app.create_app` / :func:`sharing_server.app.serve` - the server;
* :func:`sharing_server.recipients.add_recipient`, :func:`~sharing_server.recipients.list_recipients`,
  :func:`~sharing_server.recipients.rotate`, :func:`~sharing_server.recipients.issue_profile`,
  :func:`~sharing_server.recipients.revoke` - recipients, tokens and profile files;
* :func:`sharing_server.audit.summarise_audit` - usage per recipient and table from the audit log;
  :func:`sharing_server.audit.export_audit_table` - the log as the Delta table ``<lake>/audit/sharing_requests``;
* :func:`sharing_server.projections.materialise_recipient_tables` - every recipient's own copy of the
  tables it may read (columns, rows, pseudonyms re-keyed per recipient), run by the publish step;
* :class:`sharing_server.embedded.EmbeddedServer` - the server in a background thread (tests, benchmarks);
* :mod:`sharing_server.limits` (bounds on client input) and :mod:`sharing_server.logredact` (no
  credentials in log lines) - the server's hardening helpers.

What is shared is declared in ``config/shares.yaml`` (:mod:`ggm_lakehouse.model.shares_config`);
recipients live there or, when added by the CLI, in the sharing state file.
"""
from sharing_server.app import create_app, serve
from sharing_server.audit import export_audit_table, summarise_audit
from sharing_server.projections import materialise_recipient_tables
from sharing_server.recipients import (
    RecipientExistsError,
    UnknownRecipientError,
    UnknownShareError,
    add_recipient,
    issue_profile,
    list_recipients,
    profile_json,
    revoke,
    rotate,
)

__all__ = [
    "create_app",
    "serve",
    "add_recipient",
    "list_recipients",
    "rotate",
    "issue_profile",
    "profile_json",
    "revoke",
    "summarise_audit",
    "export_audit_table",
    "materialise_recipient_tables",
    "RecipientExistsError",
    "UnknownRecipientError",
    "UnknownShareError",
]
