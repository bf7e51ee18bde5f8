"""Local stand-ins of BRP Personen v2 and BAG Individuele Bevragingen v2 (demo/test only)."""
from standins.server import Registry, StandinServers, serve_foreground

__all__ = ["Registry", "StandinServers", "serve_foreground"]
