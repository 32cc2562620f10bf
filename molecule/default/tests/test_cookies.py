"""cookies on the deployed service: the role generates the secret that seals them, kept like the token."""

SECRET_FILE = "/etc/video-download-api/cookie_secret"
COOKIES = "127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tmolecule-cookie-value\n"


def test_the_cookie_secret_is_generated_and_kept_like_the_token(host):
    secret = host.file(SECRET_FILE)
    assert (secret.user, secret.group, secret.mode) == ("root", "video-api", 0o640)
    assert len(secret.content_string.strip()) >= 16
    assert f"VIDEO_API_COOKIE_SECRET_FILE={SECRET_FILE}" in host.file("/etc/video-download-api/env").content_string


def test_a_task_takes_cookies_and_never_shows_them(api):
    # Nothing listens on port 9: the task is cancelled at once.
    status, body = api.post("/api/process", {"url": "http://127.0.0.1:9/clip.mp4?cookie-check", "cookies": COOKIES})
    assert status == 202, body
    status, task = api.call("DELETE", f"/api/tasks/{body['task_id']}")
    assert status == 200 and task["options"]["cookies"] is True, task
    assert "molecule-cookie-value" not in str(task)
