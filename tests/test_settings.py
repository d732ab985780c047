"""Settings come from flags, then MASCOT_* variables, then defaults; a value that cannot be used stops the app with one
sentence naming its flag and its variable."""

import dataclasses
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mascot.settings import Settings, SettingsError, load_settings, space_environment
from tests.support.app_process import ROOT, app_command, app_environment, free_port


def test_defaults_without_flags_or_environment():
    settings = load_settings([], {})
    assert settings == dataclasses.replace(Settings(), replica_id=f"{socket.gethostname()}:7860")
    assert settings.model == "auto"
    assert settings.data_dir == Path("data")
    assert settings.images_dir == Path("data/images")


def test_environment_sets_values():
    settings = load_settings(
        [],
        {
            "MASCOT_MODEL": "tiny",
            "MASCOT_DATA_DIR": "/tmp/mascots",
            "MASCOT_DATABASE_URL": "postgresql://u@localhost/m",
            "GRADIO_SERVER_NAME": "0.0.0.0",
            "GRADIO_SERVER_PORT": "7999",
            "MASCOT_SECRET": "s3cret",
            "MASCOT_MAX_QUEUED_PER_CLIENT": "3",
            "MASCOT_MAX_BATCH_IMAGES": "2",
            "MASCOT_TRUSTED_PROXIES": "1",
        },
    )
    assert (settings.max_queued_per_client, settings.trusted_proxies) == (3, 1)
    assert settings.max_batch_images == 2
    assert settings.model == "tiny"
    assert settings.data_dir == Path("/tmp/mascots")
    assert settings.resolved_database_url == "postgresql://u@localhost/m"
    assert (settings.server_name, settings.server_port) == ("0.0.0.0", 7999)
    assert settings.secret == "s3cret"


def test_flags_win_over_environment():
    settings = load_settings(
        ["--model", "kandinsky", "--port", "8001", "--share", "--data-dir", "here"],
        {"MASCOT_MODEL": "tiny", "GRADIO_SERVER_PORT": "7999"},
    )
    assert settings.model == "kandinsky"
    assert settings.server_port == 8001
    assert settings.share is True
    assert settings.data_dir == Path("here")


def test_default_database_is_sqlite_in_the_data_folder(tmp_path):
    settings = load_settings(["--data-dir", str(tmp_path)], {})
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'mascots.db'}"


def test_the_address_quota_defaults_to_five_browsers_worth_and_0_turns_it_off():
    assert load_settings([], {}).resolved_address_daily_quota == 50
    assert load_settings(["--daily-quota", "4"], {}).resolved_address_daily_quota == 20  # follows the browser's
    assert load_settings([], {"MASCOT_DAILY_QUOTA": "6"}).resolved_address_daily_quota == 30
    assert load_settings([], {"MASCOT_ADDRESS_DAILY_QUOTA": "0"}).resolved_address_daily_quota == 0
    assert load_settings([], {"MASCOT_ADDRESS_DAILY_QUOTA": "12"}).resolved_address_daily_quota == 12
    flag_wins = load_settings(["--address-daily-quota", "7"], {"MASCOT_ADDRESS_DAILY_QUOTA": "0"})
    assert flag_wins.resolved_address_daily_quota == 7
    assert load_settings(["--address-daily-quota", "0"], {}).resolved_address_daily_quota == 0


def test_reports_from_three_networks_hide_a_mascot_unless_the_variable_says_otherwise():
    assert load_settings([], {}).reports_to_hide == 3
    assert load_settings([], {"MASCOT_REPORTS_TO_HIDE": "5"}).reports_to_hide == 5
    assert load_settings([], {"MASCOT_REPORTS_TO_HIDE": "0"}).reports_to_hide == 0  # never by reports alone


def test_three_likes_per_network_count_unless_the_variable_says_otherwise():
    assert load_settings([], {}).likes_per_network == 3
    assert load_settings([], {"MASCOT_LIKES_PER_NETWORK": "5"}).likes_per_network == 5
    assert load_settings([], {"MASCOT_LIKES_PER_NETWORK": "0"}).likes_per_network == 0  # every like counts


def test_shared_runs_are_sized_by_the_device_unless_a_flag_says():
    assert load_settings([], {}).max_batch_images is None  # the worker decides: 4 on a GPU, 1 on a CPU
    assert load_settings(["--max-batch-images", "3"], {"MASCOT_MAX_BATCH_IMAGES": "2"}).max_batch_images == 3


def test_nothing_is_blocked_unless_a_blocked_words_file_is_named_by_flag_or_variable():
    assert load_settings([], {}).blocked_words is None
    assert load_settings([], {"MASCOT_BLOCKED_WORDS": "/etc/mascot/words.txt"}).blocked_words == Path(
        "/etc/mascot/words.txt"
    )
    assert load_settings(["--blocked-words", "words.txt"], {}).blocked_words == Path("words.txt")
    flag_wins = load_settings(["--blocked-words", "mine.txt"], {"MASCOT_BLOCKED_WORDS": "theirs.txt"})
    assert flag_wins.blocked_words == Path("mine.txt")


# (flags, variables, what the sentence must name): every numeric, boolean, path and URL setting, malformed and out of
# range. The flag and the variable are both named where both exist.
REFUSED = [
    ([], {"MASCOT_DAILY_QUOTA": "ten"}, ["MASCOT_DAILY_QUOTA=ten", "--daily-quota or MASCOT_DAILY_QUOTA"]),
    ([], {"MASCOT_DAILY_QUOTA": "-5"}, ["MASCOT_DAILY_QUOTA=-5", "at least 1"]),
    ([], {"MASCOT_DAILY_QUOTA": "0"}, ["MASCOT_DAILY_QUOTA=0", "at least 1"]),
    ([], {"MASCOT_DAILY_QUOTA": "2.5"}, ["MASCOT_DAILY_QUOTA=2.5", "whole number"]),
    ([], {"MASCOT_DAILY_QUOTA": "9" * 400}, ["--daily-quota or MASCOT_DAILY_QUOTA"]),
    ([], {"MASCOT_DAILY_QUOTA": "99999999999"}, ["at least 1"]),  # past the database's integer
    (["--daily-quota", "many"], {}, ["--daily-quota=many", "MASCOT_DAILY_QUOTA"]),
    (["--address-daily-quota", "-1"], {}, ["--address-daily-quota=-1", "MASCOT_ADDRESS_DAILY_QUOTA"]),
    ([], {"MASCOT_ADDRESS_DAILY_QUOTA": "lots"}, ["MASCOT_ADDRESS_DAILY_QUOTA=lots", "--address-daily-quota"]),
    (["--max-batch-images", "0"], {}, ["--max-batch-images=0", "MASCOT_MAX_BATCH_IMAGES", "at least 1"]),
    ([], {"MASCOT_MAX_BATCH_IMAGES": "four"}, ["MASCOT_MAX_BATCH_IMAGES=four"]),
    (["--port", "http"], {}, ["--port=http", "GRADIO_SERVER_PORT", "from 1 to 65535"]),
    ([], {"GRADIO_SERVER_PORT": "70000"}, ["GRADIO_SERVER_PORT=70000", "--port"]),
    ([], {"GRADIO_SERVER_PORT": "0"}, ["GRADIO_SERVER_PORT=0"]),
    ([], {"MASCOT_QUEUE_MAX_SIZE": "0"}, ["MASCOT_QUEUE_MAX_SIZE=0", "at least 1"]),
    ([], {"MASCOT_QUEUE_MAX_SIZE": "x"}, ["MASCOT_QUEUE_MAX_SIZE=x"]),
    ([], {"MASCOT_MAX_QUEUED_PER_CLIENT": "-1"}, ["MASCOT_MAX_QUEUED_PER_CLIENT=-1", "at least 0"]),
    ([], {"MASCOT_TRUSTED_PROXIES": "yes"}, ["MASCOT_TRUSTED_PROXIES=yes", "whole number"]),
    ([], {"MASCOT_TRUSTED_PROXIES": "-1"}, ["MASCOT_TRUSTED_PROXIES=-1"]),
    ([], {"MASCOT_PROXY_ADDRESSES": "10.0.0.0/8, proxy.local"}, ["MASCOT_PROXY_ADDRESSES=", "10.0.0.0/8"]),
    ([], {"MASCOT_PROXY_ADDRESSES": "10.0.0.300"}, ["MASCOT_PROXY_ADDRESSES=10.0.0.300", "IP addresses"]),
    ([], {"MASCOT_PUBLIC_URL": "mascots.example.org"}, ["MASCOT_PUBLIC_URL=mascots.example.org", "https://"]),
    ([], {"MASCOT_PUBLIC_URL": 'https://x.org/"><script>'}, ["MASCOT_PUBLIC_URL", "http or https address"]),
    ([], {"MASCOT_REPORTS_TO_HIDE": "three"}, ["MASCOT_REPORTS_TO_HIDE=three"]),
    ([], {"MASCOT_LIKES_PER_NETWORK": "-3"}, ["MASCOT_LIKES_PER_NETWORK=-3"]),
    ([], {"MASCOT_PREVIEW_EVERY": "-1"}, ["MASCOT_PREVIEW_EVERY=-1"]),
    ([], {"MASCOT_HUB_TIMEOUT": "soon"}, ["MASCOT_HUB_TIMEOUT=soon", "number of seconds"]),
    ([], {"MASCOT_HUB_TIMEOUT": "0"}, ["MASCOT_HUB_TIMEOUT=0", "more than 0"]),
    ([], {"MASCOT_HUB_TIMEOUT": "nan"}, ["MASCOT_HUB_TIMEOUT=nan"]),
    ([], {"MASCOT_HUB_TIMEOUT": "inf"}, ["MASCOT_HUB_TIMEOUT=inf"]),
    ([], {"MASCOT_DRAIN_TIMEOUT_S": "-1"}, ["MASCOT_DRAIN_TIMEOUT_S=-1", "0 or more"]),
    ([], {"MASCOT_DRAIN_TIMEOUT_S": "a minute"}, ["MASCOT_DRAIN_TIMEOUT_S=a minute"]),
    ([], {"MASCOT_DRAIN_TIMEOUT_S": "1e9"}, ["MASCOT_DRAIN_TIMEOUT_S=1e9", "at most 3600"]),
    ([], {"MASCOT_SHARE": "maybe"}, ["MASCOT_SHARE=maybe", "--share or MASCOT_SHARE"]),
    ([], {"MASCOT_LOWER_PRECISION": "fp4"}, ["MASCOT_LOWER_PRECISION=fp4", "off, fp8 or int8"]),
    ([], {"MASCOT_READY_WHEN_COMPILED": "later"}, ["MASCOT_READY_WHEN_COMPILED=later", "1, true, yes, on"]),
    ([], {"MASCOT_DATABASE_URL": "mysql://db/mascots"}, ["MASCOT_DATABASE_URL=mysql://db/mascots", "--database-url"]),
    (["--database-url", "sqlite:///"], {}, ["--database-url=sqlite:///", "MASCOT_DATABASE_URL"]),
    ([], {"MASCOT_DATABASE_URL": "mascots.db"}, ["MASCOT_DATABASE_URL=mascots.db"]),
    ([], {"MASCOT_DATABASE_CONNECTIONS": "0"}, ["MASCOT_DATABASE_CONNECTIONS=0", "from 1 to 1000"]),
    (["--database-connections", "many"], {}, ["--database-connections=many", "MASCOT_DATABASE_CONNECTIONS"]),
    ([], {"MASCOT_DATA_DIR": "   "}, ["MASCOT_DATA_DIR", "--data-dir"]),
    ([], {"MASCOT_DATA_DIR": "bad\x00path"}, ["MASCOT_DATA_DIR", "NUL"]),
    ([], {"MASCOT_BLOCKED_WORDS": " "}, ["MASCOT_BLOCKED_WORDS", "--blocked-words"]),
    ([], {"MASCOT_REPLICA_ID": "  "}, ["MASCOT_REPLICA_ID"]),
    # The company-event settings (a default LoRA adapter and its strength, one office, the brands folder).
    (["--default-lora", "acme"], {}, ["--default-lora=acme cannot be used", "MASCOT_DEFAULT_LORA", "loaded: none"]),
    (
        ["--lora", "look=/x", "--default-lora", "acme"],
        {},
        ["--default-lora=acme", "--default-lora or MASCOT_DEFAULT_LORA", "(loaded: look)"],
    ),
    ([], {"MASCOT_LORA": "look=/x", "MASCOT_DEFAULT_LORA": "Look"}, ["MASCOT_DEFAULT_LORA=Look"]),
    ([], {"MASCOT_DEFAULT_LORA_STRENGTH": "3"}, ["MASCOT_DEFAULT_LORA_STRENGTH=3", "a number from 0 to 2"]),
    ([], {"MASCOT_DEFAULT_LORA_STRENGTH": "-0.1"}, ["MASCOT_DEFAULT_LORA_STRENGTH=-0.1"]),
    (["--default-lora-strength", "strong"], {}, ["--default-lora-strength=strong", "from 0 to 2"]),
    ([], {"MASCOT_DEFAULT_LORA_STRENGTH": "nan"}, ["MASCOT_DEFAULT_LORA_STRENGTH=nan"]),
    ([], {"MASCOT_ONE_OFFICE": "maybe"}, ["MASCOT_ONE_OFFICE=maybe", "--one-office or MASCOT_ONE_OFFICE"]),
    ([], {"MASCOT_BRANDS_DIR": " "}, ["MASCOT_BRANDS_DIR", "--brands-dir"]),
]


@pytest.mark.parametrize(("argv", "environ", "named"), REFUSED)
def test_a_value_that_cannot_be_used_is_refused_with_one_sentence_naming_it(argv, environ, named):
    with pytest.raises(SettingsError) as refused:
        load_settings(argv, environ)
    message = str(refused.value)
    for words in named:
        assert words in message
    assert message.endswith(".") and "\n" not in message
    assert "invalid literal" not in message and "Traceback" not in message


def test_a_data_folder_that_is_a_file_is_refused(tmp_path):
    a_file = tmp_path / "mascots"
    a_file.write_text("not a folder")
    with pytest.raises(SettingsError, match=f"--data-dir={a_file} cannot be used.*MASCOT_DATA_DIR.*a folder"):
        load_settings(["--data-dir", str(a_file)], {})


@pytest.mark.parametrize(
    ("environ", "field", "expected"),
    [
        ({"MASCOT_SHARE": "1"}, "share", True),
        ({"MASCOT_SHARE": "off"}, "share", False),
        ({"MASCOT_SHARE": "TRUE"}, "share", True),
        ({"MASCOT_DAILY_QUOTA": " 12 "}, "daily_quota", 12),
        ({"MASCOT_MAX_QUEUED_PER_CLIENT": "0"}, "max_queued_per_client", 0),  # 0: no cap
        ({"MASCOT_PREVIEW_EVERY": "0"}, "preview_every", 0),  # 0: no previews
        ({"MASCOT_HUB_TIMEOUT": "2.5"}, "hub_timeout_s", 2.5),
        ({"MASCOT_DRAIN_TIMEOUT_S": "0"}, "drain_timeout_s", 0.0),
        ({"MASCOT_DRAIN_TIMEOUT_S": "45"}, "drain_timeout_s", 45.0),
        ({"MASCOT_REPLICA_ID": "gpu-3"}, "replica_id", "gpu-3"),
        ({"MASCOT_DATABASE_URL": "postgres://u@h/m"}, "database_url", "postgres://u@h/m"),
        ({"MASCOT_DATABASE_CONNECTIONS": "4"}, "database_connections", 4),
        ({}, "database_connections", 10),
        ({"MASCOT_DAILY_QUOTA": ""}, "daily_quota", 10),  # empty: unset
    ],
)
def test_usable_values_are_read(environ, field, expected):
    assert getattr(load_settings([], environ), field) == expected


def test_the_replica_id_defaults_to_the_host_and_the_port():
    assert load_settings(["--port", "8123"], {}).replica_id == f"{socket.gethostname()}:8123"


def test_a_bad_variable_stops_python_app_py_with_one_line_naming_it(tmp_path):
    started = subprocess.run(
        app_command(free_port()),
        cwd=ROOT,
        env={**app_environment(tmp_path / "data", tmp_path), "MASCOT_DAILY_QUOTA": "ten"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 1
    lines = started.stderr.strip().splitlines()
    assert lines == [
        "Mascot Generator did not start. MASCOT_DAILY_QUOTA=ten cannot be used: the daily quota "
        "(--daily-quota or MASCOT_DAILY_QUOTA) must be a whole number of at least 1."
    ]
    assert not (tmp_path / "data").exists()  # refused before anything was created


# ---- a Hugging Face Space: its persistent storage (a temp folder stands in for /data) ------------------------------
def test_on_a_space_with_storage_the_data_folder_and_the_hub_cache_default_to_it(tmp_path):
    storage, home = tmp_path / "data", tmp_path / "home"
    storage.mkdir()
    space = {"SPACE_ID": "someone/mascots", "HOME": str(home)}
    settings = load_settings([], space, storage=storage)
    assert settings.on_space and settings.storage_warning is None
    assert settings.data_dir == storage / "mascot"
    assert settings.resolved_database_url == f"sqlite:///{(storage / 'mascot' / 'mascots.db').resolve()}"
    assert space_environment(space, storage) == {"HF_HOME": str(storage / ".huggingface")}


def test_on_a_space_what_the_operator_set_wins_over_the_storage(tmp_path):
    storage = tmp_path / "data"
    storage.mkdir()
    space = {"SPACE_ID": "someone/mascots", "HOME": str(tmp_path / "home")}
    assert load_settings(["--data-dir", "mine"], space, storage=storage).data_dir == Path("mine")
    assert load_settings([], {**space, "MASCOT_DATA_DIR": "/srv/m"}, storage=storage).data_dir == Path("/srv/m")
    assert space_environment({**space, "HF_HOME": "/srv/hf"}, storage) == {}
    assert space_environment({**space, "HF_HUB_CACHE": "/srv/hub"}, storage) == {}


def test_weights_the_image_preloaded_keep_the_hub_cache_where_they_are(tmp_path):
    storage, home = tmp_path / "data", tmp_path / "home"
    storage.mkdir()
    (home / ".cache" / "huggingface" / "hub" / "models--kandinsky-community--kandinsky-2-2-prior").mkdir(parents=True)
    space = {"SPACE_ID": "someone/mascots", "HOME": str(home)}
    assert space_environment(space, storage) == {}  # preload_from_hub put them in the image: no second copy
    assert load_settings([], space, storage=storage).data_dir == storage / "mascot"  # the data still goes there


def test_on_a_space_without_storage_one_warning_says_mascots_are_lost_on_restart(tmp_path):
    missing = tmp_path / "no-data"
    settings = load_settings([], {"SPACE_ID": "someone/mascots"}, storage=missing)
    assert settings.on_space and settings.data_dir == Path("data")
    assert "lost at each restart" in (settings.storage_warning or "")
    assert space_environment({"SPACE_ID": "someone/mascots"}, missing) == {}
    # A data folder the operator chose (a mounted volume elsewhere, say) is theirs to judge: no warning.
    chosen = load_settings([], {"SPACE_ID": "x/y", "MASCOT_DATA_DIR": str(tmp_path)}, storage=missing)
    assert chosen.storage_warning is None


def test_a_read_only_storage_counts_as_none(tmp_path):
    storage = tmp_path / "data"
    storage.mkdir()
    storage.chmod(0o500)
    try:
        writable = os.access(storage, os.W_OK)  # root can write anyway: then it is storage indeed
        settings = load_settings([], {"SPACE_ID": "someone/mascots"}, storage=storage)
        assert (settings.data_dir == storage / "mascot") is writable
        assert (settings.storage_warning is None) is writable
    finally:
        storage.chmod(0o700)


def test_off_a_space_the_storage_folder_changes_nothing(tmp_path):
    settings = load_settings([], {}, storage=tmp_path)
    assert (settings.on_space, settings.data_dir, settings.storage_warning) == (False, Path("data"), None)
    assert space_environment({}, tmp_path) == {}


def test_a_space_process_without_storage_logs_the_warning_once(tmp_path):
    environment = {**app_environment(tmp_path / "unused", tmp_path), "SPACE_ID": "someone/mascots"}
    del environment["MASCOT_DATA_DIR"]  # the default data folder: ./data in the process's folder (tmp_path)
    log = tmp_path / "app.log"
    command = [sys.executable, str(ROOT / "app.py"), "--model", "tiny", "--port", str(free_port())]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=tmp_path, env=environment, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "Running on" not in log.read_text(errors="replace") and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text(errors="replace")
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=30)
    text = log.read_text(errors="replace")
    assert text.count("This Space has no persistent storage") == 1, text
    assert (tmp_path / "data" / "mascots.db").exists()  # the usual default, in the process's folder
