"""Settings: one frozen value built from command-line flags and MASCOT_* variables; the only reader of os.environ."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

MODEL_CHOICES_HELP = (
    "'auto' (the real Kandinsky 2.2 when a GPU and its weights are available, else the offline preview model), "
    "'kandinsky' (the hub's kandinsky-community/kandinsky-2-2-prior and -decoder), 'tiny' (the offline preview "
    "model), or a folder holding prior/ and decoder/ pipelines"
)

ADDRESS_QUOTA_FACTOR = 5  # browsers' worth of mascots one network address may make per day, by default


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


DEFAULT_RULES = Rules()


def rules_from(settings: Settings) -> Rules:
    """The house rules the settings ask for."""
    return Rules(
        daily_quota=settings.daily_quota,
        address_daily_quota=settings.resolved_address_daily_quota,
        reports_to_hide=settings.reports_to_hide,
        likes_per_network=settings.likes_per_network,
        max_queued_per_client=settings.max_queued_per_client,
    )


# ---- the settings ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpeedOptions:
    """The fast path's switches (docs/performance.md): each part can be turned off alone to compare with the plain
    path, which `plain()` gives whole. The defaults are the app's; compiling is on only with CUDA unless set."""

    save_in_background: bool = True  # PNG, thumbnail and store writes on a saver thread, not the GPU's worker thread
    linear_previews: bool = True  # previews from a latent-to-RGB map fitted to the MoVQ, not a MoVQ decode per preview
    device_noise: bool = True  # each image's torch.Generator on the model's device: no noise copied per step
    host_scheduler: bool = True  # the decoder scheduler's timestep arithmetic on the host: no GPU syncs per step
    offload_image_encoder: bool = True  # the 1.8 B image encoder stays on the CPU until a logo needs it
    cache_logo_embeddings: bool = True  # each logo's CLIP embedding computed once (keyed by its pixels' hash)
    decode_at_once: int = 0  # images MoVQ decodes per call; 0: all unless GPU memory is tight, then one at a time
    compile: bool | None = None  # torch.compile the UNet, prior and MoVQ in the background; None: only with CUDA
    compile_sizes: tuple[int, ...] = (768,)  # square sizes warmed after start (a bucket per size and batch)
    compile_batch_images: tuple[int, ...] = (1,)  # images per run warmed for each size

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


@dataclass(frozen=True)
class Settings:
    """Everything the app is configured with. Flags win over MASCOT_* variables, which win over defaults."""

    model: str = "auto"
    prior: str | None = None
    decoder: str | None = None
    data_dir: Path = Path("data")
    database_url: str | None = None
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

    @property
    def images_dir(self) -> Path:
        """The only folder the web server may serve files from."""
        return self.data_dir / "images"

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
    parser.add_argument("--port", type=int, help="Port to listen on (GRADIO_SERVER_PORT; default 7860).")
    parser.add_argument(
        "--lora",
        action="append",
        metavar="[NAME=]PATH",
        help="A LoRA adapter folder from lora/train.py or lora/convert.py; repeat for more (MASCOT_LORA, "
        "comma-separated). People pick it by NAME (default: the folder's name) in the Advanced panel.",
    )
    parser.add_argument(
        "--daily-quota",
        type=int,
        help=f"Mascots each browser may make per UTC day (MASCOT_DAILY_QUOTA; default {DAILY_QUOTA}).",
    )
    parser.add_argument(
        "--address-daily-quota",
        type=int,
        help="Mascots all browsers from one network address may make per UTC day together; 0: no cap "
        f"(MASCOT_ADDRESS_DAILY_QUOTA; default {ADDRESS_QUOTA_FACTOR} × --daily-quota). Needs "
        "MASCOT_TRUSTED_PROXIES behind a proxy.",
    )
    parser.add_argument(
        "--max-batch-images",
        type=int,
        help="Waiting requests with the same size, steps, guidance and LoRA share one run of the model, up to this "
        "many images; 1: each runs alone (MASCOT_MAX_BATCH_IMAGES; default 8 on a GPU, 1 on a CPU, where sharing "
        "is slower).",
    )
    add_blocked_words_argument(parser)
    return parser


def add_storage_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that say where the app keeps its data; other scripts on the same data (mascot.admin) take them."""
    parser.add_argument("--data-dir", help="Where the database, images and preview model live (MASCOT_DATA_DIR).")
    parser.add_argument("--database-url", help="sqlite:///path or postgresql://... (MASCOT_DATABASE_URL).")


def add_blocked_words_argument(parser: argparse.ArgumentParser) -> None:
    """The operator's blocked-words file; mascot.admin takes it too, to find what was published before an entry."""
    parser.add_argument(
        "--blocked-words",
        metavar="PATH",
        help="A UTF-8 text file of words and phrases refused in ideas, one a line, # starts a comment "
        "(MASCOT_BLOCKED_WORDS; default: none). See assets/blocked-words.example.txt.",
    )


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags (argv) and the environment; pass both explicitly in tests."""
    return settings_from(build_parser().parse_args(argv), environ)


def settings_from(flags: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from parsed flags and the environment. A parser that lacks some of the app's flags (another script's)
    leaves those to the environment and the defaults."""
    env = os.environ if environ is None else environ
    defaults = Settings()

    def flag(name: str) -> object:
        return getattr(flags, name, None)

    def pick(value: object, variable: str, default: object) -> object:
        if value is not None:
            return value
        return env.get(variable) or default

    return Settings(
        model=str(pick(flag("model"), "MASCOT_MODEL", defaults.model)),
        prior=pick(flag("prior"), "MASCOT_PRIOR", None),  # type: ignore[arg-type]
        decoder=pick(flag("decoder"), "MASCOT_DECODER", None),  # type: ignore[arg-type]
        data_dir=Path(str(pick(flag("data_dir"), "MASCOT_DATA_DIR", defaults.data_dir))),
        database_url=pick(flag("database_url"), "MASCOT_DATABASE_URL", None),  # type: ignore[arg-type]
        secret=env.get("MASCOT_SECRET") or None,
        server_name=str(pick(flag("host"), "GRADIO_SERVER_NAME", defaults.server_name)),
        server_port=int(str(pick(flag("port"), "GRADIO_SERVER_PORT", defaults.server_port))),
        share=bool(flag("share")) or env.get("MASCOT_SHARE", "").lower() in {"1", "true", "yes"},
        queue_max_size=int(env.get("MASCOT_QUEUE_MAX_SIZE") or defaults.queue_max_size),
        max_batch_images=optional_int(pick(flag("max_batch_images"), "MASCOT_MAX_BATCH_IMAGES", None)),
        max_queued_per_client=int(env.get("MASCOT_MAX_QUEUED_PER_CLIENT") or defaults.max_queued_per_client),
        trusted_proxies=int(env.get("MASCOT_TRUSTED_PROXIES") or defaults.trusted_proxies),
        daily_quota=int(str(pick(flag("daily_quota"), "MASCOT_DAILY_QUOTA", defaults.daily_quota))),
        address_daily_quota=optional_int(pick(flag("address_daily_quota"), "MASCOT_ADDRESS_DAILY_QUOTA", None)),
        reports_to_hide=int(env.get("MASCOT_REPORTS_TO_HIDE") or defaults.reports_to_hide),
        likes_per_network=int(env.get("MASCOT_LIKES_PER_NETWORK") or defaults.likes_per_network),
        blocked_words=optional_path(pick(flag("blocked_words"), "MASCOT_BLOCKED_WORDS", None)),
        lora=tuple(flag("lora") or [item.strip() for item in env.get("MASCOT_LORA", "").split(",") if item.strip()]),
        preview_every=int(env.get("MASCOT_PREVIEW_EVERY") or defaults.preview_every),
        hub_timeout_s=float(env.get("MASCOT_HUB_TIMEOUT") or defaults.hub_timeout_s),
        speed=speed_options(env),
    )


def speed_options(env: Mapping[str, str]) -> SpeedOptions:
    """The fast path's switches from MASCOT_* variables; MASCOT_PLAIN=1 turns every part off first."""
    base = SpeedOptions.plain() if env_flag(env, "MASCOT_PLAIN", False) else SpeedOptions()
    compile_value = env.get("MASCOT_COMPILE", "").strip().lower()
    return SpeedOptions(
        save_in_background=env_flag(env, "MASCOT_SAVE_IN_BACKGROUND", base.save_in_background),
        linear_previews=env_flag(env, "MASCOT_LINEAR_PREVIEWS", base.linear_previews),
        device_noise=env_flag(env, "MASCOT_DEVICE_NOISE", base.device_noise),
        host_scheduler=env_flag(env, "MASCOT_HOST_SCHEDULER", base.host_scheduler),
        offload_image_encoder=env_flag(env, "MASCOT_OFFLOAD_IMAGE_ENCODER", base.offload_image_encoder),
        cache_logo_embeddings=env_flag(env, "MASCOT_CACHE_LOGO_EMBEDDINGS", base.cache_logo_embeddings),
        decode_at_once=int(env.get("MASCOT_DECODE_AT_ONCE") or base.decode_at_once),
        compile=base.compile if compile_value in ("", "auto") else compile_value in TRUE_WORDS,
        compile_sizes=int_tuple(env.get("MASCOT_COMPILE_SIZES")) or base.compile_sizes,
        compile_batch_images=int_tuple(env.get("MASCOT_COMPILE_BATCH_IMAGES")) or base.compile_batch_images,
    )


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


def env_flag(env: Mapping[str, str], variable: str, default: bool) -> bool:
    """A yes/no variable (1/true/yes/on or 0/false/no/off); unset or empty keeps `default`."""
    value = env.get(variable, "").strip().lower()
    return default if not value else value in TRUE_WORDS


def int_tuple(value: str | None) -> tuple[int, ...]:
    """Whole numbers from a comma-separated variable ("768,512"); empty when unset."""
    return tuple(int(part) for part in (value or "").split(",") if part.strip())


def optional_int(value: object) -> int | None:
    """A whole number from a flag or a variable; None when neither set it."""
    return None if value is None else int(str(value))


def optional_path(value: object) -> Path | None:
    """A path from a flag or a variable; None when neither set it."""
    return None if value is None else Path(str(value))
