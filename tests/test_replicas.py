"""Two `python app.py` replicas on one PostgreSQL and one images folder, behind nginx with sticky sessions, run
with docs/nginx-replicas.conf exactly as docs/deploying.md shows it."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from gradio_client import Client

from mascot.store.scratch import postgres_schema
from tests.support.app_process import ROOT, AppProcess, browser_client, free_port, wait_drawing
from tests.support.store import POSTGRES_URL

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
pytestmark = [
    pytest.mark.slow,  # three servers and real generations
    pytest.mark.skipif(not POSTGRES_URL, reason="MASCOT_TEST_POSTGRES_URL is not set (.ci/run starts PostgreSQL)"),
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs Debian's package)"),
]

TEMPLATE = ROOT / "docs" / "nginx-replicas.conf"
COOKIE = "mascot_browser"  # mascot.web.identity.COOKIE_NAME: the name on http
DAILY_QUOTA = 4
BUSY_MACHINE_S = 180  # bounds for what takes seconds on an idle machine and minutes on a loaded one
FAST = {"width": 256, "height": 256, "num_inference_steps": 2, "prior_num_inference_steps": 2}
LONG = {"width": 512, "height": 512, "num_inference_steps": 150, "prior_num_inference_steps": 2}


class Nginx:
    """Debian's nginx in the foreground, with the docs' configuration and its own pid, log and temp paths."""

    def __init__(self, folder: Path, replicas: list[AppProcess]) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        folder.mkdir(parents=True)
        site = TEMPLATE.read_text()
        for placeholder, value in [
            ("__LISTEN__", f"127.0.0.1:{self.port}"),
            ("__REPLICA_A__", f"127.0.0.1:{replicas[0].port}"),
            ("__REPLICA_B__", f"127.0.0.1:{replicas[1].port}"),
        ]:
            assert placeholder in site
            site = site.replace(placeholder, value)
        (folder / "site.conf").write_text(site)
        (folder / "nginx.conf").write_text(self.main_config())
        self.process: subprocess.Popen[bytes] | None = None

    def main_config(self) -> str:
        """The few lines around the docs' file that a root-level nginx.conf would hold."""
        paths = "\n".join(
            f"    {kind}_temp_path {self.folder / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return (
            f"daemon off;\nworker_processes 1;\npid {self.folder / 'nginx.pid'};\n"
            f"error_log {self.folder / 'error.log'} warn;\nevents {{ worker_connections 256; }}\n"
            f"http {{\n    access_log {self.folder / 'access.log'};\n{paths}\n"
            f"    include {self.folder / 'site.conf'};\n}}\n"
        )

    def start(self) -> Nginx:
        command = [str(NGINX), "-p", str(self.folder), "-c", str(self.folder / "nginx.conf")]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr
        self.process = subprocess.Popen(command, stderr=(self.folder / "stderr.log").open("ab"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.folder / "stderr.log").read_text()
            try:
                urllib.request.urlopen(self.url + "healthz", timeout=5).close()
                return self
            except urllib.error.HTTPError:
                return self  # nginx answered (a replica's 503 passed on)
            except OSError:
                time.sleep(0.1)
        raise AssertionError("nginx did not answer within 30 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: nginx's fast shutdown, workers included
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Cluster:
    a: AppProcess
    b: AppProcess
    nginx: Nginx

    def address(self, replica: AppProcess) -> str:
        return f"127.0.0.1:{replica.port}"


def wait_healthy(replica: AppProcess, timeout: float = BUSY_MACHINE_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if get(replica.url + "healthz")[0] == 200:
            return
        time.sleep(0.3)
    raise AssertionError(f"{replica.url} never became healthy\n{replica.log()}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("replicas")
    shared_data = base / "shared-data"  # the one images folder (and the preview model), as on shared storage
    shutil.copytree(tiny_model_dir, shared_data / tiny_model_dir.name)  # built once: the replicas start together
    assert POSTGRES_URL
    with postgres_schema(POSTGRES_URL, prefix="mascot_replicas") as database_url:  # dropped afterwards
        settings = {
            "MASCOT_DATABASE_URL": database_url,
            "MASCOT_DAILY_QUOTA": str(DAILY_QUOTA),
            "MASCOT_ADDRESS_DAILY_QUOTA": "0",  # every test browser comes from 127.0.0.1
            "MASCOT_TRUSTED_PROXIES": "1",  # nginx
            "MASCOT_DRAIN_TIMEOUT_S": str(BUSY_MACHINE_S),
        }
        a, b = (
            AppProcess(shared_data, base / name, environment={**settings, "MASCOT_REPLICA_ID": f"replica-{name}"})
            for name in ("a", "b")
        )
        for replica in (a, b):
            replica.tmp_dir.mkdir()
        nginx = Nginx(base / "nginx", [a, b])
        try:
            with ThreadPoolExecutor(2) as starting:  # together: migrations take an advisory lock
                list(starting.map(AppProcess.start, (a, b)))
            for replica in (a, b):
                wait_healthy(replica)
            nginx.start()
            yield Cluster(a, b, nginx)
        finally:
            nginx.stop()
            for replica in (a, b):
                replica.stop()


def get(url: str, cookie: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET with this browser's cookie: the status, the headers (lower-case names), the body (an error status is an
    answer too)."""
    request = urllib.request.Request(url, headers={"Cookie": f"{COOKIE}={cookie}"} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {name.lower(): value for name, value in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {name.lower(): value for name, value in error.headers.items()}, error.read()


def new_browser(replica: AppProcess) -> str:
    """A new browser's identity cookie, as the replica hands it out on any first answer."""
    _status, headers, _body = get(replica.url + "healthz")
    cookie = SimpleCookie(headers["set-cookie"])
    return cookie[COOKIE].value


def answered_by(cluster: Cluster, cookie: str, path: str = "healthz") -> tuple[int, list[str]]:
    """The status nginx gave this browser for `path`, and the replicas it tried, in order."""
    status, headers, _body = get(cluster.nginx.url + path, cookie)
    return status, [hop.strip() for hop in headers["x-mascot-replica"].split(",")]


def browser_sent_to(cluster: Cluster, replica: AppProcess) -> str:
    """A browser whose cookie nginx's sticky hash sends to `replica`."""
    # Each new cookie lands on either replica (2^-40 that 40 in a row miss one), but only once nginx sends to it again:
    # after a replica was down, nginx skips it for fail_timeout (10 s) and a restarted one answers 503 until its model
    # is loaded. So keep trying, bounded by attempts, not by a guess at how long that takes.
    for attempt in range(600):
        cookie = new_browser(cluster.a)
        if answered_by(cluster, cookie) == (200, [cluster.address(replica)]):
            return cookie
        if attempt >= 40:
            time.sleep(0.5)
    raise AssertionError(f"no browser was sent to {replica.url}")


def wait_until_sent_to(cluster: Cluster, cookie: str, replica: AppProcess) -> None:
    """Wait until nginx sends this browser to `replica` alone (its sticky choice, once back in rotation); bounded by
    attempts, as browser_sent_to is."""
    for _ in range(600):
        if answered_by(cluster, cookie) == (200, [cluster.address(replica)]):
            return
        time.sleep(0.5)
    raise AssertionError(f"nginx never sent the browser back to {replica.url}")


def client(url: str, cookie: str, downloads: Path | None) -> Client:
    """A browser with this cookie, straight to one replica; None: it fetches no pictures (see the 503 test)."""
    fetch = str(downloads) if downloads is not None else False
    return browser_client(url, fetch, cookies={COOKIE: cookie})


def generate(browser: Client, prompt: str, **overrides: object) -> tuple[list[dict], str]:
    return browser.predict(prompt=prompt, **{"seed": 7, **FAST, **overrides}, api_name="/generate")


def listed(browser: Client, api_name: str) -> list[dict]:
    """The mascots (their JSON, as the page's panel gets it) on the first page of /my_mascots or /gallery."""
    _gallery, _page, _label, mascots = browser.predict(api_name=api_name)
    return mascots


def history(browser: Client) -> list[str]:
    """The ideas of this browser's mascots, newest first."""
    return [mascot["prompt"] for mascot in listed(browser, "/my_mascots")]


def test_the_docs_show_the_nginx_configuration_this_test_runs():
    deploying = (ROOT / "docs" / "deploying.md").read_text()
    assert TEMPLATE.read_text() in deploying


def test_a_browsers_history_quota_and_one_job_rule_hold_across_both_replicas(cluster, tmp_path):
    cookie = browser_sent_to(cluster, cluster.a)
    through_nginx = client(cluster.nginx.url, cookie, tmp_path)
    on_a, on_b = (client(replica.url, cookie, tmp_path) for replica in (cluster.a, cluster.b))

    generate(through_nginx, "alice's otter")  # made on replica a, where nginx sends this browser
    assert history(on_a) == history(on_b) == history(through_nginx) == ["alice's otter"]
    assert on_b.predict(api_name="/quota").startswith(f"{DAILY_QUOTA - 1} of {DAILY_QUOTA} mascots left today")

    long_job = through_nginx.submit(prompt="alice's long one", seed=1, **LONG, api_name="/generate")
    wait_drawing(long_job, BUSY_MACHINE_S)
    with pytest.raises(Exception, match="Your previous mascot is still being made"):
        generate(on_b, "alice's second, on the other replica")
    assert through_nginx.predict(api_name="/cancel") == "Cancelling…"  # nginx takes it to the replica drawing it
    assert long_job.result(timeout=BUSY_MACHINE_S)[1].startswith("Cancelled")

    generate(on_b, "alice's three, on replica b", num_images_per_prompt=DAILY_QUOTA - 1)
    with pytest.raises(Exception, match=f"You have made your {DAILY_QUOTA} mascots for today"):
        generate(through_nginx, "one too many")
    assert on_a.predict(api_name="/quota") == on_b.predict(api_name="/quota")
    assert history(through_nginx)[-1] == "alice's otter" and len(history(on_a)) == DAILY_QUOTA


def test_a_mascot_made_on_one_replica_is_served_by_the_other(cluster, tmp_path):
    maker = client(cluster.b.url, new_browser(cluster.b), tmp_path / "maker")
    (made,), _status = generate(maker, "bob's lighthouse", seed=21)
    stranger = client(cluster.a.url, new_browser(cluster.a), tmp_path / "stranger")
    (entry,) = [mascot for mascot in listed(stranger, "/gallery") if mascot["prompt"] == "bob's lighthouse"]
    public_id, image, *_rest = stranger.predict(entry["public_id"], api_name="/mascot")
    assert public_id == entry["public_id"]
    assert Path(image).read_bytes() == Path(made["image"]).read_bytes()  # the same file, read by replica a
    status, headers, body = get(cluster.a.url + f"mascot/{public_id}.png")  # the link preview's picture
    assert status == 200 and headers["content-type"] == "image/png" and body.startswith(b"\x89PNG")


def test_a_replica_killed_mid_job_loses_nothing_saved_and_its_claims_are_freed_on_restart(cluster, tmp_path):
    cookie = browser_sent_to(cluster, cluster.a)
    on_a, on_b = (client(replica.url, cookie, tmp_path) for replica in (cluster.a, cluster.b))
    generate(on_a, "carol's saved kite")
    long_job = on_a.submit(prompt="carol's unfinished one", seed=2, **LONG, api_name="/generate")
    wait_drawing(long_job, BUSY_MACHINE_S)
    assert cluster.a.process is not None
    cluster.a.process.kill()  # SIGKILL: no drain, its claim stays in the database
    cluster.a.process.wait(timeout=30)

    assert history(on_b) == ["carol's saved kite"]
    with pytest.raises(Exception, match="Your previous mascot is still being made"):
        generate(on_b, "carol on replica b while a is dead")
    # Meanwhile nginx sends a's browsers to b: a refuses the connection, b answers.
    assert answered_by(cluster, cookie) == (200, [cluster.address(cluster.a), cluster.address(cluster.b)])
    assert answered_by(cluster, cookie, path="")[0] == 200

    cluster.a.start()  # the same MASCOT_REPLICA_ID: it frees the claims its killed run held
    wait_healthy(cluster.a)
    assert "freed 1 job claims left by this replica's previous run" in cluster.a.log(tail=None)
    generate(on_b, "carol again, at once")
    # nginx skips a for fail_timeout after it failed: until it sends carol to a again, a client's join could reach b
    # and its event stream a ("session not found"; seen once in CI). The balancer's own timer: waited for, not guessed.
    wait_until_sent_to(cluster, cookie, cluster.a)
    assert history(client(cluster.nginx.url, cookie, tmp_path)) == ["carol again, at once", "carol's saved kite"]


def test_a_replica_answering_503_is_skipped_by_the_balancer(cluster, tmp_path):
    cookie = browser_sent_to(cluster, cluster.a)
    # It fetches no pictures from a: a may exit as soon as the answer is sent, and a browser behind the balancer
    # fetches them through the balancer, so from b once a is gone.
    on_a = client(cluster.a.url, cookie, None)
    # LONG's 150 steps: the drain checks below must happen while the job still runs (30 steps once ended first).
    long_job = on_a.submit(prompt="dave's drained one", seed=3, **LONG, api_name="/generate")
    wait_drawing(long_job, BUSY_MACHINE_S)
    assert cluster.a.process is not None
    cluster.a.process.send_signal(signal.SIGTERM)  # a rolling restart: a drains, its /healthz answers 503
    deadline = time.monotonic() + BUSY_MACHINE_S
    while get(cluster.a.url + "healthz")[0] != 503:
        assert time.monotonic() < deadline, "the draining replica never answered 503"
        time.sleep(0.05)

    # nginx passes the 503 on to b, and marks a failed (max_fails=1): for fail_timeout, a's browsers go to b.
    assert answered_by(cluster, cookie) == (200, [cluster.address(cluster.a), cluster.address(cluster.b)])
    assert answered_by(cluster, cookie, path="") == (200, [cluster.address(cluster.b)])
    assert cluster.a.process.poll() is None  # a was still up, draining, all along

    # The drain kept its promise: the job was finished and saved, and b shows it.
    assert "Seed: 3." in long_job.result(timeout=BUSY_MACHINE_S)[1]
    cluster.a.process.wait(timeout=BUSY_MACHINE_S)
    assert history(client(cluster.b.url, cookie, tmp_path)) == ["dave's drained one"]
