"""The OpenAPI 3.1 document of the HTTP API, served at /api/openapi.json.

Written by hand next to the handlers; test_openapi.py checks that every route is described
and runs schemathesis against the running service.
"""

import app
from app import media
from app.store import STATUSES

ID = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
NULLABLE_STRING = {"type": ["string", "null"]}
NULLABLE_NUMBER = {"type": ["number", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}
QUALITIES = ["360", "480", "720", "1080", "best"]


def _error(description: str, headers: dict | None = None) -> dict:
    response = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response


def _json(description: str, schema_name: str, headers: dict | None = None) -> dict:
    response = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}},
    }
    if headers:
        response["headers"] = headers
    return response


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}}
UNAUTHORIZED = {"401": {"$ref": "#/components/responses/Unauthorized"}}
TASK_ID_PARAMETER = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}

TASK = {
    "type": "object",
    "required": ["task_id", "status", "progress", "url", "options", "files", "error"],
    "properties": {
        "task_id": ID,
        "status": {"enum": list(STATUSES)},
        "progress": {"type": "number", "minimum": 0, "maximum": 100},
        "downloaded_bytes": NULLABLE_INT,
        "total_bytes": NULLABLE_INT,
        "speed": NULLABLE_NUMBER,
        "eta": NULLABLE_NUMBER,
        "message": NULLABLE_STRING,
        "url": {"type": "string"},
        "options": {"type": "object"},
        "attempts": {"type": "integer"},
        "created_at": NULLABLE_STRING,
        "updated_at": NULLABLE_STRING,
        "started_at": NULLABLE_STRING,
        "completed_at": NULLABLE_STRING,
        "video_info": {"type": ["object", "null"]},
        "files": {
            "type": "object",
            "required": ["video", "audio"],
            "properties": {"video": NULLABLE_STRING, "audio": NULLABLE_STRING},
        },
        "error": NULLABLE_STRING,
    },
}

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {
        "title": "video-download-api",
        "version": app.__version__,
        "description": "Downloads a video URL with yt-dlp in the background, optionally extracts the audio with "
        "FFmpeg, reports progress and serves the files. With tokens configured every /api/* request except "
        "/api/health needs `Authorization: Bearer <token>`.",
    },
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}],
    "paths": {
        "/": {
            "get": {
                "summary": "Service name, version and endpoints",
                "security": [],
                "responses": {
                    "200": _json("Index.", "Index"),
                    "303": {
                        "description": "A browser (Accept prefers text/html to JSON) is sent to the web page.",
                        "headers": {"Location": {"description": "/ui/", "schema": {"type": "string"}}},
                    },
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1 document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **UNAUTHORIZED,
                },
            }
        },
        "/api/process": {
            "post": {
                "summary": "Queue a download",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ProcessRequest"}}},
                },
                "responses": {
                    "202": _json(
                        "Queued, or the active task for the same URL and options.",
                        "Accepted",
                        {"Location": {"description": "The status URL.", "schema": {"type": "string"}}},
                    ),
                    "400": _error("Body is not a JSON object."),
                    **UNAUTHORIZED,
                    "413": _error("Body larger than 64 KiB."),
                    "422": _error(
                        "Invalid option, URL or callback_url; blocked or unresolvable address; callbacks disabled."
                    ),
                    "429": _error("Queue full, or this client's rate limit reached.", RETRY_AFTER),
                },
            }
        },
        "/api/status/{task_id}": {
            "get": {
                "summary": "Status and progress of a task",
                "parameters": [TASK_ID_PARAMETER],
                "responses": {"200": _json("The task.", "Task"), **UNAUTHORIZED, "404": _error("No such task.")},
            }
        },
        "/api/tasks": {
            "get": {
                "summary": "Counts and a page of tasks, newest first",
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                    {
                        "name": "offset",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 10000000},
                    },
                    {
                        "name": "before",
                        "in": "query",
                        "description": "Cursor from a page's `next` link: tasks older than it (not with offset).",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 2**62},
                    },
                    {"name": "status", "in": "query", "schema": {"enum": list(STATUSES)}},
                ],
                "responses": {
                    "200": _json("Counts and page.", "TaskList"),
                    **UNAUTHORIZED,
                    "422": _error("Invalid limit, offset, before or status."),
                },
            }
        },
        "/api/tasks/{task_id}": {
            "delete": {
                "summary": "Cancel a task and delete its files",
                "parameters": [TASK_ID_PARAMETER],
                "responses": {
                    "200": _json("The task as it is now.", "Task"),
                    **UNAUTHORIZED,
                    "404": _error("No such task."),
                },
            }
        },
        "/api/tasks/{task_id}/events": {
            "get": {
                "summary": "Server-Sent Events of a task until it ends",
                "parameters": [
                    TASK_ID_PARAMETER,
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {
                        "description": "`event: status|progress`, `id: <boot>-<n>`, `data: <Task JSON>`.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **UNAUTHORIZED,
                    "404": _error("No such task."),
                },
            }
        },
        "/api/download/{file_id}": {
            "get": {
                "summary": "A file the service produced (Range supported)",
                "parameters": [{"name": "file_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "206": {
                        "description": "The requested range.",
                        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    **UNAUTHORIZED,
                    "404": _error("No such file."),
                    "410": _error("Removed by retention or with its task."),
                    "416": _error(
                        "Range not satisfiable: it starts past the end, or asks for the last 0 bytes. A Range"
                        " that does not parse is ignored (200).",
                        {"Content-Range": {"description": "bytes */<size>", "schema": {"type": "string"}}},
                    ),
                },
            }
        },
        "/api/health": {
            "get": {
                "summary": "Real checks: database, media folder, FFmpeg, free disk",
                "security": [],
                "responses": {"200": _json("Healthy.", "Health"), "503": _json("Unhealthy.", "Health")},
            }
        },
        "/api/storage/info": {
            "get": {
                "summary": "Disk use of the media folder",
                "responses": {"200": _json("Figures.", "StorageInfo"), **UNAUTHORIZED},
            }
        },
        "/api/storage/cleanup": {
            "post": {
                "summary": "Run retention now",
                "responses": {"200": _json("What was deleted.", "Cleanup"), **UNAUTHORIZED},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Prometheus text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "403": _error("Peer outside VIDEO_API_METRICS_NETWORKS."),
                },
            }
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "responses": {
            "Unauthorized": _error(
                "Missing or wrong token (only when tokens are configured).",
                {"WWW-Authenticate": {"schema": {"type": "string"}}},
            )
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    }
                },
            },
            "ProcessRequest": {
                "type": "object",
                "required": ["url"],
                "additionalProperties": False,
                "properties": {
                    "url": {
                        "type": "string",
                        "minLength": 1,
                        "pattern": "\\S",
                        "description": "http(s) URL; non-public addresses are refused.",
                    },
                    "extract_audio": {"type": "boolean", "default": True},
                    "keep_video": {"type": "boolean", "default": True},
                    "video_quality": {"enum": [*QUALITIES, 360, 480, 720, 1080], "default": "best"},
                    "audio_format": {"enum": list(media.AUDIO_FORMATS), "default": "mp3"},
                    "audio_bitrate": {
                        "type": ["string", "integer"],
                        "minimum": 32,
                        "maximum": 512,
                        "default": "192",
                        "description": 'kbps 32-512 ("192", "192k", 192) or "best".',
                    },
                    "callback_url": {
                        "type": ["string", "null"],
                        "description": "POSTed the final task JSON, signed (X-Video-Api-Signature).",
                    },
                },
            },
            "Accepted": {
                "type": "object",
                "required": ["task_id", "status", "status_url", "message"],
                "properties": {
                    "task_id": ID,
                    "status": {"enum": list(STATUSES)},
                    "status_url": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
            "Task": TASK,
            "TaskList": {
                "type": "object",
                "required": ["counts", "total", "limit", "offset", "next", "tasks"],
                "properties": {
                    "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "total": {"type": "integer"},
                    "limit": {"type": "integer"},
                    "offset": {"type": "integer"},
                    "next": {"type": ["string", "null"], "description": "The next page (keyset), or null."},
                    "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
                },
            },
            "Health": {
                "type": "object",
                "required": ["status", "checks", "failing", "versions"],
                "properties": {
                    "status": {"enum": ["healthy", "unhealthy"]},
                    "checks": {"type": "object"},
                    "failing": {"type": "array", "items": {"type": "string"}},
                    "versions": {"type": "object"},
                    "workers": {"type": "object"},
                },
            },
            "StorageInfo": {
                "type": "object",
                "required": [
                    "files",
                    "used_bytes",
                    "max_storage_bytes",
                    "disk_free_bytes",
                    "disk_total_bytes",
                    "min_free_bytes",
                    "retention_hours",
                ],
                "properties": {
                    "files": {"type": "integer"},
                    "used_bytes": {"type": "integer"},
                    "max_storage_bytes": {"type": "integer"},
                    "disk_free_bytes": {"type": "integer"},
                    "disk_total_bytes": {"type": "integer"},
                    "min_free_bytes": {"type": "integer"},
                    "retention_hours": {"type": "number"},
                },
            },
            "Cleanup": {
                "type": "object",
                "required": ["deleted", "files_deleted", "bytes_freed"],
                "properties": {
                    "deleted": {"type": "array", "items": {"type": "object"}},
                    "files_deleted": {"type": "integer"},
                    "bytes_freed": {"type": "integer"},
                },
            },
            "Index": {
                "type": "object",
                "required": ["service", "version", "endpoints"],
                "properties": {
                    "service": {"type": "string"},
                    "version": {"type": "string"},
                    "endpoints": {"type": "object"},
                },
            },
        },
    },
}
