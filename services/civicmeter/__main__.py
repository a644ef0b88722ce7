"""The `civicmeter` command: one sub-command per service.

civicmeter ingest | processor | sink | query | decision | notifier | billing | migrate
civicmeter rerate | reconcile   billing commands over the stored ledger
civicmeter prices check FILE..  check price catalogs and their FX tables (exit 1 on an error)
civicmeter export focus --from 2025-01 --to 2025-02 [--organization X] --format csv|parquet
                                a FOCUS 1.2 file of whole months from the query API
civicmeter report --month 2025-01 --organization seoul [--output FILE] [--target H:P] [--token T]
                                an HTML report with charts of spend, seats and alerts
civicmeter serve sink query     several services in one process; required for the
                                embedded ClickHouse, which one process opens at a time
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from civicmeter.core.heap import steady_heap
from civicmeter.core.runtime import ServiceMain, configure_logging, run_until_signalled

SERVABLE = ("ingest", "sink", "query", "decision", "notifier", "billing")


def _service(name: str, env: Mapping[str, str], alone: bool = True) -> ServiceMain:
    """Build one service's main from the environment (imports stay lazy: faust is heavy).
    `alone`: the only service of this process (none shares its storage)."""
    from civicmeter.core.telemetry.setup import setup_telemetry

    telemetry = setup_telemetry(name, env)
    if name == "ingest":
        from civicmeter.core.config import IngestSettings
        from civicmeter.ingest import service as ingest
        from civicmeter.ingest.otlp import AttributeMapping

        ingest_settings = IngestSettings.from_env(env)
        attributes = AttributeMapping.from_env(env)
        return lambda stop: ingest.serve(ingest_settings, telemetry, stop, attributes)
    if name == "sink":
        from civicmeter.core.config import SinkSettings
        from civicmeter.core.store.connection import open_storage
        from civicmeter.sink import service as sink

        sink_settings = SinkSettings.from_env(env)
        sink_storage = open_storage(sink_settings.clickhouse)
        return lambda stop: sink.serve(sink_settings, sink_storage, telemetry, stop)
    if name == "query":
        from civicmeter.core.config import QuerySettings
        from civicmeter.core.store.connection import open_storage
        from civicmeter.query import server as query

        query_settings = QuerySettings.from_env(env)
        query_storage = open_storage(query_settings.clickhouse)
        return lambda stop: query.serve(query_settings, query_storage, stop)
    if name == "decision":
        from civicmeter.core.store.connection import StorageCalls, open_storage
        from civicmeter.core.store.storage_process import StorageProcess
        from civicmeter.query import decision_server

        decision_settings = decision_server.settings_from_env(env)
        if decision_settings.processes > 1:  # `civicmeter decision` runs the group (main)
            from civicmeter.core.config import ConfigError

            raise ConfigError(
                "CIVICMETER_DECISION_PROCESSES: several processes serve the decision service "
                "only when it runs alone (`civicmeter decision`), not beside other services"
            )
        # Alone, its storage work runs in a child process, off the calls' GIL.
        decision_storage: StorageCalls = (
            StorageProcess(decision_settings.clickhouse)
            if alone
            else open_storage(decision_settings.clickhouse)
        )
        return lambda stop: decision_server.serve(decision_settings, decision_storage, stop)
    if name == "notifier":
        from civicmeter.core.config import NotifierSettings
        from civicmeter.core.store.connection import open_storage
        from civicmeter.notifier import service as notifier
        from civicmeter.policy.organization import load_policies

        notifier_settings = NotifierSettings.from_env(env)
        policies = load_policies(notifier_settings.policy_file)
        notifier_storage = open_storage(notifier_settings.clickhouse)
        return lambda stop: notifier.serve(
            notifier_settings, notifier_storage, policies, telemetry, env, stop
        )
    if name == "billing":
        from civicmeter.billing import service as billing
        from civicmeter.core.config import BillingSettings
        from civicmeter.core.store.connection import open_storage

        billing_settings = BillingSettings.from_env(env)
        billing_storage = open_storage(billing_settings.clickhouse)
        return lambda stop: billing.serve(billing_settings, billing_storage, telemetry, stop)
    raise SystemExit(f"unknown service {name!r}; choose from {', '.join(SERVABLE)}")


def _decision_processes(env: Mapping[str, str]) -> int:
    from civicmeter.query.decision_server import settings_from_env

    return settings_from_env(env).processes


def _run_processor(env: Mapping[str, str], log_level: str) -> None:
    from civicmeter.core.config import ProcessorSettings
    from civicmeter.core.telemetry.setup import setup_telemetry
    from civicmeter.processor.worker import run

    settings = ProcessorSettings.from_env(env)
    run(settings, setup_telemetry("processor", env), log_level)


def _migrate(env: Mapping[str, str]) -> None:
    from civicmeter.core.config import ClickHouseSettings
    from civicmeter.core.store.connection import connect
    from civicmeter.core.store.migrations import migrate

    applied = migrate(connect(ClickHouseSettings.from_env(env)))
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


def _api_key(key_id: str, organizations: list[str], role: str, gateway_ids: list[str]) -> None:
    import yaml

    from civicmeter.core.access.auth import hash_token, new_token, parse_api_keys

    token = new_token()
    entry: dict[str, object] = {"id": key_id, "role": role}
    if len(organizations) == 1:
        entry["organization_id"] = organizations[0]
    else:
        entry["organization_ids"] = organizations  # a gateway reporting for several
    if gateway_ids:
        entry["gateway_ids"] = gateway_ids
    entry["sha256"] = hash_token(token)
    parse_api_keys({"keys": [entry]}, "the new key")  # the same checks as loading the file
    print(f"token (give it to the caller, it is shown once): {token}", file=sys.stderr)
    print(yaml.safe_dump({"keys": [entry]}, sort_keys=False), end="")


def _check_prices(files: Sequence[str]) -> int:
    """Load each catalog (and its FX table) as the services would; say what is wrong where."""
    from pathlib import Path

    from civicmeter.core.pricing import CatalogError, load_catalog

    failed = 0
    for name in files:
        try:
            catalog = load_catalog(Path(name))
        except CatalogError as exc:
            print(exc, file=sys.stderr)
            failed += 1
        else:
            print(f"{name}: ok: {catalog.describe()}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="civicmeter", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--log-level", default=os.environ.get("CIVICMETER_LOG_LEVEL", "INFO"))
    commands = parser.add_subparsers(dest="command", required=True)
    for name in SERVABLE:
        commands.add_parser(name, help=f"run the {name} service")
    commands.add_parser("processor", help="run the processor (faust worker)")
    commands.add_parser("migrate", help="apply ClickHouse schema migrations and exit")
    api_key = commands.add_parser(
        "api-key", help="make a token and its key entry (query API, or a gateway's for ingest)"
    )
    api_key.add_argument("--id", required=True)
    api_key.add_argument(
        "--organization",
        required=True,
        action="append",
        help="an organisation id, or '*'; a gateway key may repeat it",
    )
    api_key.add_argument(
        "--role",
        required=True,
        choices=["finance-reader", "auditor", "security", "admin", "gateway"],
    )
    api_key.add_argument(
        "--gateway-id",
        action="append",
        default=[],
        help="gateway keys: a gateway id its events may carry (repeatable; none: any)",
    )
    from civicmeter.billing import commands as billing_commands

    billing_commands.register(commands)
    from civicmeter.client import focus_export

    focus_export.register(commands)
    from civicmeter.client.report import command as report_command

    report_command.register(commands)
    prices = commands.add_parser("prices", help="work with price catalog files")
    prices_commands = prices.add_subparsers(dest="prices_command", required=True)
    check = prices_commands.add_parser(
        "check", help="check catalogs and the FX tables they name; exit 1 on an error"
    )
    check.add_argument("files", nargs="+", metavar="FILE")
    serve = commands.add_parser("serve", help="run several services in one process")
    serve.add_argument("services", nargs="+", choices=SERVABLE)
    args = parser.parse_args(argv)
    steady_heap()
    env = dict(os.environ)
    configure_logging(args.log_level)
    from civicmeter.billing.seat_file import SeatFileError
    from civicmeter.core.access.auth import ApiKeyError
    from civicmeter.core.config import ConfigError
    from civicmeter.core.pricing import CatalogError
    from civicmeter.policy.organization import PolicyError

    try:
        if args.command == "processor":
            _run_processor(env, args.log_level)
        elif args.command == "migrate":
            _migrate(env)
        elif args.command in billing_commands.COMMANDS:
            raise SystemExit(billing_commands.run(args, env))
        elif args.command == "export":
            raise SystemExit(focus_export.run(args, env))
        elif args.command == "report":
            raise SystemExit(report_command.run(args, env))
        elif args.command == "prices":
            raise SystemExit(_check_prices(args.files))
        elif args.command == "api-key":
            _api_key(args.id, args.organization, args.role, args.gateway_id)
        elif args.command == "decision" and _decision_processes(env) > 1:
            from civicmeter.query import decision_processes

            raise SystemExit(decision_processes.run(env, args.log_level))
        else:
            names = args.services if args.command == "serve" else [args.command]
            services = list(dict.fromkeys(names))
            alone = len(services) == 1
            run_until_signalled(*[_service(name, env, alone) for name in services])
    except (ConfigError, CatalogError, PolicyError, ApiKeyError, SeatFileError) as exc:
        print(f"civicmeter: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
