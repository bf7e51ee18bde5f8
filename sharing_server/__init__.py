"""Delta Sharing protocol server for the gold layer.

Public entry points:

* :func:`sharing_server.app.create_app` / :func:`sharing_server.app.serve` - the server;
* :func:`sharing_server.recipients.add_recipient`, :func:`~sharing_server.recipients.list_recipients`,
  :func:`~sharing_server.recipients.rotate`, :func:`~sharing_server.recipients.issue_profile`,
  :func:`~sharing_server.recipients.revoke` - recipients, tokens and profile files;
* :func:`sharing_server.audit.summarise_audit` - usage per recipient and table from the audit log.

What is shared is declared in ``config/shares.yaml`` (:mod:`sharing_server.shares_config`);
recipients live there or, when added by the CLI, in the sharing state file.
"""
from sharing_server.app import create_app, serve
from sharing_server.audit import summarise_audit
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
    "RecipientExistsError",
    "UnknownRecipientError",
    "UnknownShareError",
]
