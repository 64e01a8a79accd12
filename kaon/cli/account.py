"""Platform account verbs: ``kaon login | logout | whoami | keys | members | plans |
subscribe | usage | invoices`` (against ``kaon up``'s control API)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from kaon.cli.choices import Role, Scope
from kaon.cli.output import confirm, console, console_err, print_json
from kaon.cli.remote import (
    DEFAULT_URL,
    Json,
    Key,
    Url,
    connect,
    credentials_path,
    money,
    remove_credentials,
    save_credentials,
    when,
)
from kaon.errors import ConfigError, NotFoundError
from kaon.platform.errors import AuthError

if TYPE_CHECKING:
    from kaon.client import Client

keys_app = typer.Typer(help="API keys of the platform workspace.\n\nExample: kaon keys list",
                       no_args_is_help=True)
members_app = typer.Typer(help="Members of the platform workspace.\n\n"
                               "Example: kaon members list", no_args_is_help=True)


# ---- login -----------------------------------------------------------------------------------
def login(
    url: Annotated[str, typer.Option("--url", envvar="KAON_URL",
                                     help="Platform URL, as `kaon up` printed it.")] = DEFAULT_URL,
    key: Annotated[str | None, typer.Option("--key", envvar="KAON_API_KEY", show_envvar=False,
                                            help="API key kaon_… (asked for if left out).")
                   ] = None,
    json_: Json = False,
) -> None:
    """Check an API key against the platform (GET /api/v1/me) and save the URL and key to
    KAON_HOME/credentials.json (mode 0600) for the other platform verbs.

    Examples:

        kaon login --url http://127.0.0.1:8080 --key kaon_3f9c…

        kaon login --url https://kaon.example.com   (asks for the key)
    """
    if not key:
        key = typer.prompt("API key", hide_input=True)
    url = url.rstrip("/")
    try:
        with connect(url, key) as client:
            me = client.me()
    except AuthError as exc:
        raise AuthError(f"{url} refused this key: {exc.message}",
                        hint="Copy the key again (as `kaon up` or `kaon keys create` printed "
                             "it), or create one with `kaon keys create NAME` where you are "
                             "logged in.") from None
    except NotFoundError:
        raise NotFoundError(f"{url} is not a Kaon platform: it has no /api/v1/me.",
                            hint="Give the URL `kaon up` printed (a `kaon serve` model server "
                                 "needs no login).") from None
    path = save_credentials(url, key)
    if json_:
        print_json({"url": url, "credentials": str(path), **me})
        return
    console.print(f"Logged in to {url} as [bold]{me['email']}[/] (workspace "
                  f"{me['workspace']['name']}, role {me['role']}, scopes "
                  f"{', '.join(me['scopes'])}).\nSaved to {path} (readable by you only).",
                  soft_wrap=True)


def logout(json_: Json = False) -> None:
    """Forget the saved URL and key (delete KAON_HOME/credentials.json). The key itself stays
    valid: revoke it with `kaon keys revoke ID`.

    Example: kaon logout
    """
    path = credentials_path()
    removed = remove_credentials()
    if json_:
        print_json({"removed": removed, "credentials": str(path)})
    else:
        console.print(f"Removed {path}." if removed else "Not logged in; nothing to remove.")


def whoami(url: Url = None, key: Key = None, json_: Json = False) -> None:
    """The user, workspace, role and scopes the API key belongs to.

    Examples:

        kaon whoami

        KAON_API_KEY=kaon_… kaon whoami --url http://127.0.0.1:8080 --json
    """
    with connect(url, key) as client:
        me = client.me()
        base = client.url
    if json_:
        print_json({"url": base, **me})
        return
    table = Table(show_header=False, title="whoami")
    for name, value in (("url", base), ("user", f"{me['name']} <{me['email']}> ({me['user_id']})"),
                        ("workspace", f"{me['workspace']['name']} ({me['workspace']['id']})"),
                        ("role", me["role"]), ("key", me["key_id"] or "-"),
                        ("scopes", ", ".join(me["scopes"]))):
        table.add_row(name, value)
    console.print(table)


# ---- keys ------------------------------------------------------------------------------------
@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A name to recognise the key by, e.g. ci.")],
    scope: Annotated[list[Scope] | None, typer.Option(
        "--scope", "-s", help="What the key may do (repeatable; default: inference).")
    ] = None,
    url: Url = None, key: Key = None, json_: Json = False,
) -> None:
    """Create an API key for yourself; its secret is printed this once.

    Examples:

        kaon keys create ci --scope inference --scope train

        kaon keys create reader --scope read --json
    """
    with connect(url, key) as client:
        made = client.create_key(name, [s.value for s in scope or [Scope.inference]])
    if json_:
        print_json(made)
        return
    console.print(f"Created key {made['id']} ({made['name']}; scopes "
                  f"{', '.join(made['scopes'])}):\n\n  {made['secret']}\n", soft_wrap=True)
    console_err.print("[yellow]Copy it now: the secret is not shown again.[/]")


@keys_app.command("list")
def keys_list(url: Url = None, key: Key = None, json_: Json = False) -> None:
    """API keys: all of the workspace's for admins, else your own. Secrets are never shown.

    Example: kaon keys list
    """
    with connect(url, key) as client:
        rows = client.keys()
    if json_:
        print_json(rows)
        return
    table = Table(title="API keys")
    for col in ("id", "name", "prefix", "scopes", "last used", "state"):
        table.add_column(col, no_wrap=col in ("id", "prefix", "last used"))
    for k in rows:
        table.add_row(k["id"], k["name"], k["prefix"], ", ".join(k["scopes"]),
                      when(k["last_used_at"]) or "never",
                      "revoked" if k["revoked_at"] else "active")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id (key-…).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")
                   ] = False,
    url: Url = None, key: Key = None, json_: Json = False,
) -> None:
    """Revoke an API key: it stops working at once (within a second at the gateway).

    Example: kaon keys revoke key-0123456789ab --yes
    """
    if not yes:
        confirm(f"Revoke API key {key_id}?")
    with connect(url, key) as client:
        row = client.revoke_key(key_id)
    print_json(row) if json_ else console.print(
        f"Revoked {row['id']} ({row['name']}) at {when(row['revoked_at'])}.")


# ---- members ---------------------------------------------------------------------------------
@members_app.command("list")
def members_list(url: Url = None, key: Key = None, json_: Json = False) -> None:
    """The workspace's members and their roles.

    Example: kaon members list
    """
    with connect(url, key) as client:
        rows = client.members()
    if json_:
        print_json(rows)
        return
    table = Table(title="members")
    for col in ("user id", "email", "name", "role", "since"):
        table.add_column(col, no_wrap=col in ("user id", "email"))
    for m in rows:
        table.add_row(m["user_id"], m["email"], m["name"], m["role"], when(m["created_at"]))
    console.print(table)


@members_app.command("add")
def members_add(
    email: Annotated[str, typer.Argument(help="The new member's e-mail address.")],
    role: Annotated[Role, typer.Option("--role", help="What the member may do.")
                    ] = Role.member,
    name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
    url: Url = None, key: Key = None, json_: Json = False,
) -> None:
    """Add a member (needs the admin scope); prints their first API key, shown once.

    Example: kaon members add ada@example.com --role admin
    """
    with connect(url, key) as client:
        made = client.add_member(email, role.value, name)
    if json_:
        print_json(made)
        return
    member, new_key = made["member"], made["key"]
    console.print(f"Added {member['email']} ({member['user_id']}) as {member['role']}. "
                  f"Their API key:\n\n  {new_key['secret']}\n", soft_wrap=True)
    console_err.print("[yellow]Hand it over now: the secret is not shown again.[/]")


@members_app.command("remove")
def members_remove(
    user_id: Annotated[str, typer.Argument(metavar="USER_ID", help="The member's user id.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")
                   ] = False,
    url: Url = None, key: Key = None, json_: Json = False,
) -> None:
    """Remove a member and revoke their keys in this workspace.

    Example: kaon members remove usr-0123456789ab --yes
    """
    if not yes:
        confirm(f"Remove member {user_id} and revoke their keys?")
    with connect(url, key) as client:
        client.remove_member(user_id)
    print_json({"removed": user_id}) if json_ else console.print(f"Removed {user_id}.")


# ---- plans, subscription, usage, invoices ---------------------------------------------------
def plans(url: Url = None, key: Key = None, json_: Json = False) -> None:
    """The plans on offer: price, what is included each month, limits and overage prices.

    Examples:

        kaon plans

        kaon plans --json
    """
    with connect(url, key) as client:
        catalog = client.plans()
        current = client.subscription()["plan"] if not json_ else None
    if json_:
        print_json(catalog)
        return
    table = Table(title="plans, per month (* the workspace's plan)")
    table.add_column("")
    for p in catalog["plans"]:
        table.add_column(p["name"] + (" *" if p["name"] == current else ""), justify="right")
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("price", lambda p: money(p["price_cents"])),
        ("included inference requests", lambda p: f"{p['included_inference_requests']:,}"),
        ("included training seconds", lambda p: f"{p['included_training_seconds']:,}"),
        ("rate limit (requests/s, burst)", lambda p: f"{p['rate_limit_rps']:g}, {p['burst']}"),
        ("deployments", lambda p: str(p["max_deployments"])),
        ("replicas per deployment", lambda p: str(p["max_replicas"])),
        ("features", lambda p: ", ".join(p["features"]) or "-"),
        ("streams open at once", lambda p: str(p["max_streams"])
         if "streams" in p["features"] else "-"),
        ("hard cap (429 past the quota)", lambda p: "yes" if p["hard_cap"] else "no"),
        ("overage ¢/request", lambda p: "-" if p["hard_cap"]
         else p["inference_cents_per_request"]),
        ("overage ¢/training second", lambda p: "-" if p["hard_cap"]
         else p["training_cents_per_second"]),
    ]
    for label, cell in rows:
        table.add_row(label, *(cell(p) for p in catalog["plans"]))
    console.print(table)


def subscribe(
    plan: Annotated[str | None, typer.Argument(help="The plan, e.g. pro (see `kaon plans`).")
                    ] = None,
    cancel: Annotated[bool, typer.Option("--cancel", help="Cancel at the end of the period.")
                      ] = False,
    url: Url = None, key: Key = None, json_: Json = False,
) -> None:
    """Subscribe the workspace to a plan or change plan (prorated by the second; needs the admin
    scope), or cancel at the end of the current period.

    Examples:

        kaon subscribe pro

        kaon subscribe --cancel
    """
    if (plan is None) == (not cancel):
        raise ConfigError("Give a plan, or --cancel (not both).",
                          hint="E.g. `kaon subscribe pro`; `kaon plans` lists them.")
    with connect(url, key) as client:
        sub = client.cancel_subscription() if cancel else client.subscribe(plan or "")
    if json_:
        print_json(sub)
    elif sub["cancel_at_period_end"]:
        console.print(f"The {sub['plan']} subscription ends on {sub['period_end']}; the "
                      "workspace then moves to the default plan.")
    else:
        console.print(f"Subscribed to [bold]{sub['plan']}[/] ({sub['status']}); current "
                      f"period {sub['period_start']} → {sub['period_end']}.")


def usage(
    period: Annotated[str | None, typer.Option("--period", help="Month YYYY-MM (default: "
                                                                 "this one).")] = None,
    url: Url = None, key: Key = None, json_: Json = False,
) -> None:
    """Usage for a month: used, included and overage per metric, and the plan.

    Examples:

        kaon usage

        kaon usage --period 2026-04 --json
    """
    with connect(url, key) as client:
        report = client.usage(period)
    if json_:
        print_json(report)
        return
    console.print(f"[bold]{report['period']}[/]: {report['plan']} plan, "
                  f"{'hard cap (429 past the quota)' if report['hard_cap'] else 'overage billed'}"
                  f"; resets {when(report['reset_at'])} UTC", soft_wrap=True)
    table = Table()
    for col in ("metric", "used", "included", "overage"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for metric, m in report["metrics"].items():
        shared = m.get("shared_with")
        included = (f"in {shared}" if shared  # one allowance for both
                    else "unlimited" if m["included"] is None else f"{m['included']:,}")
        others = m.get("counted", m["used"]) - m["used"]
        used = f"{m['used']:,}" + (f" (+{others:,} drawn on it)" if others else "")
        table.add_row(metric, used, included, f"{m['overage']:,}")
    console.print(table)


def invoices(
    period: Annotated[str | None, typer.Argument(
        help="A finished month YYYY-MM (its invoice is made if needed), or an invoice id.")
    ] = None,
    html: Annotated[Path | None, typer.Option("--html", dir_okay=False,
                                              help="Write the printable HTML page here.")
                    ] = None,
    url: Url = None, key: Key = None, json_: Json = False,
) -> None:
    """List the invoices; or show one month's invoice, making it first if needed (a
    finished month; needs the admin scope), and with --html write its printable page.

    Examples:

        kaon invoices

        kaon invoices 2026-04 --html invoice-2026-04.html
    """
    if html is not None and period is None:
        raise ConfigError("--html needs an invoice: give PERIOD (YYYY-MM) or an invoice id.",
                          hint="E.g. `kaon invoices 2026-04 --html invoice.html`.")
    with connect(url, key) as client:
        if period is None:
            rows = client.invoices()
            if json_:
                print_json(rows)
                return
            table = Table(title="invoices")
            for col in ("id", "period", "total", "lines", "issued"):
                table.add_column(col, justify="right" if col == "total" else "left")
            for i in rows:
                table.add_row(i["id"], i["period"], money(i["total_cents"], i["currency"]),
                              str(len(i["lines"])), when(i["created_at"]))
            console.print(table if rows else "No invoices yet. Make one for a finished month: "
                                             "kaon invoices YYYY-MM")
            return
        invoice = _find_or_make(client, period)
        page = client.invoice_html(invoice["id"]) if html is not None else None
    if page is not None and html is not None:
        html.write_text(page, encoding="utf-8")
    if json_:
        print_json({**invoice, "html": str(html) if html else None})
        return
    table = Table(title=f"invoice {invoice['id']}, {invoice['period']}")
    for col in ("description", "quantity", "unit price (¢)", "amount"):
        table.add_column(col, justify="left" if col == "description" else "right")
    for line in invoice["lines"]:
        table.add_row(line["description"], line["quantity"], line["unit_price_cents"],
                      money(line["amount_cents"], invoice["currency"]))
    table.add_section()
    total = money(invoice["total_cents"], invoice["currency"])
    table.add_row("[bold]total[/]", "", "", f"[bold]{total}[/]")
    console.print(table)
    if html is not None:
        console.print(f"Wrote {html}.")


def _find_or_make(client: Client, period: str) -> dict[str, Any]:
    """The invoice with this id, or of this month (made now if it does not exist yet)."""
    try:
        return client.invoice(period)
    except NotFoundError:
        if period.startswith("inv-"):
            raise
        return client.generate_invoice(period)
