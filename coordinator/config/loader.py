"""Read, check and type the six configuration files, reporting every problem at once.

Order of work: each file is read and parsed (numbers with a fraction become `Decimal`), checked
against its JSON Schema, then the checks a schema cannot express run (duplicate bot names, the
strategy registry, cross-file references, the modes this version can run). Only a file with no
problem so far is turned into its frozen model. Every problem of every file is collected into one
`ConfigError`, so an operator fixes a broken configuration in one pass instead of one error a run.

The schemas always come from the installed package, never from the directory being loaded: an
operator's copy of the configuration cannot loosen its own rules.

This module does blocking file I/O; call it before the event loop starts or via
`asyncio.to_thread`.
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from jsonschema import Draft202012Validator
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from coordinator.config.alerting import AlertsConfig
from coordinator.config.issues import (
    ConfigError,
    ConfigIssue,
    json_path,
    pydantic_error_issues,
    schema_error_issues,
    search,
)
from coordinator.config.models import (
    SYMBOL_PATTERN,
    ApiEndpointsConfig,
    BotLimitsConfig,
    BotMode,
    BotsConfig,
    CoordinatorConfig,
    KillSwitchConfig,
    RecoverySettings,
    paper_account_conflict,
    split_symbol,
)

if TYPE_CHECKING:
    from bots.strategies.base import StrategySpec

BOTS_FILE: Final = "bots.json"
LIMITS_FILE: Final = "bot-limits.json"
KILL_SWITCH_FILE: Final = "kill-switch.json"
RECOVERY_FILE: Final = "recovery-settings.json"
ENDPOINTS_FILE: Final = "api-endpoints.json"
ALERTS_FILE: Final = "alerts.json"

CONFIG_FILES: Final[tuple[str, ...]] = (
    BOTS_FILE,
    LIMITS_FILE,
    KILL_SWITCH_FILE,
    RECOVERY_FILE,
    ENDPOINTS_FILE,
    ALERTS_FILE,
)

_MODELS: Final[dict[str, type[BaseModel]]] = {
    BOTS_FILE: BotsConfig,
    LIMITS_FILE: BotLimitsConfig,
    KILL_SWITCH_FILE: KillSwitchConfig,
    RECOVERY_FILE: RecoverySettings,
    ENDPOINTS_FILE: ApiEndpointsConfig,
    ALERTS_FILE: AlertsConfig,
}

_SOURCE_CONFIG_DIR: Final = Path(__file__).resolve().parents[2] / "config"


# --- where the shipped files live ----------------------------------------------------------------


def embedded_config_dir() -> Path:
    """The shipped default configuration (the installed package `coordinator_defaults`)."""
    return _package_dir("coordinator_defaults", BOTS_FILE, _SOURCE_CONFIG_DIR)


def schema_dir() -> Path:
    """The JSON Schemas every configuration is checked against (`coordinator_defaults.schemas`)."""
    return _package_dir(
        "coordinator_defaults.schemas", "bots.schema.json", _SOURCE_CONFIG_DIR / "schemas"
    )


def _package_dir(package: str, marker: str, fallback: Path) -> Path:
    """The directory of a data-only package, found through the file `marker` in it.

    The packages have no `__init__.py`, so they are namespace packages. On Python 3.11,
    `importlib.resources.files` fails on one that an editable install provides (the path
    placeholder setuptools adds is not a directory) and returns a non-`Path` multiplexed object
    for an ordinary one; hence the marker file and the walk over `__path__`.
    """
    try:
        found = resources.files(package).joinpath(marker)
    except (ImportError, OSError):
        found = None
    if isinstance(found, Path) and found.is_file():
        return found.parent
    try:
        module = importlib.import_module(package)
    except ImportError:
        return fallback
    for entry in getattr(module, "__path__", ()):
        if (Path(entry) / marker).is_file():
            return Path(entry)
    return fallback


# --- reading -------------------------------------------------------------------------------------


class _JsonObject(dict[str, Any]):
    """A parsed JSON object that remembers keys given twice (plain `json` keeps the last one)."""

    duplicate_keys: list[str]


def _object_pairs(pairs: list[tuple[str, Any]]) -> _JsonObject:
    obj = _JsonObject()
    obj.duplicate_keys = []
    for key, value in pairs:
        if key in obj:
            obj.duplicate_keys.append(key)
        obj[key] = value
    return obj


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _read_json(directory: Path, file: str) -> tuple[Any, list[ConfigIssue]]:
    """The parsed document, or `None` and the reason it could not be read."""
    path = directory / file
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [ConfigIssue(file, "$", f"file is missing (looked for {path})")]
    except UnicodeDecodeError as exc:
        return None, [ConfigIssue(file, "$", f"file is not UTF-8 text: {exc.reason}")]
    except OSError as exc:
        return None, [ConfigIssue(file, "$", f"cannot read file: {exc.strerror or exc}")]
    try:
        data = json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_refuse_constant,
            object_pairs_hook=_object_pairs,
        )
    except json.JSONDecodeError as exc:
        reason = f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        return None, [ConfigIssue(file, "$", reason)]
    except ValueError as exc:
        return None, [ConfigIssue(file, "$", f"invalid JSON: {exc}")]
    if data is None:  # JSON `null`: a document, but not one (None means "could not read")
        return None, [ConfigIssue(file, "$", "must be a JSON object, not null")]
    issues: list[ConfigIssue] = []
    return _plain(data, file, (), issues), issues


def _plain(value: Any, file: str, at: tuple[str | int, ...], issues: list[ConfigIssue]) -> Any:
    """Plain dicts again, with a problem for each key that an object gives twice."""
    if isinstance(value, _JsonObject):
        for key in dict.fromkeys(value.duplicate_keys):
            issues.append(ConfigIssue(file, json_path((*at, key)), f"key {key!r} is given twice"))
        return {k: _plain(v, file, (*at, k), issues) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, file, (*at, i), issues) for i, v in enumerate(value)]
    return value


# --- schema validation ---------------------------------------------------------------------------


@functools.cache
def _validator(file: str) -> Draft202012Validator:
    schema_file = schema_dir() / file.replace(".json", ".schema.json")
    # Decimal here too: a float bound such as 0.05 compares unequal to Decimal("0.05").
    schema = json.loads(schema_file.read_text(encoding="utf-8"), parse_float=Decimal)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _schema_issues(file: str, data: Any) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for error in _validator(file).iter_errors(data):
        issues.extend(schema_error_issues(file, error))
    return issues


# --- checks a schema cannot express --------------------------------------------------------------


def _strategy_specs() -> Mapping[str, StrategySpec]:
    """Imported here, not at module level: the registry imports every strategy's code."""
    from bots.strategies.registry import STRATEGIES

    return STRATEGIES


def _bot_entries(bots_data: Any) -> list[tuple[int, dict[str, Any]]]:
    """The bot objects of bots.json with their index, tolerating a malformed document."""
    bots = bots_data.get("bots") if isinstance(bots_data, dict) else None
    if not isinstance(bots, list):
        return []
    return [(i, bot) for i, bot in enumerate(bots) if isinstance(bot, dict)]


def check_market_data_for_mode(index: int, bot: Mapping[str, Any]) -> ConfigIssue | None:
    """A bot that trades on the exchange (live, safe, read-only) reads the exchange's market:
    an offline simulated price would let it trade real money against a made-up market."""
    mode, source = bot.get("mode"), bot.get("market_data")
    trades_for_real = isinstance(mode, str) and mode in set(BotMode) and mode != BotMode.PAPER
    if trades_for_real and source == "offline":
        reason = (
            f"mode {mode!r} trades on the exchange, so market_data must be 'exchange', "
            "not 'offline' (an offline price is only for paper bots)"
        )
        return ConfigIssue(BOTS_FILE, json_path(("bots", index, "market_data")), reason)
    return None


def _check_bots(bots_data: Any) -> tuple[list[ConfigIssue], dict[int, BaseModel]]:
    """Semantic problems of bots.json, and the validated strategy params by bot index."""
    issues: list[ConfigIssue] = []
    params: dict[int, BaseModel] = {}
    seen: set[str] = set()
    paper_accounts: dict[str, tuple[str, str]] = {}  # account -> (first bot, its exchange)
    for index, bot in _bot_entries(bots_data):
        name = bot.get("name")
        if isinstance(name, str):
            if name in seen:
                path = json_path(("bots", index, "name"))
                issues.append(ConfigIssue(BOTS_FILE, path, f"duplicate bot name {name!r}"))
            seen.add(name)
        if (issue := check_market_data_for_mode(index, bot)) is not None:
            issues.append(issue)
        issues.extend(_check_quote_balance(index, bot))
        if (issue := _check_paper_account(index, bot, paper_accounts)) is not None:
            issues.append(issue)
        strategy = bot.get("strategy")
        if isinstance(strategy, dict):
            found, strategy_issues = _check_strategy(index, strategy)
            issues.extend(strategy_issues)
            if found is not None:
                params[index] = found
    return issues, params


def _check_paper_account(
    index: int, bot: dict[str, Any], first: dict[str, tuple[str, str]]
) -> ConfigIssue | None:
    """Bots that share a paper account (self-trade prevention) must be on one exchange: the
    account stands for one venue account. `first` remembers each account's first bot."""
    paper = bot.get("paper")
    account = paper.get("account") if isinstance(paper, dict) else None
    name, exchange = bot.get("name"), bot.get("exchange")
    if not isinstance(account, str) or not isinstance(exchange, str):
        return None  # no account named, or the schema reports its shape
    owner, owner_exchange = first.setdefault(account, (str(name), exchange))
    if owner_exchange == exchange:
        return None
    path = json_path(("bots", index, "paper", "account"))
    reason = paper_account_conflict(str(name), exchange, owner, owner_exchange, account)
    return ConfigIssue(BOTS_FILE, path, reason)


def _check_strategy(
    index: int, strategy: dict[str, Any]
) -> tuple[BaseModel | None, list[ConfigIssue]]:
    name, raw_params = strategy.get("name"), strategy.get("params", {})
    if not isinstance(name, str):
        return None, []
    specs = _strategy_specs()
    spec = specs.get(name)
    if spec is None:
        path = json_path(("bots", index, "strategy", "name"))
        reason = f"unknown strategy {name!r}; known: {', '.join(sorted(specs))}"
        return None, [ConfigIssue(BOTS_FILE, path, reason)]
    if not isinstance(raw_params, dict):
        return None, []  # the schema reports it
    try:
        return spec.params_model.model_validate(raw_params), []
    except PydanticValidationError as exc:
        return None, pydantic_error_issues(BOTS_FILE, exc, ("bots", index, "strategy", "params"))


def _check_quote_balance(index: int, bot: dict[str, Any]) -> list[ConfigIssue]:
    symbol, paper = bot.get("symbol"), bot.get("paper")
    if not isinstance(symbol, str) or not search(SYMBOL_PATTERN, symbol):
        return []
    balances = paper.get("initial_balances") if isinstance(paper, dict) else None
    quote = split_symbol(symbol)[1]
    if not isinstance(balances, dict) or quote in balances:
        return []
    path = json_path(("bots", index, "paper", "initial_balances"))
    return [ConfigIssue(BOTS_FILE, path, f"must contain {symbol}'s quote asset {quote!r}")]


def _check_limit_bots(
    limits_data: Any,
    bot_names: Sequence[str],
    file: str = LIMITS_FILE,
    at: tuple[str, ...] = (),
) -> list[ConfigIssue]:
    """Per-bot overrides (`bots` under `at` in `file`) of bots that do not exist."""
    for key in at:
        limits_data = limits_data.get(key) if isinstance(limits_data, dict) else None
    overrides = limits_data.get("bots") if isinstance(limits_data, dict) else None
    if not isinstance(overrides, dict):
        return []
    known = ", ".join(dict.fromkeys(bot_names)) or "none"
    return [
        ConfigIssue(
            file,
            json_path((*at, "bots", name)),
            f"no bot named {name!r} in {BOTS_FILE} (bots: {known})",
        )
        for name in overrides
        if name not in bot_names
    ]


# --- the whole -----------------------------------------------------------------------------------


def load_config(config_dir: Path) -> CoordinatorConfig:
    """The validated configuration in `config_dir`; `ConfigError` lists every problem found."""
    issues: list[ConfigIssue] = []
    documents: dict[str, Any] = {}
    for file in CONFIG_FILES:
        data, read_issues = _read_json(config_dir, file)
        issues.extend(read_issues)
        if data is not None:
            documents[file] = data
            issues.extend(_schema_issues(file, data))
    bots_data = documents.get(BOTS_FILE)
    bot_issues, params = _check_bots(bots_data)
    issues.extend(bot_issues)
    names = [bot.get("name") for _, bot in _bot_entries(bots_data)]
    names_known = bots_data is not None and all(isinstance(name, str) for name in names)
    if LIMITS_FILE in documents and names_known:
        # Without every bot's name, overrides of the unnamed bots would be reported as orphans.
        issues.extend(_check_limit_bots(documents[LIMITS_FILE], [str(n) for n in names]))
    if KILL_SWITCH_FILE in documents and names_known:
        issues.extend(
            _check_limit_bots(
                documents[KILL_SWITCH_FILE], [str(n) for n in names], KILL_SWITCH_FILE,
                ("execution_throttle",),
            )
        )  # fmt: skip
    if BOTS_FILE in documents:
        documents[BOTS_FILE] = _with_params(documents[BOTS_FILE], params)

    models: dict[str, BaseModel] = {}
    troubled = {issue.file for issue in issues}
    for file, data in documents.items():
        if file in troubled:
            continue  # its problems are reported already; a model error would only repeat them
        try:
            models[file] = _MODELS[file].model_validate(data)
        except PydanticValidationError as exc:
            issues.extend(pydantic_error_issues(file, exc))
    if issues:
        raise ConfigError(sorted(issues, key=lambda issue: CONFIG_FILES.index(issue.file)))
    return CoordinatorConfig.model_validate(
        {
            "bots": models[BOTS_FILE],
            "limits": models[LIMITS_FILE],
            "kill_switch": models[KILL_SWITCH_FILE],
            "recovery": models[RECOVERY_FILE],
            "endpoints": models[ENDPOINTS_FILE],
            "alerts": models[ALERTS_FILE],
            "source_dir": config_dir,
        }
    )


def _with_params(bots_data: Any, params: Mapping[int, BaseModel]) -> Any:
    """bots.json with each strategy's raw params replaced by its validated params model."""
    if not params:
        return bots_data
    bots = list(bots_data["bots"])
    for index, validated in params.items():
        bot = bots[index]
        bots[index] = {**bot, "strategy": {**bot["strategy"], "params": validated}}
    return {**bots_data, "bots": bots}
