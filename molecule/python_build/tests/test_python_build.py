"""The pyenv-built interpreter on Debian 11: version, modules, the service on it, the mirror choice.

Health, a real download and --check come from the default scenario's tests, which this scenario
runs too (molecule.yml, additional_files_or_dirs).
"""

import json

VERSION = "3.11.2"
PREFIX = f"/opt/pyenv/versions/{VERSION}"
PYTHON = f"{PREFIX}/bin/python3.11"
VENV = "/opt/video-download-api/venv"
SERVICE = "video-download-api"
FAST_MIRROR = "http://127.0.0.1:8481/ftp/python"


def test_built_interpreter_has_the_pinned_version_and_the_modules(host):
    script = "import json, platform, ssl, sqlite3, lzma, bz2, zlib, ctypes, readline; print(platform.python_version())"
    assert host.check_output(f"{PYTHON} -c {json.dumps(script)}") == VERSION
    assert host.run(f"{PYTHON} -m pip --version").rc == 0


def test_prefix_belongs_to_root_and_the_distro_python_is_untouched(host):
    for path in ("/opt/pyenv", PREFIX, f"{PREFIX}/bin"):
        directory = host.file(path)
        assert directory.user == "root" and not directory.mode & 0o022, path
    distro = host.check_output("/usr/bin/python3 -c 'import platform; print(platform.python_version())'")
    assert distro.startswith("3.9."), distro
    assert host.check_output("readlink -f $(command -v python3)") != PYTHON


def test_the_unit_runs_the_virtualenv_built_on_it(host):
    exec_start = host.check_output(f"systemctl show -P ExecStart {SERVICE}")
    assert f"path={VENV}/bin/python " in exec_start, exec_start
    pyvenv = host.file(f"{VENV}/pyvenv.cfg").content_string
    assert f"home = {PREFIX}/bin" in pyvenv and f"version = {VERSION}" in pyvenv, pyvenv
    # /proc/<pid>/exe of the service user's process is closed to root without CAP_SYS_PTRACE here.
    pid = host.check_output(f"systemctl show -P MainPID {SERVICE}")
    assert host.file(f"/proc/{pid}/cmdline").content_string.split("\0")[0] == f"{VENV}/bin/python"
    assert host.check_output(f"readlink -f {VENV}/bin/python") == PYTHON


def test_the_fast_mirror_was_chosen(host):
    marker = dict(line.split("=", 1) for line in host.file(f"{PREFIX}/.build-complete").content_string.splitlines())
    print(f"\nbuild record: {marker}")
    assert marker["mirror"] == f"{FAST_MIRROR}/{VERSION}/Python-{VERSION}.tgz"
    assert marker["sha256"] == "2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849"


def test_probe_ranks_the_mirrors_and_drops_the_closed_port(host):
    result = probe(
        host,
        [
            {"url": "http://127.0.0.1:8483/ftp/python"},
            {"url": "http://127.0.0.1:8482/pythons", "layout": "pyenv"},
            {"url": FAST_MIRROR},
        ],
    )
    print("\nprobes:", *(entry["summary"] for entry in result["probes"]), sep="\n  ")
    assert result["url"].startswith(FAST_MIRROR)
    assert [entry["mirror"] for entry in result["probes"]] == [
        FAST_MIRROR,
        "http://127.0.0.1:8482/pythons",
        "http://127.0.0.1:8483/ftp/python",
    ]
    assert "refused" in result["probes"][2]["error"]


def test_probe_fails_naming_every_mirror_when_none_answers(host):
    result = probe(host, [{"url": "http://127.0.0.1:8483/ftp/python"}, {"url": "http://127.0.0.1:8481/missing"}])
    # The result testinfra reads (ansible --tree) lost its "failed" key in ansible-core 2.19;
    # a failed probe is the one without a chosen url.
    assert "url" not in result, result
    message = result["msg"]
    print(f"\nno mirror: {message}")
    assert "http://127.0.0.1:8483/ftp/python/" in message and "refused" in message
    assert "http://127.0.0.1:8481/missing/" in message and "HTTP 404" in message


def probe(host, mirrors):
    arguments = {
        "mirrors": mirrors,
        "version": VERSION,
        "filename": f"Python-{VERSION}.tgz",
        "sha256": "2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849",
        "timeout": 5,
    }
    return host.ansible("python_mirror_probe", json.dumps(arguments), check=False)
