"""The video_api role's tenants file (roles/video_api/templates/tenants.toml.j2, from video_api_tenants)
read back by the service's reader (app/tenants/tenants_file.py): the template, the role's checks of
video_api_tenants (roles/video_api/vars/main.yml) and the reader cannot disagree."""

import re

import pytest
import yaml

from app.tenants.tenants_file import LIMIT_HIGH, LIMITS, NAME, Role, read, token_digest
from tests.support import role_templates
from tests.support.helpers import REPO

ROLE = REPO / "roles" / "video_api"
ROLE_VARS = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
USERS = [
    {
        "name": "render-user_1",
        "role": "user",
        "token": "user-token-for-the-template-0123",
        "max_active_tasks": 5,
        "max_storage_mb": 2048,
        "submissions_per_minute": 10,
    },
    {
        "name": "admin_0",
        "role": "admin",
        "token": "admin-token-for-the-template-0123",
        "max_active_tasks": LIMIT_HIGH,
        "max_storage_mb": None,  # as good as absent: no limit
    },
]


def render(users) -> str:
    """The template as Ansible's template module renders it."""
    return (
        role_templates.environment(ROLE)
        .get_template("tenants.toml.j2")
        .render(
            ansible_managed="Ansible managed",
            video_api_tenants=users,
            __video_api_tenant_limits=ROLE_VARS["__video_api_tenant_limits"],
        )
    )


def test_the_rendered_file_is_read_back_as_the_users(tmp_path):
    path = tmp_path / "tenants.toml"
    text = render(USERS)
    path.write_text(text)

    tenants = read(path)

    assert sorted(tenants) == ["admin_0", "render-user_1"]
    user, admin = tenants["render-user_1"], tenants["admin_0"]
    assert (user.role, user.token_sha256) == (Role.USER, token_digest(USERS[0]["token"]))
    assert (user.max_active_tasks, user.max_storage_mb, user.submissions_per_minute) == (5, 2048, 10)
    assert (admin.role, admin.token_sha256) == (Role.ADMIN, token_digest(USERS[1]["token"]))
    assert (admin.max_active_tasks, admin.max_storage_mb, admin.submissions_per_minute) == (LIMIT_HIGH, None, None)
    for user in USERS:
        assert user["token"] not in text


def test_the_order_of_the_list_does_not_change_the_file():
    """The role compares the rendered text with the host's file: a reordered list is no change."""
    assert render(USERS) == render(USERS[::-1])


def test_the_role_writes_the_limits_the_reader_knows():
    assert ROLE_VARS["__video_api_tenant_limits"] == list(LIMITS)


@pytest.mark.parametrize(
    "name",
    ["a", "0", "alice", "a_b-c", "a.b", "x" * 32, "x" * 33, "", "Alice", "-a", ".a", "_a", "a b", "a/b", "alice\n"],
)
def test_the_role_checks_names_as_the_reader_does(name):
    pattern = ROLE_VARS["__video_api_tenant_name_pattern"]
    assert bool(re.match(pattern, name)) == bool(NAME.fullmatch(name))


@pytest.mark.parametrize("value", [1, 7, 2048, LIMIT_HIGH, 0, -1, LIMIT_HIGH + 1, 10 * LIMIT_HIGH, "1.5", True, "1\n"])
def test_the_role_checks_limits_as_the_reader_does(value):
    # The role's check sees the value as Ansible's match test does: as text.
    pattern = ROLE_VARS["__video_api_tenant_limit_pattern"]
    accepted = type(value) is int and 1 <= value <= LIMIT_HIGH
    assert bool(re.match(pattern, str(value))) == accepted
