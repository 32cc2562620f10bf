"""The cluster as a client sees it, through the load balancer only: both API hosts answer, a file
is served by the host that did not download it, and a task survives the death of its host."""

from conftest import API_HOSTS, SERVICE, TERMINAL, docker, host_of, wait_for


def test_both_api_hosts_answer(client):
    served_by = set()
    for _ in range(20):
        response = client.get("/api/tasks?limit=1")
        assert response.status_code == 200, response.text
        served_by.add(response.headers.get("X-Served-By"))
    assert served_by == set(API_HOSTS), served_by


def test_a_file_is_served_by_the_host_that_did_not_download_it(client, media):
    task_id = client.submit(f"{media}/clip.mp4")
    task = client.wait_until(task_id, TERMINAL, 120)
    assert task and task["status"] == "completed", task
    (fetched_by,) = host_of(task_id)
    other = next(host for host in API_HOSTS if host != fetched_by)
    size = int(docker(fetched_by, f"stat -c %s /var/lib/video-download-api/media/{task_id}/*.mp4"))

    def download_from_other():
        response = client.get(task["files"]["video"])
        assert response.status_code == 200, response.text
        return response if response.headers.get("X-Served-By") == other else None

    response = wait_for(download_from_other, 20, interval=0)
    assert response, f"no download answered by {other}"
    assert len(response.content) == size


def test_a_task_completes_on_the_other_host_when_its_host_dies(client, media):
    task_id = client.submit(f"{media}/slow/clip.mp4?kill")
    assert client.wait_until(task_id, ("downloading",), 60), client.status(task_id)
    running = wait_for(lambda: host_of(task_id), 30)
    assert running and len(running) == 1, running
    (victim,) = running
    try:
        # SIGKILL (no clean stop), then keep it down so only the other host can finish the task.
        docker(victim, f"systemctl kill --signal=KILL {SERVICE} && systemctl stop {SERVICE}")
        task = client.wait_until(task_id, TERMINAL, 240)
        assert task and task["status"] == "completed", task
        survivor = next(host for host in API_HOSTS if host != victim)
        assert host_of(task_id) == [survivor] or survivor in host_of(task_id)
    finally:
        docker(victim, f"systemctl start {SERVICE}")
        assert wait_for(lambda: client.get("/api/tasks?limit=1").headers.get("X-Served-By") == victim, 60, 0.2)
