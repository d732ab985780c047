"""Settings: one frozen value built from command-line flags and MASCOT_* variables; the only reader of os.environ."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import math
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypedDict, TypeVar

MODEL_CHOICES_HELP = (
    "'auto' (the real Kandinsky 2.2 when a GPU and its weights are available, else the offline preview model), "
    "'kandinsky' (the hub's kandinsky-community/kandinsky-2-2-prior and -decoder), 'tiny' (the offline preview "
    "model), or a folder holding prior/ and decoder/ pipelines"
)

T = TypeVar("T")

ADDRESS_QUOTA_FACTOR = 5  # browsers' worth of mascots one network address may make per day, by default


# PostgreSQL connections one app process uses at most (mascot.store.connections): each store call borrows one for
# milliseconds, so 10 serve dozens of people at once and leave room for several replicas on a server's default 100.
DATABASE_CONNECTIONS = 10


# ---- the house rules: set once from the settings, given to the store and the service when they are built ----------
DAILY_QUOTA = 10  # mascots (images) per browser per UTC day, by default


@dataclass(frozen=True)
class Rules:
    """The house rules: what one browser or one network may do. Each default is written here and only here."""

    daily_quota: int = DAILY_QUOTA  # mascots (images) per browser per UTC day
    address_daily_quota: int = ADDRESS_QUOTA_FACTOR * DAILY_QUOTA  # per network, all its browsers together; 0: no cap
    reports_to_hide: int = 3  # networks whose reports take a mascot out of the gallery until reviewed (0: never)
    likes_per_network: int = 3  # likes of one mascot from one network that count (0: all); see store.likes
    max_queued_per_client: int = 8  # jobs one network may have waiting or running (0: no cap)
    # One office, one address (--one-office): every "per network" rule above counts per browser instead, as a whole
    # office behind one NAT address would otherwise share one network's quota, likes, reports and queue.
    one_office: bool = False


DEFAULT_RULES = Rules()


def rules_from(settings: Settings) -> Rules:
    """The house rules the settings ask for."""
    return Rules(
        daily_quota=settings.daily_quota,
        address_daily_quota=settings.resolved_address_daily_quota,
        reports_to_hide=settings.reports_to_hide,
        likes_per_network=settings.likes_per_network,
        max_queued_per_client=settings.max_queued_per_client,
        one_office=settings.one_office,
    )


# ---- the settings ---------------------------------------------------------------------------------------------------
LOWER_PRECISIONS = ("fp8", "int8")  # MASCOT_LOWER_PRECISION's values besides off (generation/precision.py)


@dataclass(frozen=True)
class SpeedOptions:
    """The fast path's switches (docs/performance.md): each part can be turned off alone to compare with the plain
    path, which `plain()` gives whole. The defaults are the app's; compiling is on only with CUDA unless set."""

    save_in_background: bool = True  # PNG, thumbnail and store writes on saver threads, not the GPU's worker thread
    linear_previews: bool = True  # previews from a latent-to-RGB map fitted to the MoVQ, not a MoVQ decode per preview
    device_noise: bool = True  # each image's torch.Generator on the model's device: no noise copied per step
    host_scheduler: bool = True  # both schedulers' timestep arithmetic on the host: no GPU syncs per step
    offload_image_encoder: bool = True  # the 1.8 B image encoder stays on the CPU until a logo needs it
    cache_logo_embeddings: bool = True  # each logo's CLIP embedding computed once (keyed by its pixels' hash)
    decode_at_once: int = 0  # images MoVQ decodes per call; 0: all unless GPU memory is tight, then one at a time
    compile: bool | None = None  # torch.compile the UNet, prior and MoVQ in the background; None: only with CUDA
    compile_sizes: tuple[int, ...] = (768,)  # square sizes warmed after start (a bucket per size and batch)
    compile_batch_images: tuple[int, ...] = (1,)  # images per run warmed for each size
    # Compile in a child process that fills the persistent cache, then load from it between runs; None: when the
    # GPU's free memory holds a second copy of the model (a compile in this process slows every run beside it).
    compile_process: bool | None = None
    compile_threads: int = 0  # inductor's compile workers; 0: half the cores (the rest serve meanwhile)
    # The child hands its work over as AOTInductor packages, loaded here without tracing (generation/packages.py);
    # off: loaded from the compile cache, which traces each stage here again while generations wait.
    compile_packages: bool = False
    # /healthz answers 503 until every compiled bucket is ready (or left eager): behind a balancer that polls it, only
    # warm replicas serve, so nobody waits for a stage loaded between runs. Off: the eager path serves meanwhile.
    ready_when_compiled: bool = False
    # "fp8" or "int8": the UNet's and the prior's linear layers in lower precision (generation/precision.py); "": off.
    lower_precision: str = ""

    @classmethod
    def plain(cls) -> SpeedOptions:
        """Every part off: the plain diffusers path the fast one is checked against."""
        return cls(
            save_in_background=False,
            linear_previews=False,
            device_noise=False,
            host_scheduler=False,
            offload_image_encoder=False,
            cache_logo_embeddings=False,
            decode_at_once=0,
            compile=False,
        )

    def compiles_on(self, device: str) -> bool:
        """Whether to compile on `device`: as set, else only on CUDA (on a CPU compiling costs more than it saves)."""
        return self.compile if self.compile is not None else device.startswith("cuda")

    def compiles_apart(self, device: str, child_fits: bool) -> bool:
        """Whether to compile in a child process: as set, else on CUDA when a second copy of the model fits."""
        if self.compile_process is not None:
            return self.compile_process
        return device.startswith("cuda") and child_fits


@dataclass(frozen=True)
class Settings:
    """Everything the app is configured with. Flags win over MASCOT_* variables, which win over defaults."""

    model: str = "auto"
    prior: str | None = None
    decoder: str | None = None
    data_dir: Path = Path("data")
    database_url: str | None = None
    database_connections: int = DATABASE_CONNECTIONS  # on PostgreSQL; see DATABASE_CONNECTIONS
    secret: str | None = None
    server_name: str = "127.0.0.1"
    server_port: int = 7860
    share: bool = False
    queue_max_size: int = 64
    max_batch_images: int | None = None  # images one shared run of queued jobs may make; None: 8 on a GPU, 1 on a CPU
    max_queued_per_client: int = DEFAULT_RULES.max_queued_per_client  # see Rules
    trusted_proxies: int = 0  # proxies in front of the app whose X-Forwarded-For we believe (1 on a Space)
    daily_quota: int = DEFAULT_RULES.daily_quota  # see Rules
    # Mascots per network address per UTC day, all its browsers together (0: no cap). None: ADDRESS_QUOTA_FACTOR
    # times daily_quota, since a household or an office shares one address behind NAT.
    address_daily_quota: int | None = None
    reports_to_hide: int = DEFAULT_RULES.reports_to_hide  # see Rules
    likes_per_network: int = DEFAULT_RULES.likes_per_network  # see Rules
    blocked_words: Path | None = None  # a file of words refused in ideas (prompt.wordfilter); None: nothing blocked
    lora: tuple[str, ...] = ()  # LoRA adapters to load, each `name=PATH` or `PATH` (parsed where torch is)
    preview_every: int = 5
    hub_timeout_s: float = 5.0
    speed: SpeedOptions = SpeedOptions()
    # Seconds a SIGTERM waits for the running job to finish and be saved before it is cancelled (docs/deploying.md).
    drain_timeout_s: float = 20.0
    # Names this replica's claims in the database, so that a restart frees its own dead claims at once and never
    # another replica's; default (""): the host and the port (default_replica_id).
    replica_id: str = ""
    # ---- privacy: who may say where a request came from, and the page's public address (see docs/deploying.md)
    # Proxy addresses or CIDR networks (MASCOT_PROXY_ADDRESSES); forwarded headers are believed only from these.
    proxy_addresses: tuple[str, ...] = ()
    public_url: str | None = None  # MASCOT_PUBLIC_URL: the address links and link previews use, e.g. https://x.org
    # ---- a company event (docs/operating.md): a house look on by default, the house brands, one office
    default_lora: str | None = None  # a loaded adapter's name (one of `lora`), chosen for every new mascot
    default_lora_strength: float = 1.0  # its lora_scale, 0-2
    brands_dir: Path | None = None  # a folder of brands, each <slug>/brand.json + its logo (prompt.brands)
    one_office: bool = False  # see Rules.one_office
    # ---- where it runs: a Hugging Face Space, ZeroGPU, agents over MCP (docs/deploying.md)
    on_space: bool = False  # SPACE_ID is set: the app runs on a Hugging Face Space
    storage_warning: str | None = None  # said once at start: a Space without persistent storage loses its mascots
    zero_gpu: bool = False  # MASCOT_ZERO_GPU, else SPACES_ZERO_GPU: each Generate runs its own run in @spaces.GPU
    zero_gpu_duration_s: int = 120  # MASCOT_ZERO_GPU_DURATION_S: the GPU time each Generate asks ZeroGPU for
    mcp_server: bool = False  # --mcp or MASCOT_MCP: Gradio's MCP server at /gradio_api/mcp/ for agents

    def for_zero_gpu(self) -> Settings:
        """On ZeroGPU no compile in the background: there is no GPU outside a request's @spaces.GPU call."""
        return replace(self, speed=replace(self.speed, compile=False)) if self.zero_gpu else self

    @property
    def images_dir(self) -> Path:
        """The only folder the web server may serve files from."""
        return self.data_dir / "images"

    @property
    def downloads_dir(self) -> Path:
        """Stickers and ZIPs made for people to download (mascot.service.downloads), served by our routes only."""
        return self.data_dir / "downloads"

    @property
    def resolved_address_daily_quota(self) -> int:
        """The per-address daily quota: as set, or ADDRESS_QUOTA_FACTOR times the browser's."""
        if self.address_daily_quota is None:
            return ADDRESS_QUOTA_FACTOR * self.daily_quota
        return self.address_daily_quota

    @property
    def rules(self) -> Rules:
        """The house rules these settings ask for (rules_from)."""
        return rules_from(self)

    @property
    def resolved_database_url(self) -> str:
        """The database URL: MASCOT_DATABASE_URL, or SQLite in the data folder."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'mascots.db').resolve()}"


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python app.py`."""
    parser = argparse.ArgumentParser(prog="python app.py", description="Mascot Generator: turn an idea into a mascot.")
    parser.add_argument("--model", help=f"Which model to load: {MODEL_CHOICES_HELP}. Default: auto (MASCOT_MODEL).")
    parser.add_argument("--prior", help="Prior pipeline: a hub id or a folder (MASCOT_PRIOR). Overrides --model's.")
    parser.add_argument("--decoder", help="Decoder pipeline: a hub id or a folder (MASCOT_DECODER).")
    add_storage_arguments(parser)
    parser.add_argument("--share", action="store_true", default=None, help="Also serve on a public share link.")
    parser.add_argument("--host", help="Address to listen on (GRADIO_SERVER_NAME; default 127.0.0.1).")
    parser.add_argument("--port", help="Port to listen on (GRADIO_SERVER_PORT; default 7860).")
    parser.add_argument(
        "--lora",
        action="append",
        metavar="[NAME=]PATH",
        help="A LoRA adapter folder from lora/train.py or lora/convert.py; repeat for more (MASCOT_LORA, "
        "comma-separated). People pick it by NAME (default: the folder's name) in the Advanced panel.",
    )
    parser.add_argument(
        "--daily-quota",
        help=f"Mascots each browser may make per UTC day (MASCOT_DAILY_QUOTA; default {DAILY_QUOTA}).",
    )
    parser.add_argument(
        "--address-daily-quota",
        help="Mascots all browsers from one network address may make per UTC day together; 0: no cap "
        f"(MASCOT_ADDRESS_DAILY_QUOTA; default {ADDRESS_QUOTA_FACTOR} × --daily-quota). Needs "
        "MASCOT_TRUSTED_PROXIES behind a proxy.",
    )
    parser.add_argument(
        "--default-lora",
        metavar="NAME",
        help="The --lora adapter every new mascot uses unless a person switches it off; the page says so "
        "(MASCOT_DEFAULT_LORA; default: none).",
    )
    parser.add_argument(
        "--default-lora-strength",
        help="The default adapter's strength, 0 to 2 (MASCOT_DEFAULT_LORA_STRENGTH; default 1).",
    )
    parser.add_argument(
        "--brands-dir",
        metavar="PATH",
        help="A folder of your brands, each a folder holding brand.json and its logo, shown as pictures on the "
        "page (MASCOT_BRANDS_DIR; default: the built-in colour palettes). See docs/operating.md.",
    )
    parser.add_argument(
        "--one-office",
        action="store_true",
        default=None,
        help="Everyone shares one network address (an office behind NAT): quotas, likes, reports and the queue "
        "count per browser, not per network (MASCOT_ONE_OFFICE=1). See docs/operating.md.",
    )
    parser.add_argument(
        "--max-batch-images",
        help="Waiting requests with the same size, steps, guidance and LoRA share one run of the model, up to this "
        "many images; 1: each runs alone (MASCOT_MAX_BATCH_IMAGES; default 8 on a GPU, 1 on a CPU, where sharing "
        "is slower).",
    )
    add_blocked_words_argument(parser)
    add_agent_arguments(parser)
    return parser


def add_storage_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that say where the app keeps its data; other scripts on the same data (mascot.admin) take them."""
    parser.add_argument("--data-dir", help="Where the database, images and preview model live (MASCOT_DATA_DIR).")
    parser.add_argument("--database-url", help="sqlite:///path or postgresql://... (MASCOT_DATABASE_URL).")
    parser.add_argument(
        "--database-connections",
        help="The most PostgreSQL connections this process opens; calls beyond them wait for one "
        f"(MASCOT_DATABASE_CONNECTIONS; default {DATABASE_CONNECTIONS}).",
    )


def add_blocked_words_argument(parser: argparse.ArgumentParser) -> None:
    """The operator's blocked-words file; mascot.admin takes it too, to find what was published before an entry."""
    parser.add_argument(
        "--blocked-words",
        metavar="PATH",
        help="A UTF-8 text file of words and phrases refused in ideas, one a line, # starts a comment "
        "(MASCOT_BLOCKED_WORDS; default: none). See assets/blocked-words.example.txt.",
    )


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None, *, storage: Path | None = None
) -> Settings:
    """Settings from flags (argv) and the environment; pass both explicitly in tests (and `storage`, standing in for
    a Space's /data). Raises SettingsError."""
    return settings_from(build_parser().parse_args(argv), environ, storage=storage)


def settings_from(
    flags: argparse.Namespace, environ: Mapping[str, str] | None = None, *, storage: Path | None = None
) -> Settings:
    """Settings from parsed flags and the environment, each checked; raises SettingsError with a sentence naming the
    first value that cannot be used. A parser that lacks some of the app's flags (another script's) leaves those to
    the environment and the defaults."""
    environ = os.environ if environ is None else environ
    given = Given(flags, environ)
    defaults = Settings()
    space = space_storage(environ, SPACE_STORAGE if storage is None else storage)
    server_port = given.whole("port", "GRADIO_SERVER_PORT", "the port", minimum=1, maximum=65535)
    return Settings(
        model=given.text("model", "MASCOT_MODEL", "the model") or defaults.model,
        prior=given.text("prior", "MASCOT_PRIOR", "the prior pipeline"),
        decoder=given.text("decoder", "MASCOT_DECODER", "the decoder pipeline"),
        data_dir=given.folder("data_dir", "MASCOT_DATA_DIR", "the data folder") or space.data_dir or defaults.data_dir,
        database_url=given.database_url("database_url", "MASCOT_DATABASE_URL"),
        database_connections=_or(
            given.whole(
                "database_connections",
                "MASCOT_DATABASE_CONNECTIONS",
                "the database connections",
                minimum=1,
                maximum=1000,
            ),
            defaults.database_connections,
        ),
        secret=given.secret(),
        server_name=given.text("host", "GRADIO_SERVER_NAME", "the address to listen on") or defaults.server_name,
        server_port=defaults.server_port if server_port is None else server_port,
        share=given.boolean("share", "MASCOT_SHARE", "sharing on a public link"),
        queue_max_size=given.whole(None, "MASCOT_QUEUE_MAX_SIZE", "the queue's size", minimum=1)
        or defaults.queue_max_size,
        max_batch_images=given.whole(
            "max_batch_images", "MASCOT_MAX_BATCH_IMAGES", "the images of one shared run", minimum=1
        ),
        max_queued_per_client=_or(
            given.whole(None, "MASCOT_MAX_QUEUED_PER_CLIENT", "the jobs per network", minimum=0),
            defaults.max_queued_per_client,
        ),
        trusted_proxies=_or(
            given.whole(None, "MASCOT_TRUSTED_PROXIES", "the number of trusted proxies", minimum=0),
            defaults.trusted_proxies,
        ),
        daily_quota=_or(
            given.whole("daily_quota", "MASCOT_DAILY_QUOTA", "the daily quota", minimum=1), defaults.daily_quota
        ),
        address_daily_quota=given.whole(
            "address_daily_quota", "MASCOT_ADDRESS_DAILY_QUOTA", "the network's daily quota", minimum=0
        ),
        reports_to_hide=_or(
            given.whole(None, "MASCOT_REPORTS_TO_HIDE", "the reports that hide a mascot", minimum=0),
            defaults.reports_to_hide,
        ),
        likes_per_network=_or(
            given.whole(None, "MASCOT_LIKES_PER_NETWORK", "the likes counted per network", minimum=0),
            defaults.likes_per_network,
        ),
        blocked_words=given.file_path("blocked_words", "MASCOT_BLOCKED_WORDS", "the blocked-words file"),
        lora=given.adapters(),
        preview_every=_or(
            given.whole(None, "MASCOT_PREVIEW_EVERY", "the steps between previews", minimum=0),
            defaults.preview_every,
        ),
        hub_timeout_s=_or(
            given.seconds(None, "MASCOT_HUB_TIMEOUT", "the hub's timeout", above=0.0, maximum=600.0),
            defaults.hub_timeout_s,
        ),
        drain_timeout_s=_or(
            given.seconds(None, "MASCOT_DRAIN_TIMEOUT_S", "the drain time", above=None, maximum=3600.0),
            defaults.drain_timeout_s,
        ),
        replica_id=given.text(None, "MASCOT_REPLICA_ID", "the replica id") or default_replica_id(server_port),
        speed=speed_options(given),
        proxy_addresses=given.networks("MASCOT_PROXY_ADDRESSES", "the proxies' addresses"),
        public_url=given.public_url("MASCOT_PUBLIC_URL", "the page's public address"),
        **event_settings(given),
        **agent_settings(given, space),
    ).for_zero_gpu()


class SettingsError(ValueError):
    """A flag or variable that cannot be used; its message is one sentence that names it, for the operator."""


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
LARGEST_COUNT = 2**31 - 1  # the database's integer: a larger quota or count would fail on every request instead
DATABASE_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")


class Given:
    """Reads one setting at a time from the flags, else the environment, and checks it.

    Each reader takes the flag's attribute name (None: no flag), the variable, and what the setting is in words; it
    returns None when neither set it (an empty variable counts as unset, as shells make unsetting awkward).
    """

    def __init__(self, flags: argparse.Namespace, environ: Mapping[str, str]) -> None:
        self._flags = flags
        self._environ = environ

    def raw(self, flag: str | None, variable: str) -> tuple[str, str] | None:
        """(`--flag=value` or `VARIABLE=value` as the operator wrote it, value) for the one that set it, or None."""
        value = getattr(self._flags, flag, None) if flag else None
        if value is not None:
            return f"--{flag.replace('_', '-')}={value}", str(value)  # type: ignore[union-attr]
        text = self._environ.get(variable)
        if text:
            return f"{variable}={text}", text
        return None

    def refuse(self, written: str, flag: str | None, variable: str, what: str, rule: str) -> SettingsError:
        """The sentence for a value that breaks `rule`, naming the flag and the variable that set it."""
        names = f"--{flag.replace('_', '-')} or {variable}" if flag else variable
        return SettingsError(f"{written} cannot be used: {what} ({names}) must be {rule}.")

    def text(self, flag: str | None, variable: str, what: str) -> str | None:
        found = self.raw(flag, variable)
        if found is None:
            return None
        written, value = found
        if not value.strip() or "\x00" in value:
            raise self.refuse(written, flag, variable, what, "some text without NUL characters")
        return value.strip()

    def secret(self) -> str | None:
        """MASCOT_SECRET as written: stripping it would change every browser's cookie key."""
        return self._environ.get("MASCOT_SECRET") or None

    def whole(
        self, flag: str | None, variable: str, what: str, *, minimum: int, maximum: int = LARGEST_COUNT
    ) -> int | None:
        found = self.raw(flag, variable)
        if found is None:
            return None
        written, value = found
        rule = f"a whole number from {minimum} to {maximum}"
        if maximum == LARGEST_COUNT:
            rule = f"a whole number of at least {minimum}"
        if not WHOLE_NUMBER.fullmatch(value.strip()):
            raise self.refuse(written, flag, variable, what, rule)
        number = int(value.strip())  # at most 12 digits: WHOLE_NUMBER
        if not minimum <= number <= maximum:
            raise self.refuse(written, flag, variable, what, rule)
        return number

    def seconds(
        self, flag: str | None, variable: str, what: str, *, above: float | None, maximum: float
    ) -> float | None:
        """A duration in seconds: more than `above` (None: 0 or more), at most `maximum`, finite."""
        found = self.raw(flag, variable)
        if found is None:
            return None
        written, value = found
        lowest = "0 or more" if above is None else f"more than {above:g}"
        rule = f"a number of seconds, {lowest} and at most {maximum:g}"
        try:
            number = float(value.strip())
        except ValueError:
            raise self.refuse(written, flag, variable, what, rule) from None
        too_low = number < 0 if above is None else number <= above
        if not math.isfinite(number) or too_low or number > maximum:
            raise self.refuse(written, flag, variable, what, rule)
        return number

    def number(self, flag: str | None, variable: str, what: str, minimum: float, maximum: float) -> float | None:
        """A finite number from `minimum` to `maximum`."""
        found = self.raw(flag, variable)
        if found is None:
            return None
        written, value = found
        try:
            number = float(value.strip())
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or not minimum <= number <= maximum:
            raise self.refuse(written, flag, variable, what, f"a number from {minimum:g} to {maximum:g}")
        return number

    def boolean(self, flag: str | None, variable: str, what: str) -> bool:
        if flag and getattr(self._flags, flag, None):  # a store_true flag: present means on
            return True
        found = self.raw(None, variable)
        if found is None:
            return False
        written, value = found
        word = value.strip().lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            raise self.refuse(written, flag, variable, what, "one of 1, true, yes, on, 0, false, no or off")
        return word in TRUE_WORDS

    def switch(self, variable: str, what: str, default: bool) -> bool:
        """A yes/no variable (1/true/yes/on or 0/false/no/off); unset or empty keeps `default`."""
        return default if self.raw(None, variable) is None else self.boolean(None, variable, what)

    def whole_numbers(
        self, variable: str, what: str, *, minimum: int, maximum: int, multiple_of: int = 1
    ) -> tuple[int, ...] | None:
        """Comma-separated whole numbers ("768,512"), each in range (and a multiple of `multiple_of`), each once;
        None when unset."""
        found = self.raw(None, variable)
        if found is None:
            return None
        written, value = found
        parts = [part.strip() for part in value.split(",") if part.strip()]
        rule = f"whole numbers from {minimum} to {maximum}, separated by commas"
        if multiple_of > 1:
            rule = f"multiples of {multiple_of} from {minimum} to {maximum}, separated by commas"
        if not parts or not all(WHOLE_NUMBER.fullmatch(part) for part in parts):
            raise self.refuse(written, None, variable, what, rule)
        numbers = tuple(dict.fromkeys(int(part) for part in parts))  # a bucket named twice is compiled once
        if not all(minimum <= number <= maximum and number % multiple_of == 0 for number in numbers):
            raise self.refuse(written, None, variable, what, rule)
        return numbers

    def folder(self, flag: str | None, variable: str, what: str) -> Path | None:
        """A folder that exists or can be made: not an existing file."""
        path = self.file_path(flag, variable, what)
        if path is not None and path.exists() and not path.is_dir():
            written, _ = self.raw(flag, variable)  # type: ignore[misc]
            raise self.refuse(written, flag, variable, what, "a folder, not a file")
        return path

    def file_path(self, flag: str | None, variable: str, what: str) -> Path | None:
        text = self.text(flag, variable, what)
        return None if text is None else Path(text)

    def database_url(self, flag: str, variable: str) -> str | None:
        text = self.text(flag, variable, "the database")
        if text is None:
            return None
        if not text.startswith(DATABASE_SCHEMES) or text in DATABASE_SCHEMES:
            written, _ = self.raw(flag, variable)  # type: ignore[misc]
            raise self.refuse(
                written,
                flag,
                variable,
                "the database",
                "a URL such as sqlite:///PATH or postgresql://USER@HOST/DATABASE",
            )
        return text

    def networks(self, variable: str, what: str) -> tuple[str, ...]:
        """Comma-separated IP addresses or CIDR networks ("10.0.0.0/8, 2001:db8::1"), each checked."""
        found = self.raw(None, variable)
        if found is None:
            return ()
        written, value = found
        parts = [part.strip() for part in value.split(",") if part.strip()]
        for part in parts:
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                rule = "IP addresses or networks such as 10.0.0.0/8, separated by commas"
                raise self.refuse(written, None, variable, what, rule) from None
        return tuple(parts)

    def public_url(self, variable: str, what: str) -> str | None:
        """An http or https address with a plain host, without a trailing slash: it is written into every link."""
        text = self.text(None, variable, what)
        if text is None:
            return None
        match = PUBLIC_URL.fullmatch(text)
        if match is None or not HOST_NAME.fullmatch(match.group(2)):
            written, _ = self.raw(None, variable)  # type: ignore[misc]
            raise self.refuse(
                written, None, variable, what, "an http or https address such as https://mascots.example.org"
            )
        return text.rstrip("/")

    def adapters(self) -> tuple[str, ...]:
        """--lora, repeatable, else MASCOT_LORA, comma-separated (parsed where torch is: generation.adapters)."""
        flagged = getattr(self._flags, "lora", None)
        if flagged:
            return tuple(flagged)
        return tuple(item.strip() for item in self._environ.get("MASCOT_LORA", "").split(",") if item.strip())


# A host name or IPv4 address, or a bracketed IPv6 address, with an optional port: nothing that could end the URL's
# authority or smuggle a path, a quote or a tag into a page (mascot.web.public_url checks request hosts with it too).
HOST_NAME = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
PUBLIC_URL = re.compile(r"(https?)://([^/?#]+)(/[A-Za-z0-9._~/-]*)?")
WHOLE_NUMBER = re.compile(r"[+-]?[0-9]{1,12}")  # ASCII digits only; a longer one is out of every range anyway


def speed_options(source: Given | Mapping[str, str]) -> SpeedOptions:
    """The fast path's switches from MASCOT_* variables, each checked; MASCOT_PLAIN=1 turns every part off first."""
    given = source if isinstance(source, Given) else Given(argparse.Namespace(), source)
    base = SpeedOptions.plain() if given.switch("MASCOT_PLAIN", "the plain path", False) else SpeedOptions()
    compile_word = (given.raw(None, "MASCOT_COMPILE") or ("", ""))[1].strip().lower()
    compiles = base.compile if compile_word in ("", "auto") else given.boolean(None, "MASCOT_COMPILE", "compiling")
    packages = given.switch("MASCOT_COMPILE_PACKAGES", "handing compiled code over as packages", base.compile_packages)
    return SpeedOptions(
        save_in_background=given.switch("MASCOT_SAVE_IN_BACKGROUND", "saving on a thread", base.save_in_background),
        linear_previews=given.switch("MASCOT_LINEAR_PREVIEWS", "linear previews", base.linear_previews),
        device_noise=given.switch("MASCOT_DEVICE_NOISE", "noise on the device", base.device_noise),
        host_scheduler=given.switch("MASCOT_HOST_SCHEDULER", "the host-side scheduler", base.host_scheduler),
        offload_image_encoder=given.switch(
            "MASCOT_OFFLOAD_IMAGE_ENCODER", "offloading the image encoder", base.offload_image_encoder
        ),
        cache_logo_embeddings=given.switch(
            "MASCOT_CACHE_LOGO_EMBEDDINGS", "caching logo embeddings", base.cache_logo_embeddings
        ),
        decode_at_once=_or(
            given.whole(None, "MASCOT_DECODE_AT_ONCE", "the images decoded at once", minimum=0), base.decode_at_once
        ),
        compile=compiles,
        # Sizes a request can have (prompt/request.py: multiples of 64 from 256 to 1024): another is never used.
        compile_sizes=given.whole_numbers(
            "MASCOT_COMPILE_SIZES", "the compiled sizes", minimum=256, maximum=1024, multiple_of=64
        )
        or base.compile_sizes,
        compile_batch_images=given.whole_numbers(
            "MASCOT_COMPILE_BATCH_IMAGES", "the compiled batch sizes", minimum=1, maximum=64
        )
        or base.compile_batch_images,
        compile_process=_automatic(given, "MASCOT_COMPILE_PROCESS", "compiling in a child process"),
        compile_threads=_or(
            given.whole(None, "MASCOT_COMPILE_THREADS", "the compile threads", minimum=0, maximum=256),
            base.compile_threads,
        ),
        compile_packages=packages,
        ready_when_compiled=given.switch(
            "MASCOT_READY_WHEN_COMPILED", "the health check waiting for compiled code", base.ready_when_compiled
        ),
        lower_precision=_lower_precision(given),
    )


def _lower_precision(given: Given) -> str:
    """MASCOT_LOWER_PRECISION: off (or unset), fp8 or int8; it needs torchao."""
    found = given.raw(None, "MASCOT_LOWER_PRECISION")
    if found is None or found[1].strip().lower() in FALSE_WORDS | {"", "none"}:
        return ""
    written, word = found[0], found[1].strip().lower()
    rule = ""
    if word not in LOWER_PRECISIONS:
        rule = "off, fp8 or int8"
    elif importlib.util.find_spec("torchao") is None:
        rule = "off until the torchao package is installed (pip install torchao==0.18.0)"
    if rule:
        raise given.refuse(written, None, "MASCOT_LOWER_PRECISION", "the lower precision", rule)
    return word


class EventSettings(TypedDict):
    """The Settings fields event_settings reads."""

    default_lora: str | None
    default_lora_strength: float
    brands_dir: Path | None
    one_office: bool


def event_settings(given: Given) -> EventSettings:
    """The company-event settings (docs/operating.md), each checked: the default adapter must be one of --lora's."""
    default_lora = given.text("default_lora", "MASCOT_DEFAULT_LORA", "the default LoRA adapter")
    loaded = [adapter_name_of(value) for value in given.adapters()]
    if default_lora is not None and default_lora not in loaded:
        written, _ = given.raw("default_lora", "MASCOT_DEFAULT_LORA")  # type: ignore[misc]
        rule = f"the name of an adapter loaded with --lora or MASCOT_LORA (loaded: {', '.join(loaded) or 'none'})"
        raise given.refuse(written, "default_lora", "MASCOT_DEFAULT_LORA", "the default LoRA adapter", rule)
    strength = given.number(
        "default_lora_strength", "MASCOT_DEFAULT_LORA_STRENGTH", "the default adapter's strength", 0.0, 2.0
    )
    return EventSettings(
        default_lora=default_lora,
        default_lora_strength=Settings.default_lora_strength if strength is None else strength,
        brands_dir=given.folder("brands_dir", "MASCOT_BRANDS_DIR", "the brands folder"),
        one_office=given.boolean("one_office", "MASCOT_ONE_OFFICE", "one office, one address"),
    )


def adapter_name_of(value: str) -> str:
    """The name a --lora value (`name=PATH` or `PATH`) is chosen by: the name given, else its folder's name with
    anything but letters, digits, '_' and '-' replaced (generation.adapters loads it under this name)."""
    name, separator, _location = value.partition("=")
    if separator:
        return name
    path = Path(value).expanduser()
    folder = path if path.is_dir() or not path.suffix else path.parent
    return re.sub(r"[^A-Za-z0-9_-]", "_", folder.resolve().name)[:59] or "lora"


def _automatic(given: Given, variable: str, what: str) -> bool | None:
    """A switch that may also be "auto" (or unset): None, for the code to decide."""
    word = (given.raw(None, variable) or ("", ""))[1].strip().lower()
    return None if word in ("", "auto") else given.boolean(None, variable, what)


def _or(value: T | None, default: T) -> T:
    """`value` unless it was not given (0 is a value: it often means "no cap")."""
    return default if value is None else value


def default_replica_id(server_port: int | None) -> str:
    """This replica's name when MASCOT_REPLICA_ID is not set: the host and the port, which a restart keeps and no
    two running replicas share (two processes cannot listen on one port of one host)."""
    return f"{socket.gethostname()}:{Settings.server_port if server_port is None else server_port}"


# ---- where it runs: a Hugging Face Space and its storage, ZeroGPU, agents over MCP (docs/deploying.md) -------------
SPACE_STORAGE = Path("/data")  # where a Space mounts its persistent storage
SPACE_DATA_FOLDER = "mascot"  # the data folder inside it: the database, the images, the preview model
SPACE_HF_HOME = ".huggingface"  # the Hugging Face cache inside it (weights, ~20 GB for Kandinsky 2.2)
NO_STORAGE_WARNING = (
    "This Space has no persistent storage: every mascot, like and the database are lost at each restart. Add "
    "persistent storage (mounted at {storage}) in the Space's settings, or set MASCOT_DATA_DIR to storage that lasts."
)


@dataclass(frozen=True)
class SpaceStorage:
    """What a Space's persistent storage changes: the default data folder and HF_HOME, or a warning without it."""

    on_space: bool = False
    data_dir: Path | None = None  # the data folder's default on the storage; None: the usual default
    hf_home: Path | None = None  # HF_HOME to set before huggingface_hub is imported; None: leave it
    warning: str | None = None


def space_storage(environ: Mapping[str, str], storage: Path = SPACE_STORAGE) -> SpaceStorage:
    """On a Space (SPACE_ID set) with writable persistent storage at `storage`: the data folder and the Hugging Face
    cache go there, unless the operator set MASCOT_DATA_DIR or HF_HOME (HF_HUB_CACHE) or the image already holds
    weights (preload_from_hub fills the default cache at build time: moving the cache would fetch them again).
    Without the storage: a warning, unless MASCOT_DATA_DIR names a folder the operator chose."""
    if not environ.get("SPACE_ID"):
        return SpaceStorage()
    if not (storage.is_dir() and os.access(storage, os.W_OK | os.X_OK)):
        warning = None if environ.get("MASCOT_DATA_DIR") else NO_STORAGE_WARNING.format(storage=storage)
        return SpaceStorage(on_space=True, warning=warning)
    keeps_cache = any(environ.get(name) for name in ("HF_HOME", "HF_HUB_CACHE")) or _image_holds_weights(environ)
    return SpaceStorage(
        on_space=True,
        data_dir=storage / SPACE_DATA_FOLDER,
        hf_home=None if keeps_cache else storage / SPACE_HF_HOME,
    )


def _image_holds_weights(environ: Mapping[str, str]) -> bool:
    """Whether huggingface_hub's default cache already holds a model (put there by the Space's build)."""
    cache_home = Path(environ.get("XDG_CACHE_HOME") or Path(environ.get("HOME") or Path.home()) / ".cache")
    hub = cache_home / "huggingface" / "hub"
    return hub.is_dir() and any(hub.glob("models--*"))


def space_environment(environ: Mapping[str, str] | None = None, storage: Path = SPACE_STORAGE) -> dict[str, str]:
    """The variables to set before huggingface_hub is first imported (it reads HF_HOME once): HF_HOME on a Space's
    persistent storage, or nothing."""
    hf_home = space_storage(os.environ if environ is None else environ, storage).hf_home
    return {} if hf_home is None else {"HF_HOME": str(hf_home)}


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """The flag that serves the app to agents."""
    parser.add_argument(
        "--mcp",
        action="store_true",
        default=None,
        help="Also serve Gradio's MCP server at /gradio_api/mcp/ (generate, the gallery, your mascots, one mascot) "
        "for AI agents (MASCOT_MCP). See docs/deploying.md.",
    )


class AgentSettings(TypedDict):
    """The Settings fields agent_settings fills."""

    on_space: bool
    storage_warning: str | None
    zero_gpu: bool
    zero_gpu_duration_s: int
    mcp_server: bool


def agent_settings(given: Given, space: SpaceStorage) -> AgentSettings:
    """The Space, ZeroGPU and MCP settings, each checked."""
    # ZeroGPU Spaces set SPACES_ZERO_GPU; read as the spaces package reads it (1, t or true), never refused.
    zero_gpu_word = (given.raw(None, "SPACES_ZERO_GPU") or ("", ""))[1].strip().lower()
    zero_gpu_default = zero_gpu_word in ("1", "t", "true")
    return {
        "on_space": space.on_space,
        "storage_warning": space.warning,
        "zero_gpu": given.switch("MASCOT_ZERO_GPU", "the ZeroGPU mode", zero_gpu_default),
        "zero_gpu_duration_s": _or(
            given.whole(None, "MASCOT_ZERO_GPU_DURATION_S", "the GPU time per Generate", minimum=5, maximum=300),
            Settings.zero_gpu_duration_s,
        ),
        "mcp_server": given.boolean("mcp", "MASCOT_MCP", "the MCP server"),
    }
