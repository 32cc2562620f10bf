"""Routes of users: who the token is."""

from aiohttp import web

from app.api.contract import Me
from app.api.keys import STORE
from app.api.openapi import Reply, describe
from app.api.routes.common import json_response, tenant_of
from app.tenants.tenants_file import LIMITS

routes = web.RouteTableDef()


@routes.get("/api/me")
@describe("Who the token is: name, role, limits and their use", {200: Reply("The user.", Me)})
async def me(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    active, used = await request.app[STORE].tenant_usage(tenant.name)
    limits = {key: getattr(tenant, key) for key in LIMITS}
    return json_response(Me(tenant.name, tenant.role.value, limits, active, used))
