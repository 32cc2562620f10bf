"""How a task looks from outside: the one serializer endpoints, events and callbacks share."""

from datetime import UTC, datetime

from app.api.contract import Files, FileView, PlaylistView, TaskView
from app.store.records import TaskRecord
from app.tasks.media import content_type


def _time(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


def _download_url(file_id: str | None) -> str | None:
    return None if file_id is None else f"/api/download/{file_id}"


def task_view(task: TaskRecord) -> TaskView:
    return TaskView(
        task_id=task["id"],
        status=task["status"],
        progress=round(task["progress"], 1),
        downloaded_bytes=task["downloaded_bytes"],
        total_bytes=task["total_bytes"],
        speed=task["speed"],
        eta=task["eta"],
        message=task["message"],
        url=task["url"],
        options=task["options"],
        attempts=task["attempts"],
        created_at=_time(task["created_at"]),
        updated_at=_time(task["updated_at"]),
        started_at=_time(task["started_at"]),
        completed_at=_time(task["finished_at"]),
        video_info=task["video_info"],
        files=_files(task),
        error=task["error"],
        owner=task["tenant"],
        parent_id=task["parent_id"],
        playlist=_playlist(task),
    )


def _playlist(task: TaskRecord) -> PlaylistView | None:
    playlist = task["playlist"]
    if playlist is None:
        return None
    return PlaylistView(
        title=playlist["title"],
        total=playlist["total"],
        items=playlist["items"],
        skipped=playlist["skipped"],
        counts=playlist["counts"],
        tasks=f"/api/tasks?parent_id={task['id']}",
    )


def _files(task: TaskRecord) -> Files:
    items = [
        FileView(
            kind=file["kind"],
            language=file["language"],
            url=f"/api/download/{file['id']}",
            name=file["name"],
            size=file["size"],
            content_type=content_type(file["name"]),
        )
        for file in task["files"] or ()
    ]
    return Files(
        video=_download_url(task["video_file_id"]),
        audio=_download_url(task["audio_file_id"]),
        subtitles={item.language: item.url for item in items if item.kind == "subtitles" and item.language},
        thumbnail=next((item.url for item in items if item.kind == "thumbnail"), None),
        items=items,
    )
