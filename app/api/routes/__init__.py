"""The API's routes, one module per resource."""

from aiohttp import web

from app.api.routes import files, service, tasks, users


def add_routes(application: web.Application) -> None:
    for module in (service, tasks, files, users):
        application.add_routes(module.routes)
