"""`python -m app tenants add|remove|list`: edit the tenants file. A new user's token is printed
once, on standard output, and only its digest is written."""

import argparse
import sys
from pathlib import Path

from app.ascii_numbers import ascii_int
from app.settings import raw_setting
from app.tenants.tenants_file import (
    LIMIT_HIGH,
    LIMITS,
    NAME,
    Role,
    Tenant,
    TenantsFileError,
    new_token,
    read,
    token_digest,
    write,
)


def _name(text: str) -> str:
    if not NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: 1-32 of a-z, 0-9, '_', '-', starting with a letter or digit")
    return text


def _limit(text: str) -> int:
    value = ascii_int(text)
    if value is None or not 1 <= value <= LIMIT_HIGH:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to {LIMIT_HIGH}")
    return value


def add_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    tenants = commands.add_parser("tenants", help="add, remove or list the users of the tenants file")
    actions = tenants.add_subparsers(dest="action", required=True)
    default_file = raw_setting("tenants_file") or None
    for action, summary in (
        ("add", "add a user (or give one a new token, role and limits) and print its new token once"),
        ("remove", "remove a user: its token stops working; its tasks and files stay, an admin sees them"),
        ("list", "list the users, their roles and limits (never a token)"),
    ):
        parser = actions.add_parser(action, help=summary)
        if action != "list":
            parser.add_argument("name", type=_name)
        parser.add_argument(
            "--file", type=Path, default=default_file, required=default_file is None, help="the tenants file"
        )
        if action == "add":
            parser.add_argument("--role", choices=[role.value for role in Role], required=True)
            for key, meaning in LIMITS.items():
                parser.add_argument(f"--{key.replace('_', '-')}", dest=key, type=_limit, help=meaning)


def run(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        users = read(path) if args.action != "add" or path.exists() else {}
    except TenantsFileError as exc:
        print(f"tenants {args.action} refused: {exc}", file=sys.stderr)
        return 1
    if args.action == "list":
        for tenant in sorted(users.values(), key=lambda tenant: tenant.name):
            limits = " ".join(f"{key}={value}" for key in LIMITS if (value := getattr(tenant, key)) is not None)
            print(f"{tenant.name} {tenant.role} {limits}".rstrip())
        return 0
    if args.action == "remove":
        if users.pop(args.name, None) is None:
            print(f"tenants remove refused: no user {args.name!r} in {path}", file=sys.stderr)
            return 1
        write(path, users)
        print(f"removed {args.name} from {path}")
        return 0
    token = new_token()
    tenant = Tenant(args.name, Role(args.role), token_digest(token), **{key: getattr(args, key) for key in LIMITS})
    replaced = args.name in users
    users[args.name] = tenant
    write(path, users)
    print(
        f"{'replaced' if replaced else 'added'} {args.name} ({args.role}) in {path}; its token, shown once:",
        file=sys.stderr,
    )
    print(token)
    return 0
