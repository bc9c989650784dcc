from __future__ import annotations


def add_studio_routes(app, store, scheduler, registry, limits) -> None:
    pass
