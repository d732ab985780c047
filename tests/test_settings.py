"""Settings come from flags, then MASCOT_* variables, then defaults."""

from pathlib import Path

from mascot.settings import Settings, load_settings


def test_defaults_without_flags_or_environment():
    settings = load_settings([], {})
    assert settings == Settings()
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
