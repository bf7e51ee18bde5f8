"""Delta Sharing protocol server for the gold layer.

Public entry points:

* :func:`sharing_server.app.create_app` / :func:`sharing_server.app.serve` - the server;
* :func:`sharing_server.recipients.issue_profile` / :func:`sharing_server.recipients.revoke`
  - recipient tokens and profile files.

What is shared with whom is declared in ``config/shares.yaml``
(:mod:`sharing_server.shares_config`).
"""
from sharing_server.app import create_app, serve
from sharing_server.recipients import UnknownRecipientError, issue_profile, profile_json, revoke

__all__ = ["create_app", "serve", "issue_profile", "profile_json", "revoke", "UnknownRecipientError"]
