"""What to change on the broker so that its accounts match the catalog's: a pure diff into dynsec commands.

Run by every `hub plan` (to show drift) and `hub apply` (to repair it), so a broker that lost a
login, a role or a group membership is put right by the next apply. A login the broker lacks
is created with a new password, shown once; a password being issued (new partner, new device,
rotation) is set whether or not the broker already knows the login, so no login whose password
nobody was shown can survive an apply that failed half-way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hub.mqtt_auth.accounts import (
    RESERVED_PREFIX,
    Accounts,
    Acl,
    Client,
    Group,
    Role,
    acl_json,
    is_managed_name,
)


@dataclass(frozen=True)
class AccountChange:
    kind: str  # default-acl | role | group | login
    action: str  # create | update | delete
    target: str
    detail: str
    commands: tuple[dict[str, Any], ...]
    password_for: str | None = None  # the login whose new password goes into these commands

    def with_password(self, password: str) -> list[dict[str, Any]]:
        return [
            {**c, "password": password} if c["command"] in ("createClient", "setClientPassword") else dict(c)
            for c in self.commands
        ]


def parse_accounts(
    default_acl: dict[str, Any], roles: dict[str, Any], clients: dict[str, Any], groups: dict[str, Any]
) -> Accounts:
    """The broker's answers to getDefaultACLAccess and the verbose listRoles, listClients and listGroups."""
    out = Accounts(default_acl={a["acltype"]: bool(a["allow"]) for a in default_acl.get("acls", [])})
    for r in roles.get("roles", []):
        acls = frozenset(
            Acl(a["acltype"], a["topic"], bool(a.get("allow", False)), int(a.get("priority", 0)))
            for a in r.get("acls", [])
        )
        out.roles[r["rolename"]] = Role(r["rolename"], acls)
    for g in groups.get("groups", []):
        out.groups[g["groupname"]] = Group(g["groupname"], frozenset(x["rolename"] for x in g.get("roles", [])))
    for c in clients.get("clients", []):
        out.clients[c["username"]] = Client(
            c["username"],
            c.get("clientid"),
            frozenset(x["rolename"] for x in c.get("roles", [])),
            frozenset(x["groupname"] for x in c.get("groups", [])),
            bool(c.get("disabled", False)),
        )
    return out


@dataclass
class Diff:
    changes: list[AccountChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def diff_accounts(want: Accounts, have: Accounts, *, issue: Iterable[str] = ()) -> Diff:
    """The changes, in an order the broker accepts: roles before the groups and logins that use them,
    removals of logins before the groups and roles they held."""
    out = Diff()
    reissue = set(issue)
    wrong_default = {t: v for t, v in want.default_acl.items() if have.default_acl.get(t) != v}
    if wrong_default:
        out.changes.append(
            AccountChange(
                "default-acl",
                "update",
                "broker",
                ", ".join(f"{t} {'allowed' if v else 'denied'}" for t, v in sorted(wrong_default.items())),
                (
                    {
                        "command": "setDefaultACLAccess",
                        "acls": [{"acltype": t, "allow": v} for t, v in sorted(wrong_default.items())],
                    },
                ),
            )
        )
    for name, role in sorted(want.roles.items()):
        out.changes += _role(role, have.roles.get(name))
    for name, group in sorted(want.groups.items()):
        out.changes += _group(group, have.groups.get(name))
    for username, client in sorted(want.clients.items()):
        out.changes += _login(client, have.clients.get(username), username in reissue)
    removals: list[AccountChange] = []
    for username, client in sorted(have.clients.items()):
        if username in want.clients:
            continue
        managed = sorted(n for n in client.groups | client.roles if is_managed_name(n))
        if username.startswith(RESERVED_PREFIX):
            continue  # the hub's own logins: provisioned at run time with the hub's roles
        if managed:
            removals.append(
                AccountChange(
                    "login",
                    "delete",
                    username,
                    f"not in the catalog, holds {', '.join(managed)}",
                    ({"command": "deleteClient", "username": username},),
                )
            )
        else:
            out.notes.append(f"broker login {username!r} is not the hub's; left alone")
    for name in sorted(set(have.groups) - set(want.groups)):
        if is_managed_name(name):
            removals.append(
                AccountChange(
                    "group",
                    "delete",
                    name,
                    "no partner of the catalog",
                    ({"command": "deleteGroup", "groupname": name},),
                )
            )
    for name in sorted(set(have.roles) - set(want.roles)):
        if is_managed_name(name):
            removals.append(
                AccountChange(
                    "role", "delete", name, "no partner of the catalog", ({"command": "deleteRole", "rolename": name},)
                )
            )
    out.changes += removals
    return out


def _role(want: Role, have: Role | None) -> list[AccountChange]:
    if have is None:
        return [
            AccountChange(
                "role",
                "create",
                want.name,
                "; ".join(a.render() for a in sorted(want.acls)),
                ({"command": "createRole", "rolename": want.name, "acls": [acl_json(a) for a in sorted(want.acls)]},),
            )
        ]
    missing, extra = sorted(want.acls - have.acls), sorted(have.acls - want.acls)
    if not missing and not extra:
        return []
    commands = [
        {"command": "removeRoleACL", "rolename": want.name, "acltype": a.acltype, "topic": a.topic} for a in extra
    ]
    commands += [{"command": "addRoleACL", "rolename": want.name, **acl_json(a)} for a in missing]
    detail = "; ".join([*(f"+{a.render()}" for a in missing), *(f"-{a.render()}" for a in extra)])
    return [AccountChange("role", "update", want.name, detail + " (its holders reconnect)", tuple(commands))]


def _group(want: Group, have: Group | None) -> list[AccountChange]:
    current = have.roles if have is not None else frozenset()
    commands: list[dict[str, Any]] = []
    if have is None:
        commands.append({"command": "createGroup", "groupname": want.name})
    commands += [
        {"command": "addGroupRole", "groupname": want.name, "rolename": r} for r in sorted(want.roles - current)
    ]
    commands += [
        {"command": "removeGroupRole", "groupname": want.name, "rolename": r} for r in sorted(current - want.roles)
    ]
    if not commands:
        return []
    action = "create" if have is None else "update"
    return [AccountChange("group", action, want.name, f"role {', '.join(sorted(want.roles))}", tuple(commands))]


def _login(want: Client, have: Client | None, reissue: bool) -> list[AccountChange]:
    if have is None:
        create: dict[str, Any] = {"command": "createClient", "username": want.username}
        if want.clientid:
            create["clientid"] = want.clientid
        # Groups given here are linked both ways (unlike roles given inline): one command per login.
        create["groups"] = [{"groupname": g} for g in sorted(want.groups)]
        why = "new password, shown once" if reissue else "missing on the broker: a new password, shown once"
        return [
            AccountChange(
                "login",
                "create",
                want.username,
                f"bound to client id {want.clientid}; {why}",
                (create,),
                password_for=want.username,
            )
        ]
    commands: list[dict[str, Any]] = []
    problems: list[str] = []
    if have.clientid != want.clientid:
        commands.append({"command": "modifyClient", "username": want.username, "clientid": want.clientid or ""})
        problems.append(f"client id {have.clientid!r} -> {want.clientid!r}")
    if have.disabled and not want.disabled:
        commands.append({"command": "enableClient", "username": want.username})
        problems.append("enabled")
    for g in sorted(want.groups - have.groups):
        commands.append({"command": "addGroupClient", "groupname": g, "username": want.username})
        problems.append(f"+group {g}")
    for g in sorted(have.groups - want.groups):
        commands.append({"command": "removeGroupClient", "groupname": g, "username": want.username})
        problems.append(f"-group {g}")
    for r in sorted(have.roles - want.roles):
        commands.append({"command": "removeClientRole", "username": want.username, "rolename": r})
        problems.append(f"-role {r}")
    out = []
    if commands:
        out.append(AccountChange("login", "update", want.username, ", ".join(problems), tuple(commands)))
    if reissue:
        out.append(
            AccountChange(
                "login",
                "update",
                want.username,
                "new password, shown once; the old one stops working",
                ({"command": "setClientPassword", "username": want.username},),
                password_for=want.username,
            )
        )
    return out
