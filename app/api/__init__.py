"""The HTTP side: the application factory, routes, the API contract and its OpenAPI document,
middlewares, the web page."""
