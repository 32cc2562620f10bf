"""callback_url on the deployed service: on where the scenario sets a secret (debian13), refused elsewhere."""

SECRET_FILE = "/etc/video-download-api/callback_secret"
CALLBACK_HOST = "video-api-debian13"


def test_the_callback_secret_is_kept_like_the_token(host):
    secret = host.file(SECRET_FILE)
    env = host.file("/etc/video-download-api/env").content_string
    if host.backend.host == CALLBACK_HOST:
        assert (secret.user, secret.group, secret.mode) == ("root", "video-api", 0o640)
        assert f"VIDEO_API_CALLBACK_SECRET_FILE={SECRET_FILE}" in env
    else:
        assert not secret.exists
        assert "VIDEO_API_CALLBACK_SECRET_FILE=\n" in env


def test_callback_url_is_accepted_only_with_a_secret(host, api):
    # Nothing listens on port 9: the task is cancelled at once, its callback fails and is given up.
    status, body = api.post(
        "/api/process", {"url": "http://127.0.0.1:9/clip.mp4?callback-check", "callback_url": "http://127.0.0.1:9/hook"}
    )
    if host.backend.host == CALLBACK_HOST:
        assert status == 202, body
        status, task = api.call("DELETE", f"/api/tasks/{body['task_id']}")
        assert status == 200 and task["options"]["callback_url"] == "http://127.0.0.1:9/hook", task
    else:
        assert (status, body["error"]["code"]) == (422, "callbacks_disabled"), body
